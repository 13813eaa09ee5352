package local

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// searchablePATH keeps the directories of path that a process of uid:gid
// with no supplementary groups may search: every directory from / down to
// it lets that user pass. An engine run as another user than the
// executor's must not be given the others: one found there would not
// start, and a program that looks through PATH may fail on the first it
// cannot enter (toil's look for nvidia-smi fails so on a root-only
// directory, and with it the run). The check reads the permission bits,
// not ACLs.
func searchablePATH(path string, uid, gid uint32) (kept string, dropped []string) {
	var keep []string
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			continue
		}
		if searchable(dir, uid, gid) {
			keep = append(keep, dir)
		} else {
			dropped = append(dropped, dir)
		}
	}
	return strings.Join(keep, string(filepath.ListSeparator)), dropped
}

// searchable reports whether uid:gid may pass through dir and every
// directory above it, links resolved.
func searchable(dir string, uid, gid uint32) bool {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil || !filepath.IsAbs(real) {
		return false
	}
	for d := real; ; d = filepath.Dir(d) {
		var st syscall.Stat_t
		if err := syscall.Stat(d, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			return false
		}
		var x uint32 = 0o001 // others
		switch {
		case st.Uid == uid:
			x = 0o100
		case st.Gid == gid:
			x = 0o010
		}
		if st.Mode&x == 0 {
			return false
		}
		if d == string(os.PathSeparator) {
			return true
		}
	}
}

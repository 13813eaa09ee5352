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

// searchable reports whether uid:gid may pass through dir: every
// directory above it as written (a link there is passed through where it
// is), and every directory above what its links lead to.
func searchable(dir string, uid, gid uint32) bool {
	if !filepath.IsAbs(dir) {
		return false
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return false
	}
	return passable(filepath.Clean(dir), uid, gid) && passable(real, uid, gid)
}

// passable reports whether uid:gid may search dir and each directory
// above it, each as stat finds it (a link: what it leads to).
func passable(dir string, uid, gid uint32) bool {
	for d := dir; ; d = filepath.Dir(d) {
		var st syscall.Stat_t
		if err := syscall.Stat(d, &st); err != nil || uint32(st.Mode)&syscall.S_IFMT != syscall.S_IFDIR {
			return false
		}
		var x uint32 = 0o001 // others
		switch {
		case st.Uid == uid:
			x = 0o100
		case st.Gid == gid:
			x = 0o010
		}
		if uint32(st.Mode)&x == 0 {
			return false
		}
		if d == string(os.PathSeparator) {
			return true
		}
	}
}

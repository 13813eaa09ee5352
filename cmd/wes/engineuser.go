package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sync/errgroup"

	"github.com/wes-dev/wes/providers/local"
)

// engineCredential resolves WES_ENGINE_USER (a user name, or uid:gid) to
// the credential engines run with, nil when it is not set. Switching users
// takes root; the engine's user must reach workDir (its run directories
// are given to it, but the directories above them are not).
func engineCredential(spec, workDir string) (*syscall.Credential, error) {
	if spec == "" {
		return nil, nil
	}
	cred, err := lookupCredential(spec)
	if err != nil {
		return nil, fmt.Errorf("WES_ENGINE_USER=%q: %w", spec, err)
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("WES_ENGINE_USER=%q: the executor must run as root to run engines as another user", spec)
	}
	if cred.Uid == 0 {
		return nil, fmt.Errorf("WES_ENGINE_USER=%q is root: name an unprivileged user", spec)
	}
	if err := openWorkDir(workDir, cred); err != nil {
		return nil, fmt.Errorf("WES_ENGINE_USER=%q: %w", spec, err)
	}
	return cred, nil
}

// engineUIDs resolves WES_ENGINE_UIDS ("first-last") to the pool that gives
// each run's engine a user of its own, nil when it is not set. The ids must
// be no account's and no group's (gid = uid: an engine would have their
// rights), nor any user's subordinate ids (which that user may map into a
// user namespace of its own). There must be one for each of the executor's
// slots, and at most maxPoolIDs.
func engineUIDs(spec, workDir string, slots int, dbs idDatabases) (*local.UIDPool, error) {
	if spec == "" {
		return nil, nil
	}
	fail := func(format string, a ...any) error {
		return fmt.Errorf("WES_ENGINE_UIDS=%q: %s", spec, fmt.Sprintf(format, a...))
	}
	f, l, ok := strings.Cut(spec, "-")
	first, err1 := strconv.ParseUint(strings.TrimSpace(f), 10, 32)
	last, err2 := strconv.ParseUint(strings.TrimSpace(l), 10, 32)
	if !ok || err1 != nil || err2 != nil || first == 0 || last < first || last == 1<<32-1 {
		return nil, fail("want first-last, such as 200000-200999 (ids above 0 that no account or group holds)")
	}
	switch n := last - first + 1; {
	case n < uint64(slots):
		return nil, fail("%d ids for %d slots (WES_EXECUTOR_SLOTS): a run holds one while it runs", n, slots)
	case n > maxPoolIDs:
		return nil, fail("%d ids: at most %d (each is checked against the name service at start)", n, maxPoolIDs)
	}
	if err := dbs.check(first, last); err != nil {
		return nil, fail("%v; choose ids no account holds", err)
	}
	if runtime.GOOS != "linux" {
		return nil, fail("engine ids of their own need Linux")
	}
	if os.Geteuid() != 0 {
		return nil, fail("the executor must run as root to run engines as other users")
	}
	if err := openWorkDir(workDir, &syscall.Credential{Uid: uint32(first), Gid: uint32(first)}); err != nil {
		return nil, fail("%v", err)
	}
	return local.NewUIDPool(uint32(first), uint32(last))
}

// maxPoolIDs bounds WES_ENGINE_UIDS: plenty for a host's slots, and few
// enough to ask the name service about each at start.
const maxPoolIDs = 4096

// idDatabases are where a host gives ids to accounts.
type idDatabases struct {
	passwd, group  string // name:x:id:… files
	subuid, subgid string // name:first:count files; absent is empty
	// lookup asks the name service (LDAP, SSSD, systemd's dynamic
	// users: what the files do not list) who holds id, as a user or a
	// group.
	lookup func(id uint32) (string, bool)
}

// hostIDDatabases are this host's.
func hostIDDatabases() idDatabases {
	return idDatabases{passwd: "/etc/passwd", group: "/etc/group", subuid: "/etc/subuid", subgid: "/etc/subgid", lookup: nameServiceHolder}
}

// nameServiceHolder names the user or group of id, through the C library's
// name service where the build has one (else the files again).
func nameServiceHolder(id uint32) (string, bool) {
	if u, err := user.LookupId(strconv.FormatUint(uint64(id), 10)); err == nil {
		return "user " + u.Username, true
	}
	if g, err := user.LookupGroupId(strconv.FormatUint(uint64(id), 10)); err == nil {
		return "group " + g.Name, true
	}
	return "", false
}

// check returns an error naming a holder of an id from first to last.
func (dbs idDatabases) check(first, last uint64) error {
	for _, db := range []struct{ path, what string }{{dbs.passwd, "user"}, {dbs.group, "group"}} {
		name, id, err := firstIDIn(db.path, first, last)
		if err != nil {
			return err
		}
		if name != "" {
			return fmt.Errorf("%s %s (%d, in %s) is in the range: an engine given that id would have its rights", db.what, name, id, db.path)
		}
	}
	for _, path := range []string{dbs.subuid, dbs.subgid} {
		name, from, to, err := firstRangeIn(path, first, last)
		if err != nil {
			return err
		}
		if name != "" {
			return fmt.Errorf("%s's subordinate ids %d-%d (%s) overlap the range: %s may act as them in a user namespace", name, from, to, path, name)
		}
	}
	if dbs.lookup == nil {
		return nil
	}
	// Concurrently: a directory service answers one id at a time.
	var g errgroup.Group
	g.SetLimit(8)
	for id := first; id <= last; id++ {
		g.Go(func() error {
			if holder, ok := dbs.lookup(uint32(id)); ok {
				return fmt.Errorf("%s holds id %d (name service): an engine given that id would have its rights", holder, id)
			}
			return nil
		})
	}
	return g.Wait()
}

// firstIDIn returns the first entry of an /etc/passwd or /etc/group file
// whose id (the third field) is from first to last.
func firstIDIn(path string, first, last uint64) (string, uint64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", 0, err
	}
	for line := range strings.Lines(string(data)) {
		fields := strings.Split(strings.TrimSpace(line), ":")
		if len(fields) < 3 {
			continue
		}
		if id, err := strconv.ParseUint(fields[2], 10, 32); err == nil && id >= first && id <= last {
			return fields[0], id, nil
		}
	}
	return "", 0, nil
}

// firstRangeIn returns the first entry of an /etc/subuid or /etc/subgid
// file (name:first:count) whose ids overlap first to last; a file that is
// not there has none.
func firstRangeIn(path string, first, last uint64) (name string, from, to uint64, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", 0, 0, nil
	}
	if err != nil {
		return "", 0, 0, err
	}
	for line := range strings.Lines(string(data)) {
		fields := strings.Split(strings.TrimSpace(line), ":")
		if len(fields) < 3 {
			continue
		}
		start, err1 := strconv.ParseUint(fields[1], 10, 32)
		count, err2 := strconv.ParseUint(fields[2], 10, 32)
		if err1 != nil || err2 != nil || count == 0 {
			continue
		}
		if end := start + count - 1; start <= last && end >= first {
			return fields[0], start, end, nil
		}
	}
	return "", 0, 0, nil
}

// openWorkDir makes WES_WORK_DIR, the run directories' parent, one others
// may pass through but not list, and checks that cred reaches it.
func openWorkDir(workDir string, cred *syscall.Credential) error {
	if err := os.MkdirAll(workDir, 0o711); err != nil {
		return fmt.Errorf("create WES_WORK_DIR: %w", err)
	}
	if err := os.Chmod(workDir, 0o711); err != nil {
		return fmt.Errorf("WES_WORK_DIR: %w", err)
	}
	probe := exec.Command("/bin/sh", "-c", "cd \"$1\"", "probe", workDir)
	probe.Env = []string{}
	probe.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: cred.Uid, Gid: cred.Gid, Groups: []uint32{}}}
	if out, err := probe.CombinedOutput(); err != nil {
		return fmt.Errorf("the engine's user (uid %d) cannot reach WES_WORK_DIR %s (%v: %s): the directories above it need o+x", cred.Uid, workDir, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// lookupCredential reads "name" (its primary group) or "uid:gid".
func lookupCredential(spec string) (*syscall.Credential, error) {
	if u, g, ok := strings.Cut(spec, ":"); ok {
		uid, err1 := strconv.ParseUint(u, 10, 32)
		gid, err2 := strconv.ParseUint(g, 10, 32)
		if err := errors.Join(err1, err2); err != nil {
			return nil, errors.New("want a user name, or numeric uid:gid")
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	u, err := user.Lookup(spec)
	if err != nil {
		return nil, err
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("user %s has no numeric uid and gid", spec)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

package local

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wes-dev/wes/providers"
)

// The pool gives a run an id no other run holds and no process runs as,
// round from where it left off, and says so when there is none.
func TestUIDPool(t *testing.T) {
	t.Parallel()
	p, err := NewUIDPool(100, 104)
	require.NoError(t, err)
	p.next = 0
	busy := map[uint32]bool{101: true} // a process a workflow left behind
	p.running = func() (map[uint32]bool, error) { return busy, nil }

	var got []uint32
	var releases []func()
	for range 4 {
		cred, release, err := p.acquire()
		require.NoError(t, err)
		require.Equal(t, cred.Uid, cred.Gid, "gid = uid")
		require.Empty(t, cred.Groups, "no supplementary group")
		got = append(got, cred.Uid)
		releases = append(releases, release)
	}
	require.Equal(t, []uint32{100, 102, 103, 104}, got, "one each, and none a process runs as")

	_, _, err = p.acquire()
	require.ErrorIs(t, err, providers.ErrRetryable, "all held: the run is tried again later")
	require.ErrorContains(t, err, "100-104")

	releases[1]() // 102
	releases[1]() // twice is once
	delete(busy, 101)
	cred, _, err := p.acquire()
	require.NoError(t, err)
	require.EqualValues(t, 101, cred.Uid, "round from where it left off: the id freed longest ago comes first")
	cred, _, err = p.acquire()
	require.NoError(t, err)
	require.EqualValues(t, 102, cred.Uid)

	p.running = func() (map[uint32]bool, error) { return nil, errors.New("no /proc") }
	_, _, err = p.acquire()
	require.ErrorIs(t, err, providers.ErrRetryable, "an id is not given out unchecked")

	for _, r := range [][2]uint32{{0, 10}, {10, 9}} {
		_, err := NewUIDPool(r[0], r[1])
		require.Error(t, err, "%v", r)
	}
}

func TestStatusIDs(t *testing.T) {
	t.Parallel()
	// Run from a set-group-ID file: the group's id is in Gid only.
	status := "Name:\tsleep\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t1000\t200001\t1000\t200001\nGid:\t1000\t200002\t200002\t1000\n"
	require.Equal(t, []uint32{1000, 200001, 1000, 200001, 1000, 200002, 200002, 1000}, statusIDs([]byte(status)))
	require.Nil(t, statusIDs([]byte("Name:\tx\n")))
	require.False(t, dead([]byte(status)))
	require.True(t, dead([]byte("Name:\tsleep\nState:\tZ (zombie)\nUid:\t1\t1\t1\t1\n")))
	ids, err := runningIDs()
	require.NoError(t, err)
	require.True(t, ids[uint32(os.Getuid())], "this test's own process is seen")
}

// An engine started by the pool gains nothing from a set-user-ID file: a
// run cannot leave one behind for a later run to act as its id.
func TestPoolEnginesGainNothingFromSetUIDFiles(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: switching users takes root; .ci/run runs as root")
	}
	t.Parallel()
	dir := t.TempDir()
	letEngineUsersThrough(t, dir)
	// What a run of id 65534 could leave in /tmp: its own copy of id(1),
	// set-user-ID and set-group-ID.
	suid := filepath.Join(dir, "id")
	data, err := os.ReadFile("/usr/bin/id")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(suid, data, 0o755))
	require.NoError(t, os.Chown(suid, 65534, 65534))
	require.NoError(t, os.Chmod(suid, 0o755|os.ModeSetuid|os.ModeSetgid))

	p, err := NewUIDPool(200500, 200509)
	require.NoError(t, err)
	run := func(start func(*exec.Cmd) error) string {
		var out bytes.Buffer
		cmd := exec.Command(suid, "-u")
		cmd.Stdout = &out
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 200501, Gid: 200501, Groups: []uint32{}}}
		require.NoError(t, start(cmd))
		require.NoError(t, cmd.Wait())
		return strings.TrimSpace(out.String())
	}
	require.Equal(t, "65534", run((*exec.Cmd).Start), "the control: started as usual, the file makes its runner 65534")
	require.Equal(t, "200501", run(p.start), "started by the pool, it stays who it was")
}

// killAllOf leaves no process of the id, not even one that forks and exits
// over and over to stay out of a look through /proc.
func TestKillAllOfReachesAHoppingProcess(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: switching users takes root; .ci/run runs as root")
	}
	t.Parallel()
	const uid = 200600
	hop := exec.Command("/usr/bin/python3", "-c", `import os, time
while True:
    if os.fork():
        os._exit(0)
    time.sleep(0.001)
`)
	hop.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: &syscall.Credential{Uid: uid, Gid: uid, Groups: []uint32{}}}
	require.NoError(t, hop.Start())
	go hop.Wait() // its first process exits at once
	require.Eventually(t, func() bool { return liveProcessesOf(t, uid) > 0 }, 5*time.Second, 10*time.Millisecond)

	require.NoError(t, killAllOf(uid))
	for range 20 {
		require.Zero(t, liveProcessesOf(t, uid), "a process of the id is left")
		time.Sleep(10 * time.Millisecond)
	}
	require.Error(t, killAllOf(0), "never every process of root")

	// A process of the id it may not signal (the id is its group only):
	// it is said to be left, so that the id is withheld.
	const gid = 200601
	stuck := exec.Command("sleep", "30")
	stuck.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 0, Gid: gid, Groups: []uint32{}}}
	require.NoError(t, stuck.Start())
	defer func() { stuck.Process.Kill(); stuck.Wait() }()
	require.Eventually(t, func() bool { return liveProcessesOf(t, gid) > 0 }, 5*time.Second, 10*time.Millisecond)
	require.ErrorContains(t, killAllOf(gid), "outlive")
}

// liveProcessesOf counts the processes of uid that are not zombies.
func liveProcessesOf(t *testing.T, uid uint32) int {
	t.Helper()
	statuses, err := filepath.Glob("/proc/[0-9]*/status")
	require.NoError(t, err)
	n := 0
	for _, s := range statuses {
		data, err := os.ReadFile(s)
		if err != nil || dead(data) {
			continue
		}
		if slices.Contains(statusIDs(data), uid) {
			n++
		}
	}
	return n
}

// A run's directory that an earlier attempt's engine user still holds (its
// executor crashed) is taken back before the next attempt touches it, and
// that pool id's processes, which could change it meanwhile, are killed.
func TestALeftDirectoryIsTakenBack(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: switching users takes root; .ci/run runs as root")
	}
	t.Parallel()
	const id = 200650
	pool, err := NewUIDPool(id, id+9)
	require.NoError(t, err)
	p := New(Config{PATH: os.Getenv("PATH"), EngineUIDs: pool}, nil)
	dir := filepath.Join(t.TempDir(), "run")
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "work"), 0o750))
	require.NoError(t, chownTree(dir, id, id, false))
	left := exec.Command("sleep", "30")
	left.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: &syscall.Credential{Uid: id, Gid: id, Groups: []uint32{}}}
	require.NoError(t, left.Start())
	exited := make(chan struct{})
	go func() { left.Wait(); close(exited) }()

	require.NoError(t, p.takeBackLeftDir(dir))
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatal("the earlier attempt's process still runs")
	}
	for _, d := range []string{dir, filepath.Join(dir, "work")} {
		var st syscall.Stat_t
		require.NoError(t, syscall.Stat(d, &st))
		require.Zero(t, st.Uid, "%s is root's again", d)
	}
	require.NoError(t, p.takeBackLeftDir(filepath.Join(t.TempDir(), "none")), "no directory yet: nothing to do")
}

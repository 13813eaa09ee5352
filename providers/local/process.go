package local

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/wes-dev/wes/providers"
)

// markerVar is set in every engine's environment; children inherit it, so
// the processes of a run can be found even after they left its process
// group or session (Toil's workers do) or were re-parented.
const markerVar = "WES_RUN_MARKER"

// leader is the engine process of a run, the leader of its process group.
// Its start time (field 22 of /proc/<pid>/stat, in clock ticks since boot)
// tells it apart from a later process that was given the same pid once it
// had been reaped (within one tick, that would take the whole pid space
// being handed out).
type leader struct {
	pid   int
	start string
}

// newLeader identifies the process pid, which the caller started and has not
// reaped: until then its pid cannot name another process.
func newLeader(pid int) leader {
	st, ok := readStat(pid)
	if !ok {
		return leader{pid: pid}
	}
	return leader{pid: pid, start: st.start}
}

// procInfo is what terminate needs of /proc/<pid>/stat.
type procInfo struct {
	state      string
	ppid, pgrp int
	start      string
}

func readStat(pid int) (procInfo, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return procInfo{}, false
	}
	return parseStat(b)
}

// parseStat reads "pid (comm) state ppid pgrp … starttime …"; comm may
// contain spaces and parentheses.
func parseStat(b []byte) (procInfo, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procInfo{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return procInfo{}, false
	}
	ppid, err1 := strconv.Atoi(f[1])
	pgrp, err2 := strconv.Atoi(f[2])
	if err1 != nil || err2 != nil {
		return procInfo{}, false
	}
	return procInfo{state: f[0], ppid: ppid, pgrp: pgrp, start: f[19]}, true
}

// runProcesses returns the pids of the live processes of a run:
//   - every process whose environment carries marker, and every descendant
//     of one;
//   - every member of the process group of such a process (a group with a
//     live member keeps its id, so the group is the run's);
//   - when root is still the process it was (alive or a zombie not yet
//     reaped: both keep its pid and its process group from being reused),
//     root's descendants and the members of its process group.
//
// A process that was reaped is never named by its bare pid: pids and group
// ids are taken only from what /proc shows now, tied to the run by a live
// process that carries the marker or by root's start time. Zombies are left
// out: they are dead already.
func runProcesses(marker string, root leader) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	want := []byte(markerVar + "=" + marker + "\x00")
	self, ownGroup := os.Getpid(), syscall.Getpgrp()
	stats := map[int]procInfo{}
	found := map[int]bool{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		st, ok := readStat(pid)
		if !ok {
			continue
		}
		stats[pid] = st
		if st.state == "Z" {
			continue
		}
		if env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ")); err == nil && bytes.Contains(append(env, 0), want) {
			found[pid] = true
		}
	}
	rootCurrent := false
	if st, ok := stats[root.pid]; ok && root.pid > 0 && root.start != "" && st.start == root.start {
		rootCurrent = true
	}
	groups := map[int]bool{}
	if rootCurrent {
		found[root.pid] = true
		groups[root.pid] = true
	}
	for pid := range found {
		if g := stats[pid].pgrp; g > 0 && g != ownGroup {
			groups[g] = true
		}
	}
	for pid, st := range stats {
		if st.state != "Z" && groups[st.pgrp] && st.pgrp != ownGroup {
			found[pid] = true
		}
	}
	// Descendants, whatever their environment (cwltool runs tools with a
	// clean one).
	for changed := true; changed; {
		changed = false
		for pid, st := range stats {
			if found[pid] || st.state == "Z" {
				continue
			}
			if found[st.ppid] || (rootCurrent && st.ppid == root.pid) {
				found[pid] = true
				changed = true
			}
		}
	}
	delete(found, self)
	pids := make([]int, 0, len(found))
	for pid := range found {
		if stats[pid].state != "Z" {
			pids = append(pids, pid)
		}
	}
	slices.Sort(pids)
	return pids
}

// terminate stops every process of a run: sig to root's process group (only
// while root is the process it was) and to each process runProcesses finds,
// then, after grace, SIGKILL to whatever is left. It returns once no process
// of the run remains, or, when some survive a last round of SIGKILLs, an
// error wrapping providers.ErrSurvivors that names them.
func terminate(root leader, marker string, sig syscall.Signal, grace time.Duration) error {
	_, err := stop(root, marker, sig, grace)
	return err
}

// stop is terminate, and reports whether processes were left after the
// grace period (and were sent SIGKILL).
func stop(root leader, marker string, sig syscall.Signal, grace time.Duration) (forced bool, err error) {
	signalAll := func(s syscall.Signal) int {
		pids := runProcesses(marker, root)
		if slices.Contains(pids, root.pid) {
			// root is alive and is who it was: its group is the run's.
			_ = syscall.Kill(-root.pid, s)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, s)
		}
		return len(pids)
	}
	if signalAll(sig) == 0 {
		return false, nil
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		if len(runProcesses(marker, root)) == 0 {
			return false, nil
		}
	}
	for range 50 {
		if signalAll(syscall.SIGKILL) == 0 {
			return true, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	if left := runProcesses(marker, root); len(left) > 0 {
		return true, fmt.Errorf("%w: %d process(es) of the run survived SIGKILL (pids %v); they may still use the run directory", providers.ErrSurvivors, len(left), left)
	}
	return true, nil
}

// stopEarlierAttempts kills what earlier attempts of a run left running on
// this host: an executor killed or cut off from NATS leaves its engine
// behind, and the next attempt would share the run's directory with it.
// Attempts are numbered by delivery, so the earlier ones are 1 to
// attempt-1.
func stopEarlierAttempts(runID string, attempt int) error {
	for n := 1; n < attempt; n++ {
		if err := terminate(leader{}, fmt.Sprintf("%s.%d", runID, n), syscall.SIGKILL, 0); err != nil {
			return fmt.Errorf("attempt %d of the run left processes on this host: %w", n, err)
		}
	}
	return nil
}

// waitExited blocks until root has exited, without reaping it (waitid with
// WNOWAIT): until the caller waits for it, its pid and its process group
// stay the run's, so that terminate can signal them safely. Should waitid
// fail, it watches /proc instead.
func waitExited(root leader) {
	const pPID = 1     // P_PID
	var info [128]byte // siginfo_t
	for {
		_, _, errno := syscall.Syscall6(syscall.SYS_WAITID, pPID, uintptr(root.pid),
			uintptr(unsafe.Pointer(&info[0])), syscall.WEXITED|syscall.WNOWAIT, 0, 0)
		if errno == 0 {
			return
		}
		if errno != syscall.EINTR {
			break
		}
	}
	for {
		st, ok := readStat(root.pid)
		if !ok || st.start != root.start || st.state == "Z" {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

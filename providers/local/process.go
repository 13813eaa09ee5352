package local

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// markerVar is set in every engine's environment; children inherit it, so
// the processes of a run can be found even after they left its process
// group or session (Toil's workers do) or were re-parented.
const markerVar = "WES_RUN_MARKER"

// runProcesses returns the pids of every live process whose environment
// carries marker, and of every descendant of root.
func runProcesses(marker string, root int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	want := []byte(markerVar + "=" + marker + "\x00")
	parent := map[int]int{}
	found := map[int]bool{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil {
			// pid (comm) state ppid …; comm may contain spaces and parens.
			if i := bytes.LastIndexByte(stat, ')'); i > 0 {
				f := strings.Fields(string(stat[i+1:]))
				if len(f) > 1 {
					if f[0] == "Z" { // zombies are gone already
						continue
					}
					parent[pid], _ = strconv.Atoi(f[1])
				}
			}
		}
		if env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ")); err == nil && bytes.Contains(append(env, 0), want) {
			found[pid] = true
		}
	}
	// Descendants of root, whatever their environment (root <= 0: none;
	// every process descends from pid 0).
	for changed := true; changed; {
		changed = false
		for pid, pp := range parent {
			if !found[pid] && ((root > 0 && pp == root) || found[pp]) && pid != root {
				found[pid] = true
				changed = true
			}
		}
	}
	if _, ok := parent[root]; ok && root > 0 {
		found[root] = true
	}
	pids := make([]int, 0, len(found))
	for pid := range found {
		pids = append(pids, pid)
	}
	return pids
}

// terminate stops every process of a run: sig to the leader's process group
// and to each process found, then, after grace, SIGKILL to whatever is left.
// It returns once no process of the run remains (or after a last SIGKILL
// round that still found survivors, with an error).
func terminate(leader int, marker string, sig syscall.Signal, grace time.Duration) error {
	signalAll := func(s syscall.Signal) int {
		_ = syscall.Kill(-leader, s)
		pids := runProcesses(marker, leader)
		for _, pid := range pids {
			_ = syscall.Kill(pid, s)
		}
		return len(pids)
	}
	if signalAll(sig) == 0 {
		return nil
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		if len(runProcesses(marker, leader)) == 0 {
			return nil
		}
	}
	for range 50 {
		if signalAll(syscall.SIGKILL) == 0 {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := len(runProcesses(marker, leader)); n > 0 {
		return errors.New("processes of the run survived SIGKILL: " + strconv.Itoa(n))
	}
	return nil
}

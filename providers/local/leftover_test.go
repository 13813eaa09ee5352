package local

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wes-dev/wes/providers"
)

// shellProvider returns a provider whose one engine, "sh", runs script.
func shellProvider(cfg Config, script string) *Provider {
	p := New(cfg, nil)
	p.engines = []engine{{
		name: "sh", binary: "sh", versionArgs: []string{"-c", "echo 1.0"}, version: lastVersion,
		types: map[string][]string{"SH": {"1"}}, stop: syscall.SIGTERM,
		argv:    func(bin string, _ *runSpec) []string { return []string{bin, "-c", script} },
		outputs: func(*runSpec, []byte) (json.RawMessage, error) { return json.RawMessage(`{}`), nil },
	}}
	return p
}

// withEnv returns the live processes whose environment holds kv.
func withEnv(kv string) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err == nil && bytes.Contains(append(env, 0), []byte(kv+"\x00")) {
			if state, _, ok := procStat(pid); ok && state != "Z" {
				out = append(out, pid)
			}
		}
	}
	return out
}

// TestRunReturnsWhenALeftoverHoldsTheOutput: an engine that leaves behind a
// process out of terminate's reach (a clean environment, its own session,
// re-parented to init) holding its stdout and stderr must not keep Run
// waiting for ever; the engine's exit status decides the outcome.
func TestRunReturnsWhenALeftoverHoldsTheOutput(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		exit int
	}{
		{"success", 0},
		{"failure", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tag := "WES_TEST_LEFTOVER=" + randomID(t)
			t.Cleanup(func() {
				for _, pid := range withEnv(tag) {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			})
			script := fmt.Sprintf("env -i %s setsid sleep 300 & sleep 0.5; echo done; exit %d", tag, tc.exit)
			p := shellProvider(Config{WaitDelay: time.Second}, script)
			f := newJobFiles(t, "sh", nil, "https://example.org/workflow", `{}`)

			type outcome struct {
				res providers.Result
				err error
			}
			done := make(chan outcome, 1)
			start := time.Now()
			go func() {
				res, err := p.Run(context.Background(), f.job, f.rec)
				done <- outcome{res, err}
			}()
			var o outcome
			select {
			case o = <-done:
			case <-time.After(30 * time.Second):
				t.Fatalf("Run still waits 30s after the engine exited; the leftover holds its output: %v", withEnv(tag))
			}
			require.NoError(t, o.err)
			require.Equal(t, tc.exit, o.res.ExitCode)
			require.Less(t, time.Since(start), 15*time.Second)
			require.Contains(t, f.stdout.String(), "done")
			require.NotEmpty(t, withEnv(tag), "the leftover was meant to outlive the run; the test proves nothing")
			if tc.exit == 0 {
				require.NotEmpty(t, o.res.SystemLogs, "the run's system logs must say its output was cut short")
			}
		})
	}
}

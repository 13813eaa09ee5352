package executor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wes-dev/wes/models"
	"github.com/wes-dev/wes/providers"
)

// A retry stages its inputs and opens its logs anew: the directory was the
// engine user's, and its workflow may have made inputs, or a log, a link to
// the host's files, which root would then write to and read from.
func TestARetryStagesItsInputsAnew(t *testing.T) {
	t.Parallel()
	f := setup(t)
	dir, victim := t.TempDir(), t.TempDir()
	shadow := filepath.Join(t.TempDir(), "shadow")
	require.NoError(t, os.WriteFile(shadow, []byte("root:secret\n"), 0o600))
	linkSeen := make(chan bool, 2)
	p := &testProvider{run: func(_ context.Context, job providers.Job, r providers.Reporter) (providers.Result, error) {
		inputs := filepath.Join(job.Dir, "inputs")
		fi, err := os.Lstat(inputs)
		if err != nil {
			return providers.Result{}, err
		}
		linkSeen <- fi.Mode()&os.ModeSymlink != 0
		if job.Attempt == 1 {
			// The workflow, as the engine's user, swaps inputs for a link.
			if err := os.RemoveAll(inputs); err != nil {
				return providers.Result{}, err
			}
			if err := os.Symlink(victim, inputs); err != nil {
				return providers.Result{}, err
			}
			// And its log for a link to a file root may write.
			if err := os.Remove(filepath.Join(job.Dir, "stdout.log")); err != nil {
				return providers.Result{}, err
			}
			if err := os.Symlink(shadow, filepath.Join(job.Dir, "stdout.log")); err != nil {
				return providers.Result{}, err
			}
			return providers.Result{ExitCode: 1}, nil
		}
		fmt.Fprintln(job.Stdout, "attempt 2's output")
		return providers.Result{}, nil
	}}
	f.start(t, Config{AckWait: 5 * time.Second, WorkDir: dir, RetryFailures: true, MaxAttempts: 2}, p)
	runID := f.submit(t)
	f.waitState(t, runID, models.Complete, 30*time.Second)
	require.False(t, <-linkSeen, "attempt 1")
	require.False(t, <-linkSeen, "attempt 2 found the link attempt 1 left")
	got, err := os.ReadFile(shadow)
	require.NoError(t, err)
	require.Equal(t, "root:secret\n", string(got), "attempt 2's log was written through the link attempt 1 left")
}

package executor

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wes-dev/wes/models"
	"github.com/wes-dev/wes/providers"
)

// A retry stages its inputs anew: the directory was the engine user's, and
// its workflow may have made inputs a link to the host's files, which root
// would then write attachments to and read workflows from.
func TestARetryStagesItsInputsAnew(t *testing.T) {
	t.Parallel()
	f := setup(t)
	dir, victim := t.TempDir(), t.TempDir()
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
			return providers.Result{ExitCode: 1}, nil
		}
		return providers.Result{}, nil
	}}
	f.start(t, Config{AckWait: 5 * time.Second, WorkDir: dir, RetryFailures: true, MaxAttempts: 2}, p)
	runID := f.submit(t)
	f.waitState(t, runID, models.Complete, 30*time.Second)
	require.False(t, <-linkSeen, "attempt 1")
	require.False(t, <-linkSeen, "attempt 2 found the link attempt 1 left")
}

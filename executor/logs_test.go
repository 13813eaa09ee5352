package executor

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// The run's directory belongs to the engine's user while the engine runs
// (WES_ENGINE_USER): it may swap stdout.log for a link. The executor, as
// root, must not ship what the link names as the run's log.
func TestALogSnapshotIsReadThroughItsHandle(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	secret := filepath.Join(t.TempDir(), "shadow")
	require.NoError(t, os.WriteFile(secret, []byte("root:$6$secret-hash:19000:0:99999:7:::\n"), 0o600))
	logs, err := openLogs(dir)
	require.NoError(t, err)
	defer logs[0].Close()
	_, err = logs[0].Write(make([]byte, 64)) // the engine prints 64 bytes
	require.NoError(t, err)
	// the engine's user, owner of dir:
	require.NoError(t, os.Rename(filepath.Join(dir, "stdout.log"), filepath.Join(dir, "x")))
	require.NoError(t, os.Symlink(secret, filepath.Join(dir, "stdout.log")))

	r, size, ok := logs[0].snapshot()
	require.True(t, ok)
	got, _ := io.ReadAll(io.NewSectionReader(r, 0, size))
	require.NotContains(t, string(got), "secret-hash", "the log shipped is another file's content")
	require.Equal(t, make([]byte, 64), got, "what the engine wrote")
}

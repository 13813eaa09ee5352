package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestEngineCredential(t *testing.T) {
	t.Parallel()
	cred, err := engineCredential("", t.TempDir())
	require.NoError(t, err)
	require.Nil(t, cred, "no engine user: engines run as the executor's")

	for _, tc := range []struct {
		spec, want string
	}{
		{"root", "is root"},
		{"0:0", "is root"},
		{"no-such-user-here", "no-such-user-here"},
		{"12:ab", "uid:gid"},
	} {
		_, err := engineCredential(tc.spec, t.TempDir())
		require.ErrorContains(t, err, tc.want, tc.spec)
		require.ErrorContains(t, err, "WES_ENGINE_USER", tc.spec)
	}
	if os.Geteuid() != 0 {
		return // the rest switches users
	}
	work := filepath.Join(t.TempDir(), "runs")
	for d := filepath.Dir(work); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		require.NoError(t, os.Chmod(d, 0o711)) // t.TempDir's are 0700
	}
	cred, err = engineCredential("nobody", work)
	require.NoError(t, err)
	require.EqualValues(t, 65534, cred.Uid)
	fi, err := os.Stat(work)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o711), fi.Mode().Perm(), "the engine's user passes through the work directory")

	hidden := filepath.Join(t.TempDir(), "private", "runs") // below a 0700 directory
	require.NoError(t, os.MkdirAll(hidden, 0o700))
	require.NoError(t, os.Chmod(filepath.Dir(hidden), 0o700))
	_, err = engineCredential("65534:65534", hidden)
	require.ErrorContains(t, err, "cannot reach WES_WORK_DIR")
}

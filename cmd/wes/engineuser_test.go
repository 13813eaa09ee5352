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
	letEngineUsersThrough(t, filepath.Dir(work))
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

func TestEngineUIDs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	passwd, group := filepath.Join(dir, "passwd"), filepath.Join(dir, "group")
	require.NoError(t, os.WriteFile(passwd, []byte("root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\nada:x:1000:1000::/home/ada:/bin/sh\n"), 0o644))
	require.NoError(t, os.WriteFile(group, []byte("root:x:0:\nsudo:x:27:ada\ndocker:x:999:ada\nnogroup:x:65534:\n"), 0o644))
	subuid := filepath.Join(dir, "subuid")
	require.NoError(t, os.WriteFile(subuid, []byte("ada:100000:65536\n"), 0o644))
	dbs := idDatabases{passwd: passwd, group: group, subuid: subuid, subgid: filepath.Join(dir, "no-subgid"),
		lookup: func(id uint32) (string, bool) { return "user ldap-bob", id == 300123 }}
	pool, err := engineUIDs("", dir, 4, dbs)
	require.NoError(t, err)
	require.Nil(t, pool, "not set: no pool")
	for _, tc := range []struct {
		spec, want string
	}{
		{"200000", "want first-last"},
		{"200000-199999", "want first-last"},
		{"0-10", "want first-last"},
		{"a-b", "want first-last"},
		{"200000-4294967295", "want first-last"},
		{"200000-200002", "3 ids for 4 slots"},
		{"900-1100", "user ada (1000"},
		{"990-999", "group docker (999"}, // gid = uid: an engine would be in the docker group
		{"20-30", "group sudo (27"},
		{"165000-166000", "ada's subordinate ids 100000-165535"}, // ada may map them into a namespace
		{"300000-300999", "user ldap-bob holds id 300123 (name service)"},
		{"300000-305000", "at most 4096"},
	} {
		_, err := engineUIDs(tc.spec, filepath.Join(dir, "runs"), 4, dbs)
		require.ErrorContains(t, err, tc.want, tc.spec)
		require.ErrorContains(t, err, "WES_ENGINE_UIDS", tc.spec)
	}
	if os.Geteuid() != 0 {
		return // the rest switches users
	}
	work := filepath.Join(t.TempDir(), "runs")
	letEngineUsersThrough(t, filepath.Dir(work))
	pool, err = engineUIDs("200000-200099", work, 4, dbs)
	require.NoError(t, err)
	require.NotNil(t, pool)
	hidden := filepath.Join(t.TempDir(), "private", "runs") // below a 0700 directory
	require.NoError(t, os.MkdirAll(hidden, 0o700))
	require.NoError(t, os.Chmod(filepath.Dir(hidden), 0o700))
	_, err = engineUIDs("200000-200099", hidden, 4, dbs)
	require.ErrorContains(t, err, "cannot reach WES_WORK_DIR")
}

// letEngineUsersThrough makes dir and the directories above it, up to the
// system's temporary directory, ones every user may pass through (t.TempDir's
// are 0700), as an operator's WES_WORK_DIR must be for engines run as
// other users.
func letEngineUsersThrough(t *testing.T, dir string) {
	t.Helper()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		require.NoError(t, os.Chmod(d, 0o711))
	}
}

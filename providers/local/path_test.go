package local

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The engines' PATH keeps only the directories their user may enter, all
// the way down.
func TestSearchablePATH(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	letEngineUsersThrough(t, base)
	mk := func(name string, mode os.FileMode) string {
		d := filepath.Join(base, name)
		require.NoError(t, os.MkdirAll(d, 0o755))
		require.NoError(t, os.Chmod(d, mode))
		return d
	}
	const uid = 65534 // not the test's: it is "others", or the group
	gid := uint32(os.Getgid())
	open := mk("open", 0o755)
	private := mk("private", 0o700)
	below := filepath.Join(private, "bin")
	require.NoError(t, os.Mkdir(below, 0o755))
	group := mk("group", 0o710) // the test's group, which the engine's user is given here
	link := filepath.Join(base, "link")
	require.NoError(t, os.Symlink(private, link))
	// A link inside a directory it cannot enter, to one it can.
	hidden := filepath.Join(private, "usr-bin")
	require.NoError(t, os.Symlink("/usr/bin", hidden))

	path := strings.Join([]string{open, private, below, group, link, hidden, filepath.Join(base, "missing"), "relative", "", "/usr/bin"}, ":")
	kept, dropped := searchablePATH(path, uid, gid)
	require.Equal(t, open+":"+group+":/usr/bin", kept)
	require.Equal(t, []string{private, below, link, hidden, filepath.Join(base, "missing"), "relative"}, dropped,
		"a directory it cannot enter, one below it, a link to it, a link in it, one that is not there, one not absolute")

	kept, dropped = searchablePATH(path, uid, gid+1)
	require.NotContains(t, strings.Split(kept, ":"), group, "group bits are for the group")
	require.Contains(t, dropped, group)
}

package local

import (
	"errors"
	"os"
	"testing"

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

func TestStatusUIDs(t *testing.T) {
	t.Parallel()
	status := "Name:\tsleep\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t1000\t200001\t1000\t200001\nGid:\t1000\t1000\t1000\t1000\n"
	require.Equal(t, []uint32{1000, 200001, 1000, 200001}, statusUIDs([]byte(status)))
	require.Nil(t, statusUIDs([]byte("Name:\tx\n")))
	ids, err := runningUIDs()
	require.NoError(t, err)
	require.True(t, ids[uint32(os.Getuid())], "this test's own process is seen")
}

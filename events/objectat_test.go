package events_test

import (
	"bytes"
	"context"
	"io"
	"testing"
	"testing/iotest"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/wes-dev/wes/events"
	"github.com/wes-dev/wes/events/eventstest"
)

// Reading an object from an offset returns its bytes from there, whether
// its chunks are all of one size (PutObject) or not (nats.go's Put from a
// reader that returns short reads).
func TestOpenObjectAt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	bus, _ := eventstest.Bus(t, "OBJAT", events.Config{})
	data := make([]byte, 300_000)
	for i := range data {
		data[i] = byte(i*7 + i/1000)
	}
	even, err := bus.PutObject(ctx, "even", bytes.NewReader(data), events.PutOptions{ChunkSize: 64 << 10})
	require.NoError(t, err)
	_, err = bus.Objects.Put(ctx, jetstream.ObjectMeta{Name: "uneven", Opts: &jetstream.ObjectMetaOptions{ChunkSize: 50_000}}, iotest.HalfReader(bytes.NewReader(data)))
	require.NoError(t, err)
	uneven, err := bus.Objects.GetInfo(ctx, "uneven")
	require.NoError(t, err)
	require.Greater(t, uneven.Chunks, even.Chunks, "short reads make more, smaller chunks")

	for _, info := range []*jetstream.ObjectInfo{even, uneven} {
		for _, off := range []int64{0, 1, 65535, 65536, 70_000, 299_999, 300_000, 400_000} {
			r, err := bus.OpenObjectAt(ctx, info, off)
			require.NoError(t, err, "%s at %d", info.Name, off)
			got, err := io.ReadAll(r)
			require.NoError(t, err, "%s at %d", info.Name, off)
			require.NoError(t, r.Close())
			want := data[min(off, int64(len(data))):]
			require.True(t, bytes.Equal(want, got), "%s at %d: %d bytes, want %d", info.Name, off, len(got), len(want))
		}
	}
}

// BenchmarkObjectTail reads the last bytes of a 64 MiB object: from the
// chunk that holds them (OpenObjectAt), and as the API did before, the
// whole object with what precedes them thrown away.
func BenchmarkObjectTail(b *testing.B) {
	ctx := context.Background()
	bus, _ := eventstest.Bus(b, "OBJTAIL", events.Config{})
	const size = 64 << 20
	_, err := bus.Objects.Put(ctx, jetstream.ObjectMeta{Name: "big"}, bytes.NewReader(make([]byte, size)))
	require.NoError(b, err)
	info, err := bus.Objects.GetInfo(ctx, "big")
	require.NoError(b, err)
	b.Run("from-the-chunk", func(b *testing.B) {
		for b.Loop() {
			r, err := bus.OpenObjectAt(ctx, info, size-2)
			require.NoError(b, err)
			got, err := io.ReadAll(r)
			require.NoError(b, err)
			require.Len(b, got, 2)
			r.Close()
		}
	})
	b.Run("whole-object", func(b *testing.B) {
		for b.Loop() {
			r, err := bus.Objects.Get(ctx, "big")
			require.NoError(b, err)
			_, err = io.CopyN(io.Discard, r, size-2)
			require.NoError(b, err)
			got, err := io.ReadAll(r)
			require.NoError(b, err)
			require.Len(b, got, 2)
			r.Close()
		}
	})
}

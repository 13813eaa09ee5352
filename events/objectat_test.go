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

package events_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
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

// An object whose first chunk expired while its info, stored again later
// (an append's), still counts it, is not read: the chunks left are not
// passed off as its first bytes, from 0 or from an offset. A reader that
// finds the object stored anew reads the new one.
func TestAnObjectWhoseChunksExpiredIsNotRead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const retention = 2 * time.Second
	bus, nc := eventstest.Bus(t, "OBJEXP", events.Config{ObjectRetention: retention})
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	bucket := bus.Names.ObjectsBucket()
	stream, err := js.Stream(ctx, "OBJ_"+bucket)
	require.NoError(t, err)
	require.Equal(t, retention, stream.CachedInfo().Config.MaxAge)

	// The object as a log appended to makes it: a first chunk, and later
	// two more and an info that counts the three.
	info := &jetstream.ObjectInfo{ObjectMeta: jetstream.ObjectMeta{Name: "log"}, Bucket: bucket, NUID: nuid.Next()}
	chunks := fmt.Sprintf("$O.%s.C.%s", bucket, info.NUID)
	digest := sha256.New()
	put := func(chunk string) {
		t.Helper()
		_, err := js.Publish(ctx, chunks, []byte(chunk))
		require.NoError(t, err)
		digest.Write([]byte(chunk))
		info.Size += uint64(len(chunk))
		info.Chunks++
	}
	put("AAAA")
	time.Sleep(retention * 3 / 4)
	put("BBBB")
	put("CCCC")
	info.Digest = "SHA-256=" + base64.URLEncoding.EncodeToString(digest.Sum(nil))
	data, err := json.Marshal(info)
	require.NoError(t, err)
	_, err = js.Publish(ctx, fmt.Sprintf("$O.%s.M.%s", bucket, base64.URLEncoding.EncodeToString([]byte("log"))), data)
	require.NoError(t, err)

	require.Eventually(t, func() bool {
		si, err := stream.Info(ctx, jetstream.WithSubjectFilter(chunks))
		return err == nil && si.State.Subjects[chunks] == 2
	}, 2*retention, 20*time.Millisecond, "the first chunk expires")
	stored, err := bus.Objects.GetInfo(ctx, "log")
	require.NoError(t, err, "the info, younger, is still there")
	require.EqualValues(t, 3, stored.Chunks)
	for _, off := range []int64{0, 2, 4, 9} {
		r, err := bus.OpenObjectAt(ctx, stored, off)
		require.ErrorIs(t, err, events.ErrChunksMissing, "at %d", off)
		require.ErrorIs(t, err, io.ErrUnexpectedEOF, "at %d: what a reader of a replaced object is told", off)
		require.ErrorContains(t, err, "expired")
		require.Nil(t, r)
	}
	_, replaced := bus.Replaced(ctx, stored)
	require.False(t, replaced, "the object is not replaced: it is broken")

	// Stored anew meanwhile (the log's next copy): the new object is read.
	_, err = bus.PutObject(ctx, "log", strings.NewReader("AAAABBBBCCCCDD"), events.PutOptions{ChunkSize: 4})
	require.NoError(t, err)
	now, replaced := bus.Replaced(ctx, stored)
	require.True(t, replaced)
	for _, off := range []int64{0, 6} {
		r, err := bus.OpenObjectAt(ctx, now, off)
		require.NoError(t, err)
		got, err := io.ReadAll(r)
		require.NoError(t, err)
		require.NoError(t, r.Close())
		require.Equal(t, "AAAABBBBCCCCDD"[off:], string(got))
	}
}

// Chunks that go after a reader was opened (expired, or deleted as here)
// fail the read where they were, before any byte of the chunks after them
// is returned in their place.
func TestChunksGoneAfterOpeningAreNoticed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	bus, nc := eventstest.Bus(t, "OBJGONE", events.Config{})
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	stream, err := js.Stream(ctx, "OBJ_"+bus.Names.ObjectsBucket())
	require.NoError(t, err)
	// Ten chunks: more than a fetch brings.
	const data = "0000111122223333444455556666777788889999"
	put := func(name string) (*jetstream.ObjectInfo, []uint64) {
		t.Helper()
		info, err := bus.PutObject(ctx, name, strings.NewReader(data), events.PutOptions{ChunkSize: 4})
		require.NoError(t, err)
		cons, err := js.OrderedConsumer(ctx, "OBJ_"+bus.Names.ObjectsBucket(), jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{fmt.Sprintf("$O.%s.C.%s", info.Bucket, info.NUID)}})
		require.NoError(t, err)
		var seqs []uint64
		for range info.Chunks {
			msg, err := cons.Next()
			require.NoError(t, err)
			meta, err := msg.Metadata()
			require.NoError(t, err)
			seqs = append(seqs, meta.Sequence.Stream)
		}
		return info, seqs
	}

	t.Run("the first chunk, from 0", func(t *testing.T) {
		info, seqs := put("first")
		r, err := bus.OpenObjectAt(ctx, info, 0)
		require.NoError(t, err)
		defer r.Close()
		require.NoError(t, stream.DeleteMsg(ctx, seqs[0]))
		got, err := io.ReadAll(r)
		require.ErrorIs(t, err, events.ErrChunksMissing)
		require.Empty(t, got)
	})

	t.Run("the chunk an offset is in", func(t *testing.T) {
		info, seqs := put("offset")
		r, err := bus.OpenObjectAt(ctx, info, 13)
		require.NoError(t, err)
		defer r.Close()
		require.NoError(t, stream.DeleteMsg(ctx, seqs[3]))
		got, err := io.ReadAll(r)
		require.ErrorIs(t, err, events.ErrChunksMissing)
		require.Empty(t, got)
	})

	t.Run("a chunk past the first fetch", func(t *testing.T) {
		info, seqs := put("later")
		r, err := bus.OpenObjectAt(ctx, info, 0)
		require.NoError(t, err)
		defer r.Close()
		first := make([]byte, 4)
		_, err = io.ReadFull(r, first)
		require.NoError(t, err)
		require.NoError(t, stream.DeleteMsg(ctx, seqs[8]))
		rest, err := io.ReadAll(r)
		require.ErrorIs(t, err, events.ErrChunksMissing)
		require.Equal(t, data[:32], string(first)+string(rest), "what the first fetch brought, and nothing of what follows the chunk gone")
	})
}

package events_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/wes-dev/wes/events"
	"github.com/wes-dev/wes/events/eventstest"
)

// TestPutObjectIsReadAsAnyObject: what PutObject writes, nats.go's object
// store reads (Get checks the digest), whatever the size against the chunk
// size; a replaced object's chunks are purged, whoever wrote it.
func TestPutObjectIsReadAsAnyObject(t *testing.T) {
	f := setup(t)
	stream, chunksOf, infosOf := objectsStream(t, f.ctx, f.js, f.names.ObjectsBucket())
	for _, tc := range []struct {
		size, chunk int
		wantChunks  uint32
	}{
		{size: 0, chunk: 4, wantChunks: 0},
		{size: 3, chunk: 4, wantChunks: 1},
		{size: 4, chunk: 4, wantChunks: 1},
		{size: 5, chunk: 4, wantChunks: 2},
		{size: 14, chunk: 4, wantChunks: 4},
		{size: 1000, chunk: 0, wantChunks: 1},
	} {
		t.Run(fmt.Sprintf("%d bytes in chunks of %d", tc.size, tc.chunk), func(t *testing.T) {
			name := fmt.Sprintf("runs/r/logs/%d-%d", tc.size, tc.chunk)
			data := bytes.Repeat([]byte("0123456789"), tc.size/10+1)[:tc.size]
			info, err := f.bus.PutObject(f.ctx, name, bytes.NewReader(data), events.PutOptions{ChunkSize: tc.chunk})
			require.NoError(t, err)
			require.Equal(t, tc.wantChunks, info.Chunks)
			got, err := f.bus.Objects.GetBytes(f.ctx, name)
			require.NoError(t, err)
			require.Equal(t, data, got)
			stored, err := f.bus.Objects.GetInfo(f.ctx, name)
			require.NoError(t, err)
			require.EqualValues(t, tc.size, stored.Size)
			require.Equal(t, info.Digest, stored.Digest)
		})
	}

	t.Run("replacing", func(t *testing.T) {
		first, err := f.bus.Objects.PutBytes(f.ctx, "runs/r/logs/stdout", []byte("by nats.go"))
		require.NoError(t, err)
		second, err := f.bus.PutObject(f.ctx, "runs/r/logs/stdout", bytes.NewReader([]byte("by us, longer")), events.PutOptions{ChunkSize: 4})
		require.NoError(t, err)
		require.Zero(t, chunksOf(first.NUID), "the replaced object's chunks are purged")
		require.EqualValues(t, 4, chunksOf(second.NUID))
		third, err := f.bus.PutObject(f.ctx, "runs/r/logs/stdout", bytes.NewReader([]byte("again")), events.PutOptions{})
		require.NoError(t, err)
		require.Zero(t, chunksOf(second.NUID))
		got, err := f.bus.Objects.GetString(f.ctx, "runs/r/logs/stdout")
		require.NoError(t, err)
		require.Equal(t, "again", got)
		require.EqualValues(t, 1, chunksOf(third.NUID))

		// A writer that knows what the name holds is not looked up: the
		// chunks it names go, and only they.
		fourth, err := f.bus.PutObject(f.ctx, "runs/r/logs/stdout", bytes.NewReader([]byte("known")),
			events.PutOptions{Known: true, Current: third})
		require.NoError(t, err)
		require.Zero(t, chunksOf(third.NUID))
		fifth, err := f.bus.PutObject(f.ctx, "runs/r/logs/stdout", bytes.NewReader([]byte("fresh, it thought")),
			events.PutOptions{Known: true})
		require.NoError(t, err)
		require.EqualValues(t, 1, chunksOf(fourth.NUID), "a writer wrong about what the name holds leaves its chunks")
		require.EqualValues(t, 2, infosOf("runs/r/logs/stdout"), "and the info it replaced (a new name's info rolls nothing up)")
		got, err = f.bus.Objects.GetString(f.ctx, "runs/r/logs/stdout")
		require.NoError(t, err)
		require.Equal(t, "fresh, it thought", got, "but the object is what it wrote")
		list, err := f.bus.Objects.List(f.ctx)
		require.NoError(t, err)
		var listed []string
		for _, o := range list {
			if o.Name == "runs/r/logs/stdout" {
				listed = append(listed, o.Digest)
			}
		}
		require.Equal(t, []string{fifth.Digest}, listed, "and it is listed once, as what it wrote")
		_, err = f.bus.PutObject(f.ctx, "runs/r/logs/stdout", bytes.NewReader([]byte("known again")),
			events.PutOptions{Known: true, Current: fifth})
		require.NoError(t, err)
		require.EqualValues(t, 1, infosOf("runs/r/logs/stdout"), "a put over a known object rolls up the infos before it")
	})

	t.Run("a reader that fails leaves nothing", func(t *testing.T) {
		before, err := stream.Info(f.ctx)
		require.NoError(t, err)
		r := io.MultiReader(bytes.NewReader(make([]byte, 10)), errReader{})
		_, err = f.bus.PutObject(f.ctx, "runs/r/logs/broken", r, events.PutOptions{ChunkSize: 4})
		require.ErrorIs(t, err, errBroken)
		_, err = f.bus.Objects.GetInfo(f.ctx, "runs/r/logs/broken")
		require.ErrorIs(t, err, jetstream.ErrObjectNotFound)
		after, err := stream.Info(f.ctx)
		require.NoError(t, err)
		require.Equal(t, before.State.Msgs, after.State.Msgs, "the chunks stored before the failure are purged")

		// A reader cut short is not a reader that ended.
		r = io.MultiReader(bytes.NewReader(make([]byte, 6)), cutShort{})
		_, err = f.bus.PutObject(f.ctx, "runs/r/logs/cut", r, events.PutOptions{ChunkSize: 4})
		require.ErrorIs(t, err, io.ErrUnexpectedEOF)
		_, err = f.bus.Objects.GetInfo(f.ctx, "runs/r/logs/cut")
		require.ErrorIs(t, err, jetstream.ErrObjectNotFound)
	})
}

// objectsStream returns the objects stream of bucket and counters of what
// it holds: the chunks of an object (by its NUID), and the infos stored
// under a name.
func objectsStream(t *testing.T, ctx context.Context, js jetstream.JetStream, bucket string) (stream jetstream.Stream, chunksOf func(nuid string) uint64, infosOf func(name string) uint64) {
	t.Helper()
	stream, err := js.Stream(ctx, "OBJ_"+bucket)
	require.NoError(t, err)
	chunksOf = func(nuid string) uint64 {
		t.Helper()
		subject := fmt.Sprintf("$O.%s.C.%s", bucket, nuid)
		info, err := stream.Info(ctx, jetstream.WithSubjectFilter(subject))
		require.NoError(t, err)
		return info.State.Subjects[subject]
	}
	infosOf = func(name string) uint64 {
		t.Helper()
		subject := fmt.Sprintf("$O.%s.M.%s", bucket, base64.URLEncoding.EncodeToString([]byte(name)))
		info, err := stream.Info(ctx, jetstream.WithSubjectFilter(subject))
		require.NoError(t, err)
		return info.State.Subjects[subject]
	}
	return stream, chunksOf, infosOf
}

// TestAGrowingObjectIsAppendedTo: a log stored again as it grows keeps its
// chunks and gains the new bytes' only; a reader of what it was reads that,
// digest and all; and it is stored whole again when it must be: after
// another writer's put, a failed append, when it shrank, and when appends
// made too many chunks.
func TestAGrowingObjectIsAppendedTo(t *testing.T) {
	t.Parallel()
	f := setup(t)
	stream, chunksOf, infosOf := objectsStream(t, f.ctx, f.js, f.names.ObjectsBucket())
	const name = "runs/g/logs/stdout"
	var log []byte
	g := f.bus.GrowingObject(name, true)
	store := func(r io.ReaderAt) error { return g.Store(f.ctx, r, int64(len(log))) }
	grow := func(s string) {
		t.Helper()
		log = append(log, s...)
		require.NoError(t, store(bytes.NewReader(log)))
	}
	infoNow := func() *jetstream.ObjectInfo {
		t.Helper()
		info, err := f.bus.Objects.GetInfo(f.ctx, name)
		require.NoError(t, err)
		return info
	}
	read := func(info *jetstream.ObjectInfo, off int64) string {
		t.Helper()
		r, err := f.bus.OpenObjectAt(f.ctx, info, off)
		require.NoError(t, err)
		defer r.Close()
		got, err := io.ReadAll(r)
		require.NoError(t, err, "digest checked from 0")
		return string(got)
	}

	grow("first line\n")
	first := infoNow()
	require.EqualValues(t, 1, first.Chunks)
	grow("second line\n")
	second := infoNow()
	require.Equal(t, first.NUID, second.NUID, "appended to, not stored anew")
	require.EqualValues(t, 2, second.Chunks)
	require.EqualValues(t, 2, chunksOf(second.NUID))
	require.EqualValues(t, 1, infosOf(name), "the info before is rolled up")
	require.Equal(t, string(log), read(second, 0))
	require.Equal(t, "second line\n", read(second, int64(first.Size)))
	require.Equal(t, "first line\n", read(first, 0), "a reader of the object as it was reads what it was")
	size, ok := g.Stored()
	require.True(t, ok)
	require.EqualValues(t, len(log), size)

	// Without a retention, the last copy appends as any other.
	log = append(log, "last line\n"...)
	require.NoError(t, g.StoreLast(f.ctx, bytes.NewReader(log), int64(len(log))))
	last := infoNow()
	require.Equal(t, first.NUID, last.NUID, "appended to, not stored anew")
	require.EqualValues(t, 3, last.Chunks)

	before, err := stream.Info(f.ctx)
	require.NoError(t, err)
	require.NoError(t, store(bytes.NewReader(log)))
	after, err := stream.Info(f.ctx)
	require.NoError(t, err)
	require.Equal(t, before.State.LastSeq, after.State.LastSeq, "an object that did not grow is not stored")
	got, err := f.bus.Objects.GetBytes(f.ctx, name)
	require.NoError(t, err, "done growing, nats.go reads it as any object, digest and all")
	require.Equal(t, log, got)

	t.Run("another writer's put is kept, then stored over whole", func(t *testing.T) {
		other, err := f.bus.PutObject(f.ctx, name, strings.NewReader("another writer's"), events.PutOptions{})
		require.NoError(t, err)
		log = append(log, "third line\n"...)
		require.Error(t, store(bytes.NewReader(log)), "the name's info is not the one appended to")
		got, err := f.bus.Objects.GetString(f.ctx, name)
		require.NoError(t, err)
		require.Equal(t, "another writer's", got)
		_, ok := g.Stored()
		require.False(t, ok)

		require.NoError(t, store(bytes.NewReader(log)))
		now := infoNow()
		require.NotEqual(t, other.NUID, now.NUID)
		require.Zero(t, chunksOf(other.NUID), "the object replaced is purged")
		require.Equal(t, string(log), read(now, 0))
	})

	t.Run("a failed append is not appended to", func(t *testing.T) {
		was := infoNow()
		log = append(log, bytes.Repeat([]byte("y"), events.DefaultChunkSize+1000)...)
		// The first chunk of the append is stored, then the reader fails.
		require.ErrorIs(t, store(failAfter{bytes.NewReader(log), int64(was.Size) + events.DefaultChunkSize}), errBroken)
		require.Equal(t, was.Size, infoNow().Size, "the object is what it was")
		require.Greater(t, chunksOf(was.NUID), uint64(was.Chunks), "with a stray chunk past its size")
		require.Equal(t, string(log[:was.Size]), read(was, 0))

		require.NoError(t, store(bytes.NewReader(log)))
		now := infoNow()
		require.NotEqual(t, was.NUID, now.NUID, "stored whole")
		require.Zero(t, chunksOf(was.NUID), "the stray chunk is purged with the rest")
		require.Equal(t, string(log), read(now, 0))
	})

	t.Run("a log that shrank is stored anew", func(t *testing.T) {
		was := infoNow()
		log = log[:5]
		require.NoError(t, store(bytes.NewReader(log)))
		now := infoNow()
		require.NotEqual(t, was.NUID, now.NUID)
		require.Zero(t, chunksOf(was.NUID))
		require.Equal(t, string(log), read(now, 0))
	})

	t.Run("appends make a bounded number of chunks", func(t *testing.T) {
		nuids := map[string]bool{}
		for range 200 {
			grow("x")
			now := infoNow()
			nuids[now.NUID] = true
			require.LessOrEqual(t, now.Chunks, uint32(2+64), "twice what the object needs, and 64")
			require.EqualValues(t, now.Chunks, chunksOf(now.NUID))
		}
		// From one chunk, 65 appends reach the bound, and the 66th stores
		// it whole, in one: 3 times in 200, beside the object grown from.
		require.Len(t, nuids, 1+3, "stored whole each time the chunks reach the bound")
		require.Equal(t, string(log), read(infoNow(), 0))
	})

	t.Run("a writer that does not know the name looks it up", func(t *testing.T) {
		was := infoNow()
		log = []byte("attempt 2\n")
		g = f.bus.GrowingObject(name, false)
		require.NoError(t, store(bytes.NewReader(log)))
		now := infoNow()
		require.Zero(t, chunksOf(was.NUID), "what it replaced is purged")
		require.EqualValues(t, 1, infosOf(name))
		require.Equal(t, string(log), read(now, 0))
	})
}

// TestAGrowingObjectOutlivesNoneOfItsChunks: in an object store with a
// retention, which drops each chunk at its own age, a growing log is stored
// whole again before its first chunks are half that old (whether it grew
// since or was appended to and did not), and at its last copy if it was
// appended to: read past the age of its first chunks, it is whole.
func TestAGrowingObjectOutlivesNoneOfItsChunks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const retention = 3 * time.Second
	bus, nc := eventstest.Bus(t, "GROWEXP", events.Config{ObjectRetention: retention})
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, chunksOf, _ := objectsStream(t, ctx, js, bus.Names.ObjectsBucket())
	type log struct {
		name  string
		g     *events.GrowingObject
		bytes []byte
	}
	infoOf := func(l *log) *jetstream.ObjectInfo {
		t.Helper()
		info, err := bus.Objects.GetInfo(ctx, l.name)
		require.NoError(t, err)
		return info
	}
	store := func(l *log, grow string) *jetstream.ObjectInfo {
		t.Helper()
		l.bytes = append(l.bytes, grow...)
		require.NoError(t, l.g.Store(ctx, bytes.NewReader(l.bytes), int64(len(l.bytes))))
		return infoOf(l)
	}
	storeLast := func(l *log) *jetstream.ObjectInfo {
		t.Helper()
		require.NoError(t, l.g.StoreLast(ctx, bytes.NewReader(l.bytes), int64(len(l.bytes))))
		return infoOf(l)
	}
	read := func(l *log, off int64) string {
		t.Helper()
		r, err := bus.OpenObjectAt(ctx, infoOf(l), off)
		require.NoError(t, err, "%s at %d", l.name, off)
		defer r.Close()
		got, err := io.ReadAll(r)
		require.NoError(t, err, "%s at %d", l.name, off)
		return string(got)
	}
	// a is appended to, then does not grow; b does not grow, then does.
	a := &log{name: "runs/a/logs/stdout", g: bus.GrowingObject("runs/a/logs/stdout", true)}
	b := &log{name: "runs/b/logs/stdout", g: bus.GrowingObject("runs/b/logs/stdout", true)}
	a1, b1 := store(a, "a, first line\n"), store(b, "b, first line\n")
	firstStored := time.Now()
	// Stored after the logs' first chunks: gone, it says they are too.
	marker, err := bus.PutObject(ctx, "marker", strings.NewReader("m"), events.PutOptions{})
	require.NoError(t, err)

	a2 := store(a, "a, second line\n")
	require.Equal(t, a1.NUID, a2.NUID, "appended to while its first chunk is young")
	require.EqualValues(t, 2, a2.Chunks)

	time.Sleep(retention/2 + 100*time.Millisecond - time.Since(firstStored))
	a3 := store(a, "")
	require.NotEqual(t, a2.NUID, a3.NUID, "appended to, and its first chunk half the retention old: stored whole")
	require.EqualValues(t, 1, a3.Chunks)
	require.Zero(t, chunksOf(a2.NUID))
	b2 := store(b, "b, second line\n")
	require.NotEqual(t, b1.NUID, b2.NUID, "grown, its first chunk half the retention old: stored whole, not appended to")
	require.EqualValues(t, 1, b2.Chunks)

	a4 := store(a, "a, third line\n")
	require.Equal(t, a3.NUID, a4.NUID, "stored whole, appended to again")
	a5 := storeLast(a)
	require.NotEqual(t, a4.NUID, a5.NUID, "appended to: stored whole at the last copy")
	require.EqualValues(t, 1, a5.Chunks)
	require.Zero(t, chunksOf(a4.NUID))
	require.Equal(t, a5.NUID, storeLast(a).NUID, "stored whole since: not again")
	require.Equal(t, b2.NUID, storeLast(b).NUID, "not appended to since it was stored whole: not again")

	require.Eventually(t, func() bool { return chunksOf(marker.NUID) == 0 }, 2*retention, 20*time.Millisecond)
	require.Equal(t, string(a.bytes), read(a, 0), "past its first chunks' age")
	require.Equal(t, string(a.bytes[20:]), read(a, 20))
	require.Equal(t, string(b.bytes), read(b, 0))
}

// failAfter reads r up to n, and fails past it.
type failAfter struct {
	r io.ReaderAt
	n int64
}

func (f failAfter) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.n {
		return 0, errBroken
	}
	return f.r.ReadAt(p, off)
}

var errBroken = errors.New("broken reader")

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errBroken }

type cutShort struct{}

func (cutShort) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }

// BenchmarkGrowingLog: a running run's log that grows to 8 MiB, 64 KiB
// between two copies (128 copies), stored whole at every copy as before
// GrowingObject, and appended to.
func BenchmarkGrowingLog(b *testing.B) {
	ctx := context.Background()
	bus, _ := eventstest.Bus(b, "GROWLOG", events.Config{})
	const size, step = 8 << 20, 64 << 10
	log := bytes.Repeat([]byte("a line of a chatty engine's log\n"), size/32)
	b.Run("whole", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			name := fmt.Sprintf("whole-%d", i)
			var cur *jetstream.ObjectInfo
			for n := step; n <= size; n += step {
				info, err := bus.PutObject(ctx, name, bytes.NewReader(log[:n]), events.PutOptions{
					ChunkSize: min(n, events.DefaultChunkSize), Known: true, Current: cur,
				})
				require.NoError(b, err)
				cur = info
			}
		}
	})
	b.Run("appended", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			g := bus.GrowingObject(fmt.Sprintf("appended-%d", i), true)
			for n := step; n <= size; n += step {
				require.NoError(b, g.Store(ctx, bytes.NewReader(log), int64(n)))
			}
		}
	})
}

package events_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/wes-dev/wes/events"
)

// TestPutObjectIsReadAsAnyObject: what PutObject writes, nats.go's object
// store reads (Get checks the digest), whatever the size against the chunk
// size; a replaced object's chunks are purged, whoever wrote it.
func TestPutObjectIsReadAsAnyObject(t *testing.T) {
	f := setup(t)
	stream, err := f.js.Stream(f.ctx, "OBJ_"+f.names.ObjectsBucket())
	require.NoError(t, err)
	chunksOf := func(nuid string) uint64 {
		info, err := stream.Info(f.ctx, jetstream.WithSubjectFilter(fmt.Sprintf("$O.%s.C.%s", f.names.ObjectsBucket(), nuid)))
		require.NoError(t, err)
		var n uint64
		for _, c := range info.State.Subjects {
			n += c
		}
		return n
	}
	infosOf := func(name string) uint64 {
		subject := fmt.Sprintf("$O.%s.M.%s", f.names.ObjectsBucket(), base64.URLEncoding.EncodeToString([]byte(name)))
		info, err := stream.Info(f.ctx, jetstream.WithSubjectFilter(subject))
		require.NoError(t, err)
		return info.State.Subjects[subject]
	}
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

var errBroken = errors.New("broken reader")

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errBroken }

type cutShort struct{}

func (cutShort) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }

package events

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// OpenObjectAt returns a reader of object info from byte off to its end.
// It reads only the chunks from the one that holds off: past 0 the chunks
// before it are walked by their headers (each carries its size), not
// read, so that a Range near the end of a large output, or the new part
// of a followed log, costs what it returns rather than the whole object.
// A read from 0 to the end checks the object's digest. An object that
// grows (GrowingObject) is read as info found it. The object put again
// whole meanwhile purges the chunks being read: the read then fails with
// io.ErrUnexpectedEOF, and the caller may open the new object (Replaced
// says how to tell).
//
// Chunks that info counts but the store no longer has (expired past the
// objects stream's MaxAge, which drops each chunk at its own age, or
// purged) fail the open, or the read that would have reached them, with
// ErrChunksMissing (an io.ErrUnexpectedEOF): the chunks that remain are
// never passed off as the object's first bytes. (The check counts chunks:
// chunks appended after an info, to an object whose first ones expired,
// would make up for them. GrowingObject does not append to an object whose
// oldest chunks are half the retention old; a read from 0 still checks the
// digest at the end.)
func (b *Bus) OpenObjectAt(ctx context.Context, info *jetstream.ObjectInfo, off int64) (io.ReadCloser, error) {
	off = max(off, 0)
	left := int64(info.Size) - off
	if left <= 0 {
		return io.NopCloser(eofReader{}), nil
	}
	stream := "OBJ_" + info.Bucket
	subject := fmt.Sprintf("$O.%s.C.%s", info.Bucket, info.NUID)
	cfg := jetstream.ConsumerConfig{
		FilterSubject: subject, DeliverPolicy: jetstream.DeliverAllPolicy, AckPolicy: jetstream.AckNonePolicy,
		// A slow reader (a paused download) keeps it for a while between
		// two fetches; one that died leaves it for no longer.
		InactiveThreshold: readerIdle,
		MemoryStorage:     true, Replicas: 1,
	}
	r := &chunkReader{ctx: ctx, b: b, name: info.Name, stream: stream, left: left, need: uint64(info.Chunks), want: info.Digest}
	if off > 0 {
		at, err := b.chunkAt(ctx, stream, subject, info, off)
		if err != nil {
			return nil, err
		}
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, at.seq
		r.skip, r.first, r.need = at.skip, at.seq, uint64(info.Chunks)-at.index
	} else {
		r.digest = sha256.New()
	}
	cons, err := b.JS.CreateConsumer(ctx, stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("read object %s: %w", info.Name, err)
	}
	r.cons = cons
	// What the consumer has to deliver is every chunk there is from the
	// first one wanted: fewer than info counts from there, and some are
	// gone (appends since the info only add to it).
	if pending := cons.CachedInfo().NumPending; pending < r.need {
		b.dropConsumer(stream, cons)
		return nil, missingChunks(info.Name, r.need-pending, r.need)
	}
	return r, nil
}

// ErrChunksMissing says that chunks an object's info counts are gone: the
// object outlived the object store's retention (its chunks expire each at
// its own age, and its info, stored last, after them), or it was put again
// and its chunks purged (Replaced tells). It is an io.ErrUnexpectedEOF.
var ErrChunksMissing = fmt.Errorf("object chunks missing (expired past the object store's retention, or purged): %w", io.ErrUnexpectedEOF)

func missingChunks(name string, missing, of uint64) error {
	return fmt.Errorf("read object %s: %w: %d of the %d chunks wanted are gone", name, ErrChunksMissing, missing, of)
}

// Replaced reports whether the object read as info was put again since
// (its name now names other chunks): a read of it that failed may be
// tried again on the new one.
func (b *Bus) Replaced(ctx context.Context, info *jetstream.ObjectInfo) (*jetstream.ObjectInfo, bool) {
	now, err := b.Objects.GetInfo(ctx, info.Name)
	if err != nil || now.NUID == info.NUID {
		return nil, false
	}
	return now, true
}

// chunkPos is where a chunk of an object is: its stream sequence, its
// index among the object's chunks (from 0), and where the byte looked for
// is in it.
type chunkPos struct {
	seq, index uint64
	skip       int64
}

// chunkAt returns where the chunk on subject that holds byte off of the
// object of info is. It walks the chunks as the store has them, and fails
// with ErrChunksMissing when chunks that info counts are gone, before the
// walk (an offset would be counted from the wrong chunk) or during it.
func (b *Bus) chunkAt(ctx context.Context, stream, subject string, info *jetstream.ObjectInfo, off int64) (chunkPos, error) {
	cons, err := b.JS.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
		FilterSubject: subject, DeliverPolicy: jetstream.DeliverAllPolicy, HeadersOnly: true,
		AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: time.Minute, MemoryStorage: true, Replicas: 1,
	})
	if err != nil {
		return chunkPos{}, fmt.Errorf("walk the object's chunks: %w", err)
	}
	defer b.dropConsumer(stream, cons)
	chunks := uint64(info.Chunks)
	pending := cons.CachedInfo().NumPending
	if pending < chunks {
		return chunkPos{}, missingChunks(info.Name, chunks-pending, chunks)
	}
	var at int64
	for read := uint64(0); read < pending; {
		batch, err := cons.Fetch(int(min(pending-read, 1024)), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return chunkPos{}, fmt.Errorf("walk the object's chunks: %w", err)
		}
		got := uint64(0)
		for msg := range batch.Messages() {
			got++
			size, err := strconv.ParseInt(msg.Headers().Get(nats.MsgSize), 10, 64)
			meta, merr := msg.Metadata()
			if err != nil || merr != nil {
				return chunkPos{}, fmt.Errorf("walk the object's chunks: a chunk without its size or metadata")
			}
			// The chunks after this one that info counts must all be
			// left: one that expired meanwhile shifts every offset.
			if index := read + got - 1; index < chunks && meta.NumPending < chunks-index-1 {
				return chunkPos{}, missingChunks(info.Name, chunks-index-1-meta.NumPending, chunks)
			}
			if at+size > off {
				return chunkPos{seq: meta.Sequence.Stream, index: read + got - 1, skip: off - at}, nil
			}
			at += size
		}
		if got == 0 {
			break
		}
		read += got
	}
	return chunkPos{}, fmt.Errorf("walk the object's chunks: %w (offset %d past the %d bytes stored)", io.ErrUnexpectedEOF, off, at)
}

func (b *Bus) dropConsumer(stream string, cons jetstream.Consumer) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = b.JS.DeleteConsumer(ctx, stream, cons.CachedInfo().Name)
}

// chunkReader reads chunks in order, from a consumer that starts at the
// chunk holding the first byte wanted, a few chunks per fetch.
type chunkReader struct {
	ctx     context.Context
	b       *Bus
	name    string
	stream  string
	cons    jetstream.Consumer
	skip    int64  // of the first chunk
	first   uint64 // the first chunk's stream sequence (0: any), until read
	need    uint64 // chunks the info counts still to read
	left    int64  // bytes still to return
	buf     []byte // what is left of the current chunk
	fetched []jetstream.Msg
	digest  hash.Hash // of everything, when read from 0
	want    string    // the object's digest
}

// readerIdle is how long a reader of an object may leave its consumer
// idle between two fetches before the server removes it.
const readerIdle = 10 * time.Minute

// chunksPerFetch bounds what one fetch brings (1 MiB of 128 KiB chunks).
const chunksPerFetch = 8

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.left <= 0 {
			if r.digest != nil && r.want != "" {
				if got := "SHA-256=" + base64.URLEncoding.EncodeToString(r.digest.Sum(nil)); got != r.want {
					return 0, fmt.Errorf("read object: %w", jetstream.ErrDigestMismatch)
				}
				r.digest = nil
			}
			return 0, io.EOF
		}
		if len(r.fetched) == 0 {
			if err := r.fetch(); err != nil {
				return 0, err
			}
		}
		msg := r.fetched[0]
		r.fetched = r.fetched[1:]
		if err := r.check(msg); err != nil {
			return 0, err
		}
		data := msg.Data()
		if r.skip > 0 {
			data = data[min(r.skip, int64(len(data))):]
			r.skip = 0
		}
		r.buf = data[:min(int64(len(data)), r.left)]
		if r.digest != nil {
			r.digest.Write(r.buf)
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	r.left -= int64(n)
	return n, nil
}

// check fails, before msg's bytes are returned, if msg is not the chunk
// wanted next: chunks the info counts expired (or were purged) after the
// reader was opened, and the consumer skipped them. The first chunk of a
// read past 0 is the one chunkAt found; every chunk must leave at least as
// many after it as the info counts (its delivery says how many are left).
func (r *chunkReader) check(msg jetstream.Msg) error {
	meta, err := msg.Metadata()
	if err != nil {
		return fmt.Errorf("read object %s: %w", r.name, err)
	}
	if r.first != 0 {
		first := r.first
		r.first = 0
		if meta.Sequence.Stream != first {
			return fmt.Errorf("read object %s: %w: the chunk at sequence %d is gone", r.name, ErrChunksMissing, first)
		}
	}
	if r.need > 0 {
		r.need--
		if meta.NumPending < r.need {
			return missingChunks(r.name, r.need-meta.NumPending, r.need+1)
		}
	}
	return nil
}

func (r *chunkReader) fetch() error {
	// The chunks are stored already: what the consumer has now is all
	// there is, and a fetch need not wait for a full batch.
	batch, err := r.cons.FetchNoWait(chunksPerFetch)
	if err != nil {
		return fmt.Errorf("read object chunks: %w", err)
	}
	for msg := range batch.Messages() {
		r.fetched = append(r.fetched, msg)
	}
	if err := r.ctx.Err(); err != nil {
		return err
	}
	if len(r.fetched) == 0 {
		// The chunks are gone (the object was put again and its old
		// chunks purged), or the server did not answer in time.
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("read object chunks: %w", err)
		}
		return fmt.Errorf("read object chunks: %w", io.ErrUnexpectedEOF)
	}
	return nil
}

func (r *chunkReader) Close() error {
	r.b.dropConsumer(r.stream, r.cons)
	return nil
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

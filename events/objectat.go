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
	var skip int64
	var digest hash.Hash
	if off > 0 {
		seq, s, err := b.chunkAt(ctx, stream, subject, off)
		if err != nil {
			return nil, err
		}
		cfg.DeliverPolicy, cfg.OptStartSeq, skip = jetstream.DeliverByStartSequencePolicy, seq, s
	} else {
		digest = sha256.New()
	}
	cons, err := b.JS.CreateConsumer(ctx, stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("read object %s: %w", info.Name, err)
	}
	return &chunkReader{ctx: ctx, b: b, stream: stream, cons: cons, skip: skip, left: left, digest: digest, want: info.Digest}, nil
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

// chunkAt returns the stream sequence of the chunk on subject that holds
// byte off, and where off is in it.
func (b *Bus) chunkAt(ctx context.Context, stream, subject string, off int64) (seq uint64, skip int64, err error) {
	cons, err := b.JS.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
		FilterSubject: subject, DeliverPolicy: jetstream.DeliverAllPolicy, HeadersOnly: true,
		AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: time.Minute, MemoryStorage: true, Replicas: 1,
	})
	if err != nil {
		return 0, 0, fmt.Errorf("walk the object's chunks: %w", err)
	}
	defer b.dropConsumer(stream, cons)
	pending := cons.CachedInfo().NumPending
	var at int64
	for read := uint64(0); read < pending; {
		batch, err := cons.Fetch(int(min(pending-read, 1024)), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return 0, 0, fmt.Errorf("walk the object's chunks: %w", err)
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			size, err := strconv.ParseInt(msg.Headers().Get(nats.MsgSize), 10, 64)
			meta, merr := msg.Metadata()
			if err != nil || merr != nil {
				return 0, 0, fmt.Errorf("walk the object's chunks: a chunk without its size or metadata")
			}
			if at+size > off {
				return meta.Sequence.Stream, off - at, nil
			}
			at += size
		}
		if got == 0 {
			break
		}
		read += uint64(got)
	}
	return 0, 0, fmt.Errorf("walk the object's chunks: %w (offset %d past the %d bytes stored)", io.ErrUnexpectedEOF, off, at)
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
	stream  string
	cons    jetstream.Consumer
	skip    int64  // of the first chunk
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
		data := r.fetched[0].Data()
		r.fetched = r.fetched[1:]
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

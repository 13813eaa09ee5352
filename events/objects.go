package events

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// DefaultChunkSize is the object store's default chunk size (nats.go's).
const DefaultChunkSize = 128 << 10

// TransferTimeout bounds the read or the write of an object of size bytes:
// a minute, and a second more for every 256 KiB. nats.go bounds an object
// read whose context has no deadline by its default timeout, 5 s, from the
// start of the read: a large object, or a reader slower than the store,
// would be cut there.
func TransferTimeout(size uint64) time.Duration {
	return time.Minute + time.Duration(size/(256<<10))*time.Second
}

// PutOptions say how PutObject stores an object.
type PutOptions struct {
	// ChunkSize bounds a chunk (DefaultChunkSize if 0). One buffer of
	// this size is allocated for the put.
	ChunkSize int
	// Known says that Current is what the name holds now, as its caller
	// knows it (nil for nothing: a first put of a name no one else
	// writes): PutObject then does not look the object up (a request to
	// the server) to find the chunks it replaces, and a nil Current
	// stores the object's info without a rollup. A Current that is wrong
	// leaves the replaced object's chunks behind, unreachable (and, if it
	// is nil, the replaced info, superseded): space, not wrong data.
	Known   bool
	Current *jetstream.ObjectInfo
}

// PutObject stores what r holds as object name of the Objects bucket,
// replacing any object of that name. It writes what
// jetstream.ObjectStore.Put writes (the object store layout of NATS
// ADR-20: the chunks on $O.<bucket>.C.<nuid>, then the object's info,
// rolled up, on $O.<bucket>.M.<base64url(name)>, then the replaced
// object's chunks purged), so that ObjectStore.Get, GetInfo, Watch and
// Delete work on it as on any object.
//
// It is not Put because Put creates a JetStream context, and with it a
// reply subscription, for every object: the server then adds and removes a
// subscription per object, which with two logs per run took a third of
// its CPU. PutObject publishes through the bus's shared JetStream context,
// one chunk at a time (each acknowledged before the next): it is for small
// objects, such as logs; Put pipelines the chunks of a large one.
func (b *Bus) PutObject(ctx context.Context, name string, r io.Reader, opts PutOptions) (*jetstream.ObjectInfo, error) {
	if name == "" {
		return nil, jetstream.ErrBadObjectMeta
	}
	chunkSize := opts.ChunkSize
	if chunkSize <= 0 {
		chunkSize = DefaultChunkSize
	}
	old := opts.Current
	if !opts.Known {
		var err error
		old, err = b.Objects.GetInfo(ctx, name, jetstream.GetObjectInfoShowDeleted())
		if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			return nil, fmt.Errorf("look up object %s: %w", name, err)
		}
	}
	bucket := b.Names.ObjectsBucket()
	info := &jetstream.ObjectInfo{
		ObjectMeta: jetstream.ObjectMeta{Name: name, Opts: &jetstream.ObjectMetaOptions{ChunkSize: uint32(chunkSize)}},
		Bucket:     bucket,
		NUID:       nuid.Next(),
	}
	chunkSubj := fmt.Sprintf("$O.%s.C.%s", bucket, info.NUID)
	// fail removes the chunks stored so far: no half-written object is
	// left behind.
	fail := func(err error) (*jetstream.ObjectInfo, error) {
		b.purgeObjectChunks(chunkSubj)
		return nil, fmt.Errorf("store object %s: %w", name, err)
	}
	// One buffer, each chunk acknowledged before the next is read into
	// it: a small object costs one allocation of its size, a large one a
	// round trip per chunk.
	chunk := make([]byte, chunkSize)
	h := sha256.New()
	for {
		n, err := readChunk(r, chunk)
		if n > 0 {
			h.Write(chunk[:n])
			if _, perr := b.JS.PublishMsg(ctx, &nats.Msg{Subject: chunkSubj, Data: chunk[:n]}); perr != nil {
				return fail(perr)
			}
			info.Size += uint64(n)
			info.Chunks++
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fail(err)
		}
	}
	// The info goes once every chunk is stored: a reader that finds it
	// finds the chunks.
	info.Digest = "SHA-256=" + base64.URLEncoding.EncodeToString(h.Sum(nil))
	data, err := json.Marshal(info)
	if err != nil {
		return fail(err)
	}
	meta := nats.NewMsg(fmt.Sprintf("$O.%s.M.%s", bucket, base64.URLEncoding.EncodeToString([]byte(name))))
	// The rollup removes the info this one replaces. A name its caller
	// knows to be new has none, and a rollup is not free: the server
	// (2.9) purges the subject by scanning the per-subject state of every
	// block of the stream, for each put: a cost that grows with the
	// bucket (about a quarter of the server's CPU in our profiles).
	if !opts.Known || opts.Current != nil {
		meta.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	}
	meta.Data = data
	if _, err := b.JS.PublishMsg(ctx, meta); err != nil {
		// The info may have been stored all the same (its ack lost): its
		// chunks stay, and are orphans if it was not (the objects stream
		// has no age limit; they cost space until the bucket is purged).
		return nil, fmt.Errorf("store object %s: %w", name, err)
	}
	if old != nil && !old.Deleted {
		b.purgeObjectChunks(fmt.Sprintf("$O.%s.C.%s", bucket, old.NUID))
	}
	return info, nil
}

// readChunk fills chunk from r as far as r goes. It returns io.EOF, and
// only then, once r has ended; any other error of r's, io.ErrUnexpectedEOF
// included, is a failure (a reader cut short must not pass for the end).
func readChunk(r io.Reader, chunk []byte) (int, error) {
	n := 0
	for n < len(chunk) {
		m, err := r.Read(chunk[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// purgeTimeout bounds the purge of an object's chunks.
const purgeTimeout = 5 * time.Second

// purgeObjectChunks removes the chunks on subject, best effort: chunks
// left behind cost space, not correctness.
func (b *Bus) purgeObjectChunks(subject string) {
	ctx, cancel := context.WithTimeout(context.Background(), purgeTimeout)
	defer cancel()
	_ = b.objectsStream.Purge(ctx, jetstream.WithPurgeSubject(subject))
}

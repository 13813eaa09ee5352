package events

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
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
	st, err := b.putObject(ctx, name, r, opts)
	if err != nil {
		return nil, err
	}
	return st.info, nil
}

// stored is what a put stored: the object's info, the digest of its bytes
// so far (a hash that may take more), and the stream sequence of its info.
type stored struct {
	info    *jetstream.ObjectInfo
	digest  hash.Hash
	infoSeq uint64
}

func (b *Bus) putObject(ctx context.Context, name string, r io.Reader, opts PutOptions) (*stored, error) {
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
	st := &stored{
		info: &jetstream.ObjectInfo{
			ObjectMeta: jetstream.ObjectMeta{Name: name, Opts: &jetstream.ObjectMetaOptions{ChunkSize: uint32(chunkSize)}},
			Bucket:     b.Names.ObjectsBucket(),
			NUID:       nuid.Next(),
		},
		digest: sha256.New(),
	}
	if err := b.putChunks(ctx, st, r, chunkSize); err != nil {
		// No half-written object is left behind.
		b.purgeObjectChunks(b.chunksSubject(st.info))
		return nil, fmt.Errorf("store object %s: %w", name, err)
	}
	// The rollup removes the info this one replaces. A name its caller
	// knows to be new has none, and a rollup is not free: the server
	// (2.9) purges the subject by scanning the per-subject state of every
	// block of the stream, for each put: a cost that grows with the
	// bucket (about a quarter of the server's CPU in our profiles).
	rollup := !opts.Known || opts.Current != nil
	if err := b.putInfo(ctx, st, rollup); err != nil {
		// The info may have been stored all the same (its ack lost): its
		// chunks stay, and are orphans if it was not (the objects stream
		// has no age limit; they cost space until the bucket is purged).
		return nil, fmt.Errorf("store object %s: %w", name, err)
	}
	if old != nil && !old.Deleted {
		b.purgeObjectChunks(b.chunksSubject(old))
	}
	return st, nil
}

func (b *Bus) chunksSubject(info *jetstream.ObjectInfo) string {
	return fmt.Sprintf("$O.%s.C.%s", info.Bucket, info.NUID)
}

// putChunks stores what r holds as chunks of st's object, after those it
// has, chunkSize bytes at most each, and counts them into st.
func (b *Bus) putChunks(ctx context.Context, st *stored, r io.Reader, chunkSize int) error {
	subject := b.chunksSubject(st.info)
	// One buffer, each chunk acknowledged before the next is read into
	// it: a small object costs one allocation of its size, a large one a
	// round trip per chunk.
	chunk := make([]byte, chunkSize)
	for {
		n, err := readChunk(r, chunk)
		if n > 0 {
			st.digest.Write(chunk[:n])
			if _, perr := b.JS.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: chunk[:n]}); perr != nil {
				return perr
			}
			st.info.Size += uint64(n)
			st.info.Chunks++
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// putInfo stores st's info, once every chunk it counts is stored (a reader
// that finds it finds them), replacing the name's earlier infos if rollup.
// A non-zero st.infoSeq stores it only if the info stored last under the
// name is still the one at that sequence.
func (b *Bus) putInfo(ctx context.Context, st *stored, rollup bool) error {
	st.info.Digest = "SHA-256=" + base64.URLEncoding.EncodeToString(st.digest.Sum(nil))
	data, err := json.Marshal(st.info)
	if err != nil {
		return err
	}
	msg := nats.NewMsg(fmt.Sprintf("$O.%s.M.%s", st.info.Bucket, base64.URLEncoding.EncodeToString([]byte(st.info.Name))))
	if rollup {
		msg.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	}
	msg.Data = data
	var opts []jetstream.PublishOpt
	if st.infoSeq != 0 {
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(st.infoSeq))
	}
	ack, err := b.JS.PublishMsg(ctx, msg, opts...)
	if err != nil {
		return err
	}
	st.infoSeq = ack.Sequence
	return nil
}

// A GrowingObject is an object that its one writer stores again and again
// as it grows: a running run's log. Its first Store stores it whole; a
// later one stores only the bytes past those stored last, as more chunks of
// the same object and a new info, so that a log stored every few seconds
// costs what it grew by each time, not its size. A reader of the object as
// it was reads on undisturbed if it reads no further than the size its
// info gave, as OpenObjectAt does: the chunks it reads stay. (nats.go's
// Get reads every chunk there is: while the object grows it would take in
// the new ones and fail the digest.)
//
// Store stores the object whole again (a new object of the name, the old
// chunks purged) when it does not know what the name holds (at first,
// unless told, and after a failure, which may have left chunks past the
// stored size), when the object shrank, and when appends have made it many
// more chunks than its size needs (maxChunks), so that a walk of its
// chunks stays short.
//
// An object store with a retention (the objects stream's MaxAge) drops
// each chunk at its own age, while the info, stored again at each append,
// stays fresh: appended to for long enough, an object's info would count
// chunks that are gone. So, when the stream has a MaxAge, Store stores the
// object whole again once the last whole store (its oldest chunks) is
// older than half of it (retentionRewrite), even if it did not grow, as
// long as something was appended since; and StoreLast, the last copy,
// stores it whole if anything was appended since the last whole store, so
// that an object done growing has all its chunks, and its info, from one
// store: they expire together, at the retention after its last version.
// (What is stored whole at once still expires a little before its info,
// stored last, as any object of the store does; OpenObjectAt notices.)
//
// An append's info is stored only if the name's info is still the one this
// writer stored: if another writer put the object since (and purged the
// chunks appended to), the append fails, the chunks it stored stay behind,
// unreachable (space, not data, until the retention or a purge of the
// bucket), and the other writer's object is what the name holds, for the
// moment only: this writer's next Store, not knowing what the name holds,
// looks it up and stores its own object whole over it, with no check of
// what it replaces (a rollup and a purge of the chunks it found).
type GrowingObject struct {
	bus   *Bus
	name  string
	known bool    // whether cur is what the name holds
	cur   *stored // nil: nothing, when known
	// whole is when cur was last stored whole (when its oldest chunk
	// was stored, or a little before), and appended whether chunks were
	// appended to it since.
	whole    time.Time
	appended bool
}

// GrowingObject returns a writer of object name. isNew says that the name
// holds nothing yet and no one else writes it: the first Store then
// neither looks it up nor rolls up an info.
func (b *Bus) GrowingObject(name string, isNew bool) *GrowingObject {
	return &GrowingObject{bus: b, name: name, known: isNew}
}

// Store stores the object as r holds it now, size bytes. The bytes stored
// before must still be its first ones (the object only grows); an object
// smaller than what was stored is stored anew. An object that did not grow
// is not stored again, unless the object store's retention needs it (see
// GrowingObject).
func (g *GrowingObject) Store(ctx context.Context, r io.ReaderAt, size int64) error {
	return g.store(ctx, r, size, false)
}

// StoreLast stores the object as Store does, for the last time: with a
// retention, an object appended to since it was last stored whole is
// stored whole, so that its chunks all expire together, with its info.
// Without one it is Store. Another Store or StoreLast may follow (one
// that failed is tried again).
func (g *GrowingObject) StoreLast(ctx context.Context, r io.ReaderAt, size int64) error {
	return g.store(ctx, r, size, true)
}

func (g *GrowingObject) store(ctx context.Context, r io.ReaderAt, size int64, last bool) error {
	known, cur, appended := g.known, g.cur, g.appended
	// Until this store has ended, what the name holds is not known: a
	// failure may leave chunks past the stored size, or an info stored
	// whose ack was lost.
	g.known, g.cur = false, nil
	// Whether appends, and an info stored again over old chunks, are
	// still safe: with a retention, not once the oldest chunks are half
	// of it old, nor for the last copy.
	appendable := true
	if known && cur != nil && (appended || size > int64(cur.info.Size)) {
		if maxAge := g.bus.objectsMaxAge(ctx); maxAge > 0 {
			appendable = !last && time.Since(g.whole) < retentionRewrite(maxAge)
		}
	}
	var next *stored
	var err error
	switch {
	case known && cur != nil && size == int64(cur.info.Size) && (appendable || !appended):
		next = cur
	case known && cur != nil && size > int64(cur.info.Size) && appendable && cur.info.Chunks < maxChunks(size):
		next, err = g.append(ctx, cur, io.NewSectionReader(r, int64(cur.info.Size), size-int64(cur.info.Size)))
		appended = true
	default:
		var current *jetstream.ObjectInfo
		if cur != nil {
			current = cur.info
		}
		began := time.Now()
		// A chunk is the object's size, up to the default: a buffer of
		// the chunk size is allocated for every store, and logs are
		// mostly a few lines.
		next, err = g.bus.putObject(ctx, g.name, io.NewSectionReader(r, 0, size), PutOptions{
			ChunkSize: int(min(max(size, 1), DefaultChunkSize)), Known: known, Current: current,
		})
		g.whole, appended = began, false
	}
	if err != nil {
		return err
	}
	g.known, g.cur, g.appended = true, next, appended
	return nil
}

// retentionRewrite is how old the oldest chunks of a GrowingObject may be,
// in an object store whose retention is maxAge, before it is stored whole
// again rather than appended to: half of it. The info stored at an append
// would otherwise count chunks that expire before it does. Half leaves the
// writer time to notice (it stores every few seconds) and to learn a
// retention changed (objectsMaxAge), and costs a whole store per log every
// half retention, at most.
func retentionRewrite(maxAge time.Duration) time.Duration {
	return maxAge / 2
}

// append stores what r holds, size bytes, as more chunks of cur's object.
func (g *GrowingObject) append(ctx context.Context, cur *stored, r *io.SectionReader) (*stored, error) {
	info := *cur.info
	// cur's digest takes the new bytes: cur is not used again whatever
	// happens (Store forgets it).
	next := &stored{info: &info, digest: cur.digest, infoSeq: cur.infoSeq}
	if err := g.bus.putChunks(ctx, next, r, int(min(r.Size(), DefaultChunkSize))); err != nil {
		return nil, fmt.Errorf("append to object %s: %w", g.name, err)
	}
	if err := g.bus.putInfo(ctx, next, true); err != nil {
		return nil, fmt.Errorf("append to object %s: %w", g.name, err)
	}
	return next, nil
}

// maxChunks bounds the chunks of an object of size bytes that appends may
// make: twice what a store of it whole makes, and 64 more. Past it, the
// object is stored whole again: an append costs at most a chunk's worth of
// that, amortised, beside what it appends.
func maxChunks(size int64) uint32 {
	return uint32(2*((size+DefaultChunkSize-1)/DefaultChunkSize) + 64)
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

// maxAgeRefresh is how long the objects stream's MaxAge, as this process
// last read it, is taken for its retention. Only the API's process (the
// owner, Config.Owner) applies WES_OBJECT_RETENTION; an executor started
// before the API was restarted with another one would otherwise go on with
// the old one for as long as it runs.
const maxAgeRefresh = time.Minute

// objectsMaxAge returns the objects stream's MaxAge (0: none), read again
// from the server when what this process knows is older than
// maxAgeRefresh; a failed read keeps what it knew, and is not tried again
// before maxAgeRefresh.
func (b *Bus) objectsMaxAge(ctx context.Context) time.Duration {
	now := time.Now().UnixNano()
	if last := b.maxAgeRead.Load(); now-last >= int64(maxAgeRefresh) && b.maxAgeRead.CompareAndSwap(last, now) {
		ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, _ = b.objectsStream.Info(ictx) // updates CachedInfo
		cancel()
	}
	if info := b.objectsStream.CachedInfo(); info != nil {
		return info.Config.MaxAge
	}
	return 0
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

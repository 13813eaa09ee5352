package executor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/wes-dev/wes/events"
)

// engineLog is where an engine's stdout or stderr goes while the attempt
// runs: a file in the run's directory, or memory for a run without one.
type engineLog interface {
	io.Writer
	// snapshot returns what was written so far, size bytes read from r at
	// 0, or ok false if that cannot be read now. What is written later
	// only follows it.
	snapshot() (r io.ReaderAt, size int64, ok bool)
	io.Closer
}

// logNames name the engine's two logs: the object-store keys' last part,
// and the files <name>.log in the run's directory.
var logNames = [2]string{"stdout", "stderr"}

// openLogs creates the attempt's stdout and stderr: files stdout.log and
// stderr.log in dir, or memory when dir is "".
func openLogs(dir string) ([2]engineLog, error) {
	if dir == "" {
		return [2]engineLog{&memLog{}, &memLog{}}, nil
	}
	var logs [2]engineLog
	for i, name := range logNames {
		name += ".log"
		f, err := createFresh(filepath.Join(dir, name))
		if err != nil {
			if i == 1 {
				logs[0].Close()
			}
			return logs, fmt.Errorf("create %s: %w", name, err)
		}
		logs[i] = fileLog{f}
	}
	return logs, nil
}

// createFresh creates a new file at path, removing what is there first:
// a retry runs in the run's directory, which the engine's user held, and
// its workflow may have left a link there to a file of the host, which a
// plain create would truncate and write, as root. O_EXCL makes sure the
// file made is no link, whatever is planted meanwhile.
func createFresh(path string) (*os.File, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
}

// fileLog is a log written to a file.
type fileLog struct{ *os.File }

func (l fileLog) snapshot() (io.ReaderAt, int64, bool) {
	fi, err := l.Stat()
	if err != nil {
		return nil, 0, false
	}
	// Only what was written so far (the engine may still be writing),
	// read through the handle it is written through: never by its name,
	// which a workflow (its directory is its engine user's) could make a
	// link to a file only the executor may read.
	return l.File, fi.Size(), true
}

// memLogLimit bounds a log kept in memory; what a run writes past it is
// dropped, and the log says so.
const memLogLimit = 1 << 20

// memLog is a log kept in memory, for a run without a directory.
type memLog struct {
	mu        sync.Mutex
	buf       bytes.Buffer
	truncated bool
}

func (l *memLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := memLogLimit - l.buf.Len(); len(p) > room {
		l.buf.Write(p[:max(room, 0)])
		if !l.truncated {
			l.truncated = true
			fmt.Fprintf(&l.buf, "\n[wes: output beyond %d bytes was dropped]\n", memLogLimit)
		}
		return len(p), nil
	}
	return l.buf.Write(p)
}

func (l *memLog) snapshot() (io.ReaderAt, int64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// The bytes written so far never change: Write only appends, and a
	// Buffer that grows copies to a new array.
	b := l.buf.Bytes()
	return bytes.NewReader(b), int64(len(b)), true
}

func (*memLog) Close() error { return nil }

// shipLogs copies the engine's stdout and stderr to the object store, where
// the API serves them, every LogInterval while they grow and once more when
// stop is called. A copy stores what a log grew by since the last one
// (events.GrowingObject); with an object retention (WES_OBJECT_RETENTION)
// a log is stored whole again before its first chunks are half that old,
// and at the last copy if it was appended to, so that its chunks do not
// expire before its info. While the run goes on, a log is copied again only
// after ten times as long as its last copy took, and a copy may take as
// long as its size needs (logPutTimeout). The last copy is tried until it
// is stored, up to logFinalTries times: it is the log's tail.
func (a *attempt) shipLogs(logs [2]engineLog) (stop func()) {
	// A run's first attempt knows its logs hold nothing yet (a delivery
	// that repeats an earlier one's number is renumbered by begin): its
	// first copy need not ask the server what it replaces.
	var objs [2]*events.GrowingObject
	for i := range logs {
		objs[i] = a.e.bus.GrowingObject(events.LogKey(a.sub.RunID, logNames[i]), a.n == 1)
	}
	var notBefore [2]time.Time
	// shipOne copies log i if it must (it grew, or the retention needs it),
	// and reports whether it is stored.
	shipOne := func(ctx context.Context, i int, final bool) bool {
		if !final && time.Now().Before(notBefore[i]) || a.takenOver.Load() {
			return true // the log is the attempt's that took the run over
		}
		r, size, ok := logs[i].snapshot()
		if !ok {
			return false
		}
		// A log that did not grow is not stored again (Store is a no-op),
		// unless the object store's retention needs it: Store and
		// StoreLast tell. A copy is bounded on its own: an object store
		// that does not answer (its stream electing a leader) must not
		// hold the run, or an executor's shutdown, for long.
		pctx, cancel := context.WithTimeout(ctx, logPutTimeout(size))
		defer cancel()
		began := time.Now()
		store := objs[i].Store
		if final {
			// With a retention, a log appended to is stored whole at
			// the end: its chunks then expire together, with its info.
			store = objs[i].StoreLast
		}
		if err := store(pctx, r, size); err != nil {
			// What the object holds is not known now: the next copy
			// stores it whole.
			a.log.Warn("cannot store log", "log", logNames[i], "bytes", size, "final", final, "err", err)
			return false
		}
		notBefore[i] = time.Now().Add(10 * time.Since(began))
		return true
	}
	stopShipping := every(context.Background(), a.e.cfg.LogInterval, func(ctx context.Context) {
		for i := range logs {
			shipOne(ctx, i, false)
		}
	})
	return func() {
		stopShipping()
		for i := range logs {
			delay := 200 * time.Millisecond
			for try := 1; !shipOne(context.Background(), i, true) && try < logFinalTries; try++ {
				time.Sleep(delay)
				delay *= 4
			}
		}
	}
}

// logFinalTries bounds the tries of a log's last copy.
const logFinalTries = 4

// logPutTimeout bounds one copy of a log of size bytes to the object
// store: 5 s, and a second more for every 8 MiB.
func logPutTimeout(size int64) time.Duration {
	return 5*time.Second + time.Duration(size/(8<<20))*time.Second
}

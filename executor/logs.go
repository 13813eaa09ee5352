package executor

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wes-dev/wes/events"
)

// engineLog is where an engine's stdout or stderr goes while the attempt
// runs: a file in the run's directory, or memory for a run without one.
type engineLog interface {
	io.Writer
	// snapshot returns what was written so far, or ok false if that
	// cannot be read now. The reader holds exactly size bytes.
	snapshot() (r io.ReadCloser, size int64, ok bool)
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
		f, err := os.Create(filepath.Join(dir, name))
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

// fileLog is a log written to a file.
type fileLog struct{ *os.File }

func (l fileLog) snapshot() (io.ReadCloser, int64, bool) {
	fi, err := l.Stat()
	if err != nil {
		return nil, 0, false
	}
	f, err := os.Open(l.Name())
	if err != nil {
		return nil, 0, false
	}
	// Only what was written so far: the engine may still be writing.
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(f, fi.Size()), f}, fi.Size(), true
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

func (l *memLog) snapshot() (io.ReadCloser, int64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// The bytes written so far never change: Write only appends, and a
	// Buffer that grows copies to a new array.
	b := l.buf.Bytes()
	return io.NopCloser(bytes.NewReader(b)), int64(len(b)), true
}

func (*memLog) Close() error { return nil }

// shipLogs copies the engine's stdout and stderr to the object store, where
// the API serves them, every LogInterval while they grow and once more when
// stop is called.
func (a *attempt) shipLogs(logs [2]engineLog) (stop func()) {
	sizes := [2]int64{-1, -1}
	// What each log's object holds, when this attempt knows it: nothing
	// yet for a run's first attempt (a delivery that repeats an earlier
	// one's number is renumbered by begin), then what it last stored. The
	// put then need not ask the server what it replaces.
	var current [2]*jetstream.ObjectInfo
	known := [2]bool{a.n == 1, a.n == 1}
	ship := func(ctx context.Context) {
		for i, l := range logs {
			r, size, ok := l.snapshot()
			if !ok {
				continue
			}
			if size == sizes[i] {
				r.Close()
				continue
			}
			// A put is bounded on its own: an object store that does not
			// answer (its stream electing a leader) must not hold the run,
			// or an executor's shutdown, for long.
			pctx, cancel := context.WithTimeout(ctx, logPutTimeout)
			// A chunk is the log's size (at most the default): a buffer of
			// the chunk size is allocated for every put, and logs are
			// mostly a few lines.
			info, err := a.e.bus.PutObject(pctx, events.LogKey(a.sub.RunID, logNames[i]), r, events.PutOptions{
				ChunkSize: int(min(max(size, 1), events.DefaultChunkSize)),
				Known:     known[i], Current: current[i],
			})
			cancel()
			r.Close()
			if err != nil {
				// The object may or may not have been replaced.
				known[i] = false
				a.log.Warn("cannot store log", "log", logNames[i], "err", err)
				continue
			}
			sizes[i], current[i], known[i] = size, info, true
		}
	}
	stopShipping := every(context.Background(), a.e.cfg.LogInterval, ship)
	return func() {
		stopShipping()
		ship(context.Background())
	}
}

// logPutTimeout bounds one copy of a log to the object store.
const logPutTimeout = 5 * time.Second

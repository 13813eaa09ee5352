package apiserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wes-dev/wes/events"
)

// getLog serves a run's stdout or stderr from the object store.
func (h *handlers) getLog(w http.ResponseWriter, r *http.Request) {
	v := mux.Vars(r)
	run, err := h.run(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	key := events.LogKey(run.ID, v["stream"])
	if r.URL.Query().Get("follow") == "true" {
		if r.Method == http.MethodHead {
			// What a GET would start with, without following the log.
			followHeaders(w)
			w.WriteHeader(http.StatusOK)
			return
		}
		h.followLog(w, r, run.ID, key)
		return
	}
	notFound := withStatus(http.StatusNotFound, nil, "%s of run %s is not available yet (the run is %s); it is stored while the engine runs", v["stream"], run.ID, run.State)
	if run.State.Terminal() {
		notFound = withStatus(http.StatusNotFound, nil, "%s of run %s is not stored: the run ended (%s) before its engine wrote any, or it outlived the object store's retention (WES_OBJECT_RETENTION)", v["stream"], run.ID, run.State)
	}
	h.serveObject(w, r, key, "text/plain; charset=utf-8", "", notFound)
}

// serveObject answers with an object of the store, Range requests included
// (http.ServeContent over a seeker that reads the object lazily), or with
// notFound when there is no such object.
// A non-empty download name makes the answer an attachment of that name.
func (h *handlers) serveObject(w http.ResponseWriter, r *http.Request, key, contentType, download string, notFound error) {
	ctx := r.Context()
	info, err := h.s.bus.Objects.GetInfo(ctx, key)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		h.fail(w, r, notFound)
		return
	}
	if err != nil {
		h.fail(w, r, fmt.Errorf("read %s: %w: %w", key, errBrokerUnavailable, err))
		return
	}
	if contentType != "" {
		w.Header().Set("Content-Type", contentType)
	}
	if download != "" {
		w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": download}))
	}
	// Every range of a multi-range request is a read of its own
	// (objectSeeker): past a few, the whole object is the answer, as RFC
	// 9110 allows.
	if strings.Count(r.Header.Get("Range"), ",") >= maxRanges {
		r.Header.Del("Range")
	}
	rs := &objectSeeker{ctx: ctx, bus: h.s.bus, info: info, size: int64(info.Size)}
	defer rs.Close()
	ew := &errorsAsJSON{ResponseWriter: w}
	http.ServeContent(ew, r, path.Base(key), info.ModTime, rs)
	if ew.status != 0 {
		// A Range that cannot be served (416), say: a WES ErrorResponse,
		// like every other error, with ServeContent's reason.
		h.fail(w, r, withStatus(ew.status, nil, "%s", strings.TrimSpace(ew.msg.String())))
	}
}

// errorsAsJSON passes a response through unless its status is an error:
// then it keeps the status and the text for the caller to answer with.
type errorsAsJSON struct {
	http.ResponseWriter
	status int
	msg    strings.Builder
}

func (e *errorsAsJSON) WriteHeader(code int) {
	if code >= 400 {
		e.status = code
		return
	}
	e.ResponseWriter.WriteHeader(code)
}

func (e *errorsAsJSON) Write(p []byte) (int, error) {
	if e.status != 0 {
		if e.msg.Len() < 1024 {
			e.msg.Write(p)
		}
		return len(p), nil
	}
	return e.ResponseWriter.Write(p)
}

// maxRanges bounds the ranges of one request that are served as ranges.
const maxRanges = 16

// followInterval is how often a followed log is checked for growth.
const followInterval = time.Second

// followLog streams a log as it grows (chunked), until the run has ended
// and everything it wrote was sent.
func (h *handlers) followLog(w http.ResponseWriter, r *http.Request, runID, key string) {
	ctx := r.Context()
	followHeaders(w)
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	var sent int64
	for failed := 0; ; {
		// Read the state first: once it is final, the log is complete.
		run, err := h.s.store.GetRun(ctx, runID)
		if err != nil {
			return
		}
		var rerr error
		info, err := h.s.bus.Objects.GetInfo(ctx, key)
		if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			rerr = err // not known to be complete
		}
		if err == nil && int64(info.Size) > sent {
			rs := &objectSeeker{ctx: ctx, bus: h.s.bus, info: info, size: int64(info.Size), off: sent}
			n, werr := io.Copy(w, readErrs{rs, &rerr})
			rs.Close()
			sent += n
			if werr != nil && rerr == nil {
				return // the client is gone
			}
			_ = rc.Flush()
		}
		// A read that failed (NATS busy, the log put again past what we
		// can follow) is tried again at the next look, the run ended or
		// not, a few times: a stream that ends says the log is complete.
		if rerr != nil {
			if failed++; failed > 10 {
				// A stream that ends says the log is complete: this one
				// is broken off instead, and the client may follow again.
				h.s.log.Warn("a followed log cannot be read; breaking the stream off", "run_id", runID, "err", rerr)
				panic(http.ErrAbortHandler)
			}
		} else if failed = 0; run.State.Terminal() {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-drainingOf(ctx): // the server shuts down: the client may follow again elsewhere
			return
		case <-time.After(followInterval):
		}
	}
}

// followHeaders are a followed log's.
func followHeaders(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
}

// readErrs is a reader that keeps its last error, to tell a failed read
// from a failed write after an io.Copy.
type readErrs struct {
	r   io.Reader
	err *error
}

func (r readErrs) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		*r.err = err
	}
	return n, err
}

// objectSeeker is an io.ReadSeeker over an object: Seek only moves the
// offset; Read opens the object there, reading only the chunks from the
// one that holds it (events.OpenObjectAt).
type objectSeeker struct {
	ctx     context.Context
	bus     *events.Bus
	info    *jetstream.ObjectInfo
	size    int64
	off     int64
	body    io.ReadCloser
	bodyOff int64
	cancel  context.CancelFunc // body's read deadline
}

func (o *objectSeeker) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += o.off
	case io.SeekEnd:
		offset += o.size
	default:
		return 0, errors.New("invalid whence")
	}
	if offset < 0 {
		return 0, errors.New("negative offset")
	}
	o.off = offset
	return offset, nil
}

func (o *objectSeeker) Read(p []byte) (int, error) {
	if o.off >= o.size {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), o.size-o.off)] // what the answer announced, no more
	for tries := 0; ; tries++ {
		if o.body != nil && o.bodyOff != o.off {
			o.Close()
		}
		var err error
		if o.body == nil {
			err = o.open()
		}
		if err == nil {
			var n int
			n, err = o.body.Read(p)
			o.off += int64(n)
			o.bodyOff = o.off
			if n > 0 || !errors.Is(err, io.ErrUnexpectedEOF) {
				return n, err
			}
		}
		// A log stored anew while it was read (a running run's, when its
		// appended chunks grow too many, or by another attempt) has new
		// chunks, and the old ones are gone: go on in the new object,
		// which holds what the old one did.
		now, replaced := o.bus.Replaced(o.ctx, o.info)
		if !replaced || tries == 3 || int64(now.Size) < o.size {
			return 0, err
		}
		o.Close()
		o.info = now
	}
}

// open opens the object at the offset.
func (o *objectSeeker) open() error {
	ctx, cancel := context.WithTimeout(o.ctx, events.TransferTimeout(uint64(o.size-o.off)))
	body, err := o.bus.OpenObjectAt(ctx, o.info, o.off)
	if err != nil {
		cancel()
		return err
	}
	o.cancel = cancel
	o.body, o.bodyOff = body, o.off
	return nil
}

func (o *objectSeeker) Close() error {
	if o.body == nil {
		return nil
	}
	err := o.body.Close()
	o.cancel()
	o.body, o.cancel = nil, nil
	return err
}

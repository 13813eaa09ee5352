package apiserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/wes-dev/wes/events"
	"github.com/wes-dev/wes/models"
)

// BasePaths are the prefixes the API answers under: the standard one and
// the seed's.
var BasePaths = []string{"/ga4gh/wes/v1", "/api/ga4gh/wes/v1"}

// Config tunes the API.
type Config struct {
	// PublicURL, when set, is the scheme://host[:port] clients reach the API
	// at; absolute URLs in responses start with it. Otherwise they use the
	// request's Host.
	PublicURL       string
	Limits          Limits
	DefaultPageSize int
	MaxPageSize     int
	// Ready, if set, is one more condition of readiness (/readyz): wes dev
	// is ready once its built-in executor is listed.
	Ready               func() error
	AllowLocalWorkflows bool
	// PageTokenKey signs page tokens; every replica must share it.
	PageTokenKey []byte
	// Metrics, when set, is served at /metrics.
	Metrics http.Handler
	// CallbackAllow lists the URL prefixes a run's callback tag may use.
	CallbackAllow []string
	// Auth tells who calls (nil: Anyone, WES_AUTH_MODE=none).
	Auth    Authenticator
	Service ServiceConfig
}

// ServiceConfig is what service-info says about this deployment.
type ServiceConfig struct {
	ID                  string
	Name                string
	Description         string
	OrganizationName    string
	OrganizationURL     string
	ContactURL          string
	DocumentationURL    string
	Environment         string
	Version             string
	AuthInstructionsURL string
	// CreatedAt is when the service was first deployed (its database's
	// first migration); zero: when this process started.
	CreatedAt time.Time
}

// Store is what the API needs of the run store.
type Store interface {
	CreateRuns(ctx context.Context, runs []*models.Run, outbox []*models.OutboxMessage) error
	GetRun(ctx context.Context, id string) (*models.Run, error)
	ListRuns(ctx context.Context, q models.ListQuery) ([]models.Run, int64, error)
	StateCounts(ctx context.Context, owner string) (map[models.State]int64, error)
	RequestCancel(ctx context.Context, id string, msg func(*models.Run) (*models.OutboxMessage, error)) (*models.Run, bool, error)
	ListTasks(ctx context.Context, runID string, after int64, limit int) ([]models.TaskLog, int64, error)
	GetTask(ctx context.Context, runID, taskID string) (*models.TaskLog, error)
	Ping(ctx context.Context) error
	CheckSchema(ctx context.Context) error
}

// outboxRelay publishes messages the API has just committed to the outbox.
type outboxRelay interface {
	Deliver(msgs ...models.OutboxMessage)
}

// Server is the WES API.
type Server struct {
	cfg     Config
	store   Store
	bus     *events.Bus
	enc     *events.Publisher
	catalog *Catalog
	relay   outboxRelay
	commits *groupCommit
	// counts keeps service-info's state counts a while when counting takes
	// long: an admin's count the whole table, 0.4 s over a million runs.
	counts  *stateCounts
	tokens  pageTokens
	metrics *Metrics
	auth    Authenticator
	log     *slog.Logger
	started time.Time
}

// New returns the API server.
func New(cfg Config, store Store, bus *events.Bus, catalog *Catalog, relay outboxRelay, metrics *Metrics, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	if cfg.DefaultPageSize <= 0 {
		cfg.DefaultPageSize = 50
	}
	if cfg.Auth == nil {
		cfg.Auth = Anyone{}
	}
	if cfg.MaxPageSize <= 0 {
		cfg.MaxPageSize = max(1000, cfg.DefaultPageSize)
	}
	cfg.DefaultPageSize = min(cfg.DefaultPageSize, cfg.MaxPageSize)
	return &Server{
		cfg: cfg, store: store, bus: bus, enc: events.NewPublisher(bus.JS, bus.Names),
		catalog: catalog, relay: relay,
		// One commit at a time: the submissions that arrive meanwhile
		// share the next. More flushers split a load into more, smaller
		// transactions: with four, the whole machine spent 8-17% more CPU
		// per run (PostgreSQL's 30-47% more) at 16 and 64 clients, and
		// answered 12% fewer submissions at 16 (README, Where the time went).
		commits: &groupCommit{store: store, deliver: relay.Deliver, maxBatch: 128, maxFlushers: 1, timeout: 10 * time.Second},
		counts:  &stateCounts{slow: slowCount, byOwner: map[string]*countsAt{}},
		tokens:  pageTokens{key: cfg.PageTokenKey}, metrics: metrics, auth: cfg.Auth,
		log: log.With("component", "api"), started: time.Now().UTC(),
	}
}

// Handler returns the HTTP handler with every route.
func (s *Server) Handler() http.Handler {
	r := mux.NewRouter()
	if s.metrics != nil {
		r.Use(s.metrics.instrument)
	}
	r.Use(s.authenticate)
	notFound := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		for _, base := range BasePaths {
			if strings.HasPrefix(req.URL.Path, base+"/") {
				writeError(w, req, s.log, withStatus(http.StatusNotFound, nil, "no such endpoint %s: the WES endpoints are %s/service-info and %s/runs…; /healthz, /readyz and /metrics are at the root", req.URL.Path, base, base))
				return
			}
		}
		writeError(w, req, s.log, withStatus(http.StatusNotFound, nil, "no such endpoint %s; the API is under %s", req.URL.Path, BasePaths[0]))
	})
	// allowing answers 405 with the methods a path takes (RFC 9110 wants
	// them said); "" when not known.
	allowing := func(allow string) http.HandlerFunc {
		return func(w http.ResponseWriter, req *http.Request) {
			if allow != "" {
				w.Header().Set("Allow", allow)
			}
			writeError(w, req, s.log, withStatus(http.StatusMethodNotAllowed, nil, "method %s is not allowed on %s", req.Method, req.URL.Path))
		}
	}
	r.NotFoundHandler, r.MethodNotAllowedHandler = notFound, allowing("")
	for _, base := range BasePaths {
		sr := r.PathPrefix(base).Subrouter()
		h := &handlers{s: s, base: base}
		routes := []struct {
			path    string
			handler http.HandlerFunc
			methods []string
		}{
			{"/service-info", h.serviceInfo, []string{http.MethodGet}},
			{"/runs", h.listRuns, []string{http.MethodGet}},
			{"/runs", h.submit, []string{http.MethodPost}},
			{"/runs/{run_id}", h.getRun, []string{http.MethodGet}},
			{"/runs/{run_id}/status", h.getStatus, []string{http.MethodGet}},
			{"/runs/{run_id}/cancel", h.cancel, []string{http.MethodPost}},
			{"/runs/{run_id}/tasks", h.listTasks, []string{http.MethodGet}},
			{"/runs/{run_id}/tasks/{task_id}", h.getTask, []string{http.MethodGet}},
			{"/runs/{run_id}/logs/{stream:stdout|stderr}", h.getLog, []string{http.MethodGet, http.MethodHead}},
			{"/runs/{run_id}/outputs", h.listOutputs, []string{http.MethodGet}},
			{"/runs/{run_id}/outputs/{path:.+}", h.getOutput, []string{http.MethodGet, http.MethodHead}},
		}
		var paths []string
		allowed := map[string][]string{}
		for _, rt := range routes {
			// Every GET answers HEAD too (net/http sends no body for it).
			if slices.Contains(rt.methods, http.MethodGet) && !slices.Contains(rt.methods, http.MethodHead) {
				rt.methods = append(rt.methods, http.MethodHead)
			}
			sr.HandleFunc(rt.path, rt.handler).Methods(rt.methods...)
			if allowed[rt.path] == nil {
				paths = append(paths, rt.path)
			}
			allowed[rt.path] = append(allowed[rt.path], rt.methods...)
		}
		// A known path asked with another method: 405 (mux's own
		// method-mismatch answer does not reach through a subrouter).
		for _, p := range paths {
			sr.Handle(p, allowing(strings.Join(allowed[p], ", ")))
		}
	}
	root := map[string]http.Handler{
		"/healthz": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		}),
		"/readyz": http.HandlerFunc(s.ready),
	}
	if s.cfg.Metrics != nil {
		root["/metrics"] = s.cfg.Metrics
	}
	for p, h := range root {
		r.Handle(p, h).Methods(http.MethodGet, http.MethodHead)
		r.Handle(p, allowing("GET, HEAD"))
	}
	return s.recoverer(s.accessLog(r))
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		writeError(w, r, s.log, withStatus(http.StatusServiceUnavailable, err, "database unreachable"))
		return
	}
	if !s.bus.JS.Conn().IsConnected() {
		writeError(w, r, s.log, withStatus(http.StatusServiceUnavailable, nil, "NATS unreachable"))
		return
	}
	if err := s.store.CheckSchema(ctx); err != nil {
		writeError(w, r, s.log, withStatus(http.StatusServiceUnavailable, err, "database schema is not current"))
		return
	}
	if s.cfg.Ready != nil {
		if err := s.cfg.Ready(); err != nil {
			writeError(w, r, s.log, withStatus(http.StatusServiceUnavailable, err, "not ready: %v", err))
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (s *Server) accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		s.log.Debug("request", "method", r.Method, "path", r.URL.Path, "status", rec.status, "duration", time.Since(start))
	})
}

func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("panic serving request", "path", r.URL.Path, "panic", v, "stack", string(debug.Stack()))
				writeError(w, r, s.log, fmt.Errorf("panic: %v", v))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// TLSFiles, when both are set, make Serve answer HTTPS.
type TLSFiles struct{ Cert, Key string }

// Serve runs an HTTP server for h on addr until ctx ends, then shuts it
// down gracefully. ready, if not nil, hears the address once listening.
func Serve(ctx context.Context, addr string, h http.Handler, log *slog.Logger, ready func(net.Addr)) error {
	return ServeTLS(ctx, addr, TLSFiles{}, h, log, ready)
}

// drainingKey keys the channel that a server's shutdown closes, in the
// context of each of its requests.
type drainingKey struct{}

// drainingOf returns the channel closed when the server serving ctx's
// request shuts down (nil, never closed, outside a server).
func drainingOf(ctx context.Context) <-chan struct{} {
	ch, _ := ctx.Value(drainingKey{}).(<-chan struct{})
	return ch
}

// ServeTLS is Serve with HTTPS when tlsFiles names a certificate and key.
func ServeTLS(ctx context.Context, addr string, tlsFiles TLSFiles, h http.Handler, log *slog.Logger, ready func(net.Addr)) error {
	if (tlsFiles.Cert == "") != (tlsFiles.Key == "") {
		return errors.New("TLS needs both a certificate and a key (WES_TLS_CERT, WES_TLS_KEY)")
	}
	// Shutdown waits for requests in flight, but a followed log would
	// stream until its run ends: it watches draining and ends first.
	draining, drain := context.WithCancel(context.Background())
	defer drain()
	srv := &http.Server{
		Handler: h,
		BaseContext: func(net.Listener) context.Context {
			return context.WithValue(context.Background(), drainingKey{}, draining.Done())
		},
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       10 * time.Minute, // attachments may be large
		WriteTimeout:      0,                // log follow streams until the run ends
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	srv.RegisterOnShutdown(drain)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	if ready != nil {
		ready(ln.Addr())
	}
	errc := make(chan error, 1)
	go func() {
		if tlsFiles.Cert != "" {
			errc <- srv.ServeTLS(ln, tlsFiles.Cert, tlsFiles.Key)
			return
		}
		errc <- srv.Serve(ln)
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		return fmt.Errorf("shut down HTTP server: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

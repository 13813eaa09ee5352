package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/wes-dev/wes/alerting"
	"github.com/wes-dev/wes/apiserver"
	"github.com/wes-dev/wes/events"
	"github.com/wes-dev/wes/executor"
	"github.com/wes-dev/wes/models"
	"github.com/wes-dev/wes/projector"
	"github.com/wes-dev/wes/providers"
	"github.com/wes-dev/wes/providers/local"
	"github.com/wes-dev/wes/providers/mock"
)

// component is one long-running part of a process.
type component func(ctx context.Context) error

// runAll runs components under one errgroup: the first to fail stops them all.
func runAll(ctx context.Context, comps ...component) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, c := range comps {
		g.Go(func() error { return c(ctx) })
	}
	return g.Wait()
}

func runDev(ctx context.Context, env *environment, _ []string) error {
	cfg := env.cfg
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("create WES_DATA_DIR: %w", err)
	}
	unlock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return err
	}
	defer unlock()
	if cfg.DatabaseURL == "" {
		cfg.DatabaseURL = filepath.Join(cfg.DataDir, "wes.db")
	}
	ns, err := events.StartEmbedded("127.0.0.1", cfg.DevNATSPort, filepath.Join(cfg.DataDir, "nats"))
	if err != nil {
		return err
	}
	defer ns.Shutdown()
	env.log.Info("embedded NATS JetStream started", "url", ns.URL(), "store", filepath.Join(cfg.DataDir, "nats"))
	cfg.NATSURL = ns.URL()

	store, err := models.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer store.Close()
	if applied, err := store.Migrate(ctx); err != nil {
		return err
	} else if len(applied) > 0 {
		env.log.Info("database migrated", "versions", applied)
	}
	bus, nc, err := connect(ctx, env, cfg, "wes-dev", true)
	if err != nil {
		return err
	}
	defer nc.Close()
	reg := newRegistry()
	// The embedded server stops with this executor: a run it hands back
	// is queued anew, or the restarted server would hold it for AckWait.
	exec, err := newExecutor(env, cfg, bus, reg, true)
	if err != nil {
		return err
	}
	// Ready once the built-in executor is listed (or found no engine):
	// before, every submission would be refused for want of an engine.
	api, err := apiComponents(ctx, env, cfg, store, bus, reg, exec)
	if err != nil {
		return err
	}
	return runAll(ctx, append(api, exec.Run)...)
}

// lockDataDir takes WES_DATA_DIR for this process: two `wes dev` on one
// directory would share its SQLite database and NATS store (nats-server
// locks neither), and the runs of one would wait for ever in the other's
// queue. The lock goes with the process.
func lockDataDir(dir string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("lock WES_DATA_DIR: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("WES_DATA_DIR %s is in use by another wes dev: stop it, or give this one another WES_DATA_DIR", dir)
		}
		return nil, fmt.Errorf("lock WES_DATA_DIR: %w", err)
	}
	return func() { f.Close() }, nil
}

func runAPI(ctx context.Context, env *environment, _ []string) error {
	store, err := openCurrentStore(ctx, env.cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	bus, nc, err := connect(ctx, env, env.cfg, "wes-api", true)
	if err != nil {
		return err
	}
	defer nc.Close()
	comps, err := apiComponents(ctx, env, env.cfg, store, bus, newRegistry(), nil)
	if err != nil {
		return err
	}
	return runAll(ctx, append(comps, func(ctx context.Context) error { return servePprof(ctx, env) })...)
}

func runExecutor(ctx context.Context, env *environment, _ []string) error {
	bus, nc, err := connect(ctx, env, env.cfg, "wes-executor", false)
	if err != nil {
		return err
	}
	defer nc.Close()
	reg := newRegistry()
	exec, err := newExecutor(env, env.cfg, bus, reg, false)
	if err != nil {
		return err
	}
	return runAll(ctx, exec.Run, func(ctx context.Context) error { return servePprof(ctx, env) }, func(ctx context.Context) error {
		return serveOps(ctx, env, env.cfg.ExecutorMetricsAddr, reg, func() error {
			if !nc.IsConnected() {
				return errors.New("NATS unreachable")
			}
			return nil
		})
	})
}

func runProjector(ctx context.Context, env *environment, _ []string) error {
	store, err := openCurrentStore(ctx, env.cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	bus, nc, err := connect(ctx, env, env.cfg, "wes-projector", false)
	if err != nil {
		return err
	}
	defer nc.Close()
	return projector.New(store, bus, processName(), newRegistry(), env.log).Run(ctx)
}

func runAlerts(ctx context.Context, env *environment, _ []string) error {
	if env.cfg.AlertWebhookURL == "" && env.cfg.AlertSlackURL == "" && len(env.cfg.CallbackAllow) == 0 {
		return errors.New("set WES_ALERT_WEBHOOK_URL, WES_ALERT_SLACK_URL and/or WES_CALLBACK_ALLOW")
	}
	bus, nc, err := connect(ctx, env, env.cfg, "wes-alerts", false)
	if err != nil {
		return err
	}
	defer nc.Close()
	alerter, err := newAlerter(env, env.cfg, bus, newRegistry())
	if err != nil {
		return err
	}
	return alerter.Run(ctx)
}

func newAlerter(env *environment, cfg Config, bus *events.Bus, reg prometheus.Registerer) (*alerting.Alerter, error) {
	var states []models.State
	for _, s := range cfg.AlertStates {
		st, err := models.ParseState(strings.ToUpper(strings.TrimSpace(s)))
		if err != nil {
			return nil, fmt.Errorf("WES_ALERT_STATES: %w", err)
		}
		states = append(states, st)
	}
	tags := map[string]string{}
	for _, kv := range cfg.AlertTags {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("WES_ALERT_TAGS: %q is not key=value", kv)
		}
		tags[k] = v
	}
	origin := cfg.PublicURL
	if origin == "" {
		origin = "http://" + cfg.ListenAddr
	}
	return alerting.New(alerting.Config{
		WebhookURL: cfg.AlertWebhookURL, SlackURL: cfg.AlertSlackURL, States: states, Tags: tags, CallbackAllow: cfg.CallbackAllow,
		RunURL: func(id string) string {
			return strings.TrimSuffix(origin, "/") + apiserver.BasePaths[0] + "/runs/" + id
		},
	}, bus, reg, env.log), nil
}

func runMigrate(ctx context.Context, env *environment, args []string) error {
	if len(args) != 1 || (args[0] != "up" && args[0] != "status") {
		return errors.New("usage: wes migrate up|status")
	}
	store, err := openStore(ctx, env.cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	if args[0] == "up" {
		applied, err := store.Migrate(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "applied %d migration(s) %v\n", len(applied), applied)
		return nil
	}
	status, err := store.MigrationStatus(ctx)
	if err != nil {
		return err
	}
	for _, m := range status {
		state := "pending"
		if m.Applied {
			state = "applied"
		}
		fmt.Fprintf(env.stdout, "%05d  %-8s %s\n", m.Version, state, m.Name)
	}
	return nil
}

func openStore(ctx context.Context, cfg Config) (*models.Store, error) {
	if cfg.DatabaseURL == "" {
		return nil, errors.New("WES_DATABASE_URL is not set: give a postgres:// URL or a SQLite path")
	}
	return models.Open(ctx, cfg.DatabaseURL)
}

// openCurrentStore opens the store and refuses a schema older than this
// binary, saying what to run.
func openCurrentStore(ctx context.Context, cfg Config) (*models.Store, error) {
	store, err := openStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := store.CheckSchema(ctx); err != nil {
		store.Close()
		return nil, err
	}
	return store, nil
}

// connect connects to NATS (retrying for ever, so that a process may start
// before NATS does) and provisions the streams and buckets: an owner (the
// API) brings them to its settings, the others only create what is
// missing.
func connect(ctx context.Context, env *environment, cfg Config, name string, owner bool) (*events.Bus, *nats.Conn, error) {
	log := env.log
	opts := []nats.Option{nats.Name(name)}
	if cfg.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(cfg.NATSCreds))
	}
	if cfg.NATSCA != "" {
		opts = append(opts, nats.RootCAs(cfg.NATSCA))
	}
	if cfg.NATSCert != "" || cfg.NATSKey != "" {
		opts = append(opts, nats.ClientCert(cfg.NATSCert, cfg.NATSKey))
	}
	nc, err := nats.Connect(cfg.NATSURL, append(opts,
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("reconnected to NATS", "url", c.ConnectedUrlRedacted()) }),
	)...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to NATS at %s: %w", redactURLs(cfg.NATSURL), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	names, err := events.NewNames(cfg.NATSNamespace)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	bus, err := events.ProvisionWithRetry(ctx, js, names, events.Config{
		Replicas: cfg.NATSReplicas, ExecutorTTL: cfg.ExecutorTTL.D(), EventRetention: cfg.EventRetention.D(), ObjectRetention: cfg.ObjectRetention.D(), Owner: owner,
	}, func(err error) { log.Warn("waiting for NATS JetStream", "url", redactURLs(cfg.NATSURL), "err", err) })
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return bus, nc, nil
}

// apiComponents are the API's parts. With waitFor, the API is not ready
// (/readyz) until the catalog lists that executor, or it found no engine.
func apiComponents(ctx context.Context, env *environment, cfg Config, store *models.Store, bus *events.Bus, reg *prometheus.Registry, waitFor *executor.Executor) ([]component, error) {
	key, err := store.Secret(ctx, "page_token")
	if err != nil {
		return nil, err
	}
	auth, err := newAuthenticator(ctx, env, cfg)
	if err != nil {
		return nil, err
	}
	deployed, err := store.DeployedAt(ctx)
	if err != nil {
		return nil, err
	}
	catalog := apiserver.NewCatalog(cfg.ExecutorTTL.D())
	relay := apiserver.NewRelay(store, events.NewPublisher(bus.JS, bus.Names), cfg.PollInterval.D(), env.log)
	var ready func() error
	if waitFor != nil {
		ready = func() error {
			if !waitFor.FoundNoEngine() && !catalog.Lists(waitFor.ID()) {
				return fmt.Errorf("executor %s has not announced its engines yet", waitFor.ID())
			}
			return nil
		}
	}
	srv := apiserver.New(apiserver.Config{
		PublicURL: cfg.PublicURL,
		Ready:     ready,
		Limits: apiserver.Limits{
			MaxRequestBytes: cfg.MaxRequestBytes, MaxFieldBytes: cfg.MaxFieldBytes,
			MaxAttachments: cfg.MaxAttachments, MaxTags: cfg.MaxTags, MaxJSONDepth: cfg.MaxJSONDepth,
		},
		DefaultPageSize: cfg.DefaultPageSize, MaxPageSize: cfg.MaxPageSize,
		AllowLocalWorkflows: cfg.AllowLocalWorkflows,
		CallbackAllow:       cfg.CallbackAllow,
		PageTokenKey:        []byte(key),
		Metrics:             promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		Auth:                auth,
		Service: apiserver.ServiceConfig{
			ID: cfg.ServiceID, Name: cfg.ServiceName,
			Description:      "GA4GH Workflow Execution Service",
			OrganizationName: cfg.OrganizationName, OrganizationURL: cfg.OrganizationURL,
			Environment: cfg.Environment, Version: version(), AuthInstructionsURL: cfg.AuthInstructionsURL,
			CreatedAt: deployed,
		},
	}, store, bus, catalog, relay, apiserver.NewMetrics(reg), env.log)
	reg.MustRegister(apiserver.NewBacklogCollector(store), events.NewQueueCollector(bus))
	proj := projector.New(store, bus, processName(), reg, env.log)
	alerter, err := newAlerter(env, cfg, bus, reg)
	if err != nil {
		return nil, err
	}
	reconciler := apiserver.NewReconciler(store, catalog, bus, apiserver.ReconcilerConfig{
		Holder: processName(), Interval: cfg.PollInterval.D(), RequeueAfter: cfg.RequeueAfter.D(),
	}, reg, env.log)
	return []component{
		alerter.Run,
		reconciler.Run,
		func(ctx context.Context) error {
			scheme := "http"
			if cfg.TLSCert != "" {
				scheme = "https"
			}
			return apiserver.ServeTLS(ctx, cfg.ListenAddr, apiserver.TLSFiles{Cert: cfg.TLSCert, Key: cfg.TLSKey}, srv.Handler(), env.log, func(a net.Addr) {
				env.log.Info("WES API listening", "url", scheme+"://"+a.String()+apiserver.BasePaths[0], "also", apiserver.BasePaths[1])
			})
		},
		relay.Run,
		proj.Run,
		func(ctx context.Context) error { return catalog.Run(ctx, bus.Executors, env.log) },
	}, nil
}

// newExecutor builds the executor; embedded says that the NATS server
// stops with it (wes dev).
func newExecutor(env *environment, cfg Config, bus *events.Bus, reg prometheus.Registerer, embedded bool) (*executor.Executor, error) {
	workDir := cfg.WorkDir
	if workDir == "" {
		workDir = filepath.Join(cfg.DataDir, "runs")
	}
	workDir, err := filepath.Abs(workDir)
	if err != nil {
		return nil, err
	}
	// An engine runs a workflow someone submitted: it must not read this
	// process's memory or environment (/proc/<pid>/environ holds its
	// settings, NATS credentials among them).
	if err := undumpable(); err != nil {
		env.log.Warn("cannot keep engines from reading this process's environment (prctl PR_SET_DUMPABLE)", "err", err)
	}
	prov, err := newProvider(cfg, env, workDir)
	if err != nil {
		return nil, err
	}
	var localOutputs bool
	switch cfg.OutputLocations {
	case "object":
	case "local":
		localOutputs = true
	default:
		return nil, fmt.Errorf("WES_OUTPUT_LOCATIONS %q: want object or local", cfg.OutputLocations)
	}
	ex := executor.New(executor.Config{
		ID: cfg.ExecutorID, Slots: cfg.ExecutorSlots, WorkDir: workDir,
		AckWait: cfg.AckWait.D(), ShutdownGrace: cfg.ShutdownGrace.D(), MaxAttempts: cfg.MaxAttempts, RetryFailures: cfg.RetryFailures,
		MaxHandBacks: cfg.MaxHandBacks, ReportTimeout: cfg.ReportTimeout.D(), MaxEventBytes: cfg.MaxEventBytes,
		RegistryInterval: cfg.ExecutorTTL.D() / 3, LogInterval: cfg.LogInterval.D(),
		MaxOutputBytes: cfg.MaxOutputBytes, LocalOutputLocations: localOutputs, KeepRunDirs: cfg.KeepRunDirs,
		QueueHandBacksAnew: embedded,
	}, bus, prov, reg, env.log)
	return ex, nil
}

// newAuthenticator picks the authenticator WES_AUTH_MODE names.
func newAuthenticator(ctx context.Context, env *environment, cfg Config) (apiserver.Authenticator, error) {
	if cfg.AuthMode != "none" && cfg.PublicURL == "" {
		env.log.Warn("WES_PUBLIC_URL is not set: the log, task and output URLs the API returns are built from each request's Host header, " +
			"which a caller chooses; clients send their credentials to them. Set WES_PUBLIC_URL to the address clients reach the API at.")
	}
	switch cfg.AuthMode {
	case "none":
		if host, _, err := net.SplitHostPort(cfg.ListenAddr); err != nil || !isLoopback(host) {
			env.log.Warn("!!! WES_AUTH_MODE=none and the API listens on a non-loopback address: ANYONE WHO CAN REACH " +
				cfg.ListenAddr + " CAN RUN WORKFLOWS AND SEE EVERY RUN. Set WES_AUTH_MODE=token.")
		}
		return apiserver.Anyone{}, nil
	case "token":
		if cfg.AuthTokensFile == "" {
			return nil, errors.New("WES_AUTH_MODE=token needs WES_AUTH_TOKENS_FILE")
		}
		return apiserver.NewTokenFile(cfg.AuthTokensFile)
	case "oidc":
		return apiserver.NewOIDC(ctx, apiserver.OIDCConfig{
			Issuer: cfg.OIDCIssuer, Audience: cfg.OIDCAudience, UserClaim: cfg.OIDCUserClaim,
			RolesClaim: cfg.OIDCRolesClaim, AdminRole: cfg.OIDCAdminRole, ClockSkew: cfg.OIDCClockSkew.D(),
		})
	}
	return nil, fmt.Errorf("WES_AUTH_MODE %q: want none, token or oidc", cfg.AuthMode)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// newProvider picks the backend DEFAULT_WES_PROVIDER names.
func newProvider(cfg Config, env *environment, workDir string) (providers.Provider, error) {
	switch strings.ToLower(cfg.Provider) {
	case "local":
		engineUser, err := engineCredential(cfg.EngineUser, workDir)
		if err != nil {
			return nil, err
		}
		engineUIDs, err := engineUIDs(cfg.EngineUIDs, workDir, cfg.ExecutorSlots, hostIDDatabases())
		if err != nil {
			return nil, err
		}
		return local.New(local.Config{
			CancelGrace: cfg.CancelGrace.D(), Cores: cfg.EngineCores, WaitDelay: cfg.EngineWaitDelay.D(),
			AllowLocalWorkflows: cfg.AllowLocalWorkflows, PATH: env.getenv("PATH"), Getenv: env.getenv,
			EngineUser: engineUser, EngineUIDs: engineUIDs,
		}, env.log), nil
	case "mock":
		return mock.New(), nil
	}
	return nil, fmt.Errorf("DEFAULT_WES_PROVIDER %q: want local or mock", cfg.Provider)
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "0.1.0-dev"
}

// newRegistry returns a metrics registry with the Go runtime and process
// collectors.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// serveOps serves /metrics, /healthz and /readyz for a process without the
// API (an executor).
func serveOps(ctx context.Context, env *environment, addr string, reg *prometheus.Registry, ready func() error) error {
	if addr == "" || addr == "off" { // an empty variable is its default
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return apiserver.Serve(ctx, addr, mux, env.log, func(a net.Addr) {
		env.log.Info("executor metrics and health listening", "url", "http://"+a.String()+"/metrics")
	})
}

// servePprof serves the runtime profiles on WES_PPROF_ADDR, when set.
func servePprof(ctx context.Context, env *environment) error {
	if env.cfg.PprofAddr == "" {
		return nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return apiserver.Serve(ctx, env.cfg.PprofAddr, mux, env.log, func(a net.Addr) {
		env.log.Info("pprof listening", "url", "http://"+a.String()+"/debug/pprof/")
	})
}

// processName names this process in leases: host and pid.
func processName() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}

// redactURLs hides the passwords of a comma-separated list of URLs, for logs.
func redactURLs(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}

package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Config is every setting of every subcommand, read once from the
// environment. The seed's names (DEFAULT_WES_PROVIDER,
// WORKFLOW_POLL_INTERVAL, WES_API_URL) keep working.
type Config struct {
	ListenAddr      string  `envconfig:"WES_LISTEN_ADDR" default:"127.0.0.1:5000" desc:"address the API listens on"`
	PublicURL       string  `envconfig:"WES_PUBLIC_URL" desc:"scheme://host[:port] clients reach the API at (default: the request's Host)"`
	DataDir         string  `envconfig:"WES_DATA_DIR" default:".wes" desc:"wes dev: directory for SQLite, embedded NATS data and run directories"`
	DatabaseURL     string  `envconfig:"WES_DATABASE_URL" desc:"postgres://… URL or SQLite path (wes dev default: $WES_DATA_DIR/wes.db)"`
	NATSURL         string  `envconfig:"WES_NATS_URL" default:"nats://127.0.0.1:4222" desc:"NATS server(s), comma-separated (ignored by wes dev, which embeds its own)"`
	NATSNamespace   string  `envconfig:"WES_NATS_NAMESPACE" default:"WES" desc:"prefix of every stream, subject and bucket"`
	NATSReplicas    int     `envconfig:"WES_NATS_REPLICAS" default:"1" desc:"replicas of streams and buckets (3 on a NATS cluster); the API's value is applied, other processes only create what is missing"`
	EventRetention  Seconds `envconfig:"WES_EVENT_RETENTION" default:"720h" desc:"how long run events stay in the events stream (the API's value is applied); a projector stopped for longer loses what expired"`
	ObjectRetention Seconds `envconfig:"WES_OBJECT_RETENTION" desc:"how long attachments, logs and outputs stay in the object store (unset: for ever; the API's value is applied); keep it above how long runs wait and run"`
	DevNATSPort     int     `envconfig:"WES_DEV_NATS_PORT" default:"0" desc:"wes dev: port of the embedded NATS server (0: any free port; never 4222)"`

	Provider            string  `envconfig:"DEFAULT_WES_PROVIDER" default:"local" desc:"executor backend: local (engines on PATH) or mock"`
	ExecutorSlots       int     `envconfig:"WES_EXECUTOR_SLOTS" default:"4" desc:"runs one executor executes at once"`
	ExecutorID          string  `envconfig:"WES_EXECUTOR_ID" desc:"executor name (default: hostname-pid)"`
	WorkDir             string  `envconfig:"WES_WORK_DIR" desc:"executor: directory of run directories (default: $WES_DATA_DIR/runs)"`
	AckWait             Seconds `envconfig:"WES_EXECUTOR_ACK_WAIT" default:"30s" desc:"executor: heartbeat deadline before a run is given to another executor (the same on every executor of an engine: one with another refuses to start)"`
	ShutdownGrace       Seconds `envconfig:"WES_EXECUTOR_SHUTDOWN_GRACE" default:"10s" desc:"executor: how long running runs may finish after SIGTERM before they are handed back"`
	ExecutorMetricsAddr string  `envconfig:"WES_EXECUTOR_METRICS_ADDR" default:"127.0.0.1:9464" desc:"executor: address of /metrics, /healthz and /readyz (off: none)"`
	ExecutorTTL         Seconds `envconfig:"WES_EXECUTOR_TTL" default:"30s" desc:"how long an executor stays listed in service-info without a heartbeat"`
	CancelGrace         Seconds `envconfig:"WES_CANCEL_GRACE" default:"20s" desc:"executor: how long an engine may take to stop after cancel before its processes are killed"`
	EngineCores         int     `envconfig:"WES_ENGINE_CORES" default:"1" desc:"executor: cores one run's engine may use (snakemake --cores, toil --maxCores)"`
	LogInterval         Seconds `envconfig:"WES_LOG_INTERVAL" default:"2s" desc:"executor: how often a running engine's stdout/stderr are copied to the object store"`
	OutputLocations     string  `envconfig:"WES_OUTPUT_LOCATIONS" default:"object" desc:"object: output files are stored and served by the API; local: outputs keep the engine's file paths"`
	KeepRunDirs         bool    `envconfig:"WES_KEEP_RUN_DIRS" default:"false" desc:"executor: keep a run's directory once the run is over (removed otherwise, unless WES_OUTPUT_LOCATIONS=local)"`
	MaxOutputBytes      int64   `envconfig:"WES_MAX_OUTPUT_BYTES" default:"1073741824" desc:"executor: most bytes of output files one run stores"`
	RetryFailures       bool    `envconfig:"WES_RETRY_FAILURES" default:"false" desc:"retry workflow failures (EXECUTOR_ERROR) of runs whose wes.retry_failures tag does not say otherwise"`
	MaxAttempts         int     `envconfig:"WES_MAX_ATTEMPTS" default:"3" desc:"attempts at a run whose failure is ours and retryable"`
	MaxHandBacks        int     `envconfig:"WES_MAX_HANDBACKS" default:"10" desc:"executor: deliveries beyond WES_MAX_ATTEMPTS a run may have (hand-backs by executors shutting down, deliveries that never started); after them, SYSTEM_ERROR"`
	ReportTimeout       Seconds `envconfig:"WES_EXECUTOR_REPORT_TIMEOUT" default:"70s" desc:"executor: how long an attempt's outcome may take to reach NATS before the run is handed back (keep it above WES_EXECUTOR_SHUTDOWN_GRACE)"`
	MaxEventBytes       int     `envconfig:"WES_MAX_EVENT_BYTES" default:"0" desc:"executor: largest run event (0: the NATS max_payload); larger outputs objects are replaced by a note"`
	EngineUser          string  `envconfig:"WES_ENGINE_USER" desc:"executor: run engines as this user (name, or uid:gid; the executor runs as root), so that a workflow cannot read the executor's credentials; runs share it, and can reach each other's files (WES_ENGINE_UIDS keeps them apart); default: the executor's own user"`
	EngineUIDs          string  `envconfig:"WES_ENGINE_UIDS" desc:"executor: run each run's engine as a user of its own, uid = gid from this range, such as 200000-200999 (ids no account or group holds, at least WES_EXECUTOR_SLOTS; each executor of a host its own range; the executor runs as root), so that a workflow can read neither the executor's credentials nor other runs' files; instead of WES_ENGINE_USER"`
	EngineWaitDelay     Seconds `envconfig:"WES_ENGINE_WAIT_DELAY" default:"5s" desc:"executor: how long an engine's output is still read after it exits (a leftover process holding it open)"`
	RequeueAfter        Seconds `envconfig:"WES_REQUEUE_AFTER" default:"2m" desc:"API: how long a QUEUED or PREEMPTED run may go unchanged before the reconciler checks that the queue still holds it (and queues it again if not)"`
	PollInterval        Seconds `envconfig:"WORKFLOW_POLL_INTERVAL" default:"10" desc:"outbox sweep interval (seconds, or a duration such as 500ms)"`

	MaxRequestBytes     int64 `envconfig:"WES_MAX_REQUEST_BYTES" default:"268435456" desc:"largest POST /runs body, attachments included"`
	MaxFieldBytes       int64 `envconfig:"WES_MAX_FIELD_BYTES" default:"1048576" desc:"largest form field or JSON body"`
	MaxAttachments      int   `envconfig:"WES_MAX_ATTACHMENTS" default:"1000" desc:"most workflow_attachment parts in one submission"`
	MaxJSONDepth        int   `envconfig:"WES_MAX_JSON_DEPTH" default:"64" desc:"deepest JSON nesting accepted in a request"`
	MaxTags             int   `envconfig:"WES_MAX_TAGS" default:"64" desc:"most tags on one run"`
	DefaultPageSize     int   `envconfig:"WES_DEFAULT_PAGE_SIZE" default:"50" desc:"page size when a list request gives none"`
	MaxPageSize         int   `envconfig:"WES_MAX_PAGE_SIZE" default:"1000" desc:"largest page a list answers with (a larger page_size gets this many)"`
	AllowLocalWorkflows bool  `envconfig:"WES_ALLOW_LOCAL_WORKFLOWS" default:"false" desc:"accept file:// and absolute-path workflow URLs"`

	TLSCert        string  `envconfig:"WES_TLS_CERT" desc:"API: PEM certificate file; with WES_TLS_KEY the API answers HTTPS"`
	TLSKey         string  `envconfig:"WES_TLS_KEY" desc:"API: PEM private key file"`
	NATSCreds      string  `envconfig:"WES_NATS_CREDS" desc:"NATS user credentials file (.creds); a user and password may also be given in WES_NATS_URL"`
	NATSCA         string  `envconfig:"WES_NATS_CA" desc:"PEM CA file to verify the NATS servers' TLS certificates"`
	NATSCert       string  `envconfig:"WES_NATS_CERT" desc:"PEM client certificate for NATS mutual TLS (with WES_NATS_KEY)"`
	NATSKey        string  `envconfig:"WES_NATS_KEY" desc:"PEM client key for NATS mutual TLS"`
	AuthMode       string  `envconfig:"WES_AUTH_MODE" default:"none" desc:"none (everyone is admin; for a laptop), token (bearer tokens from WES_AUTH_TOKENS_FILE) or oidc (JWTs of WES_OIDC_ISSUER)"`
	AuthTokensFile string  `envconfig:"WES_AUTH_TOKENS_FILE" desc:"token mode: file of 'TOKEN USER [admin]' lines, re-read when it changes"`
	OIDCIssuer     string  `envconfig:"WES_OIDC_ISSUER" desc:"oidc mode: the OpenID provider's issuer URL"`
	OIDCAudience   string  `envconfig:"WES_OIDC_AUDIENCE" desc:"oidc mode: the aud the tokens must carry"`
	OIDCUserClaim  string  `envconfig:"WES_OIDC_USER_CLAIM" default:"sub" desc:"oidc mode: the claim that names the user"`
	OIDCRolesClaim string  `envconfig:"WES_OIDC_ROLES_CLAIM" default:"roles" desc:"oidc mode: the claim that lists roles"`
	OIDCAdminRole  string  `envconfig:"WES_OIDC_ADMIN_ROLE" default:"admin" desc:"oidc mode: the role that sees every run"`
	OIDCClockSkew  Seconds `envconfig:"WES_OIDC_CLOCK_SKEW" default:"60s" desc:"oidc mode: tolerated clock skew on expiry"`

	ServiceID           string `envconfig:"WES_SERVICE_ID" default:"org.ga4gh.wes" desc:"service-info id"`
	ServiceName         string `envconfig:"WES_SERVICE_NAME" default:"wes" desc:"service-info name"`
	OrganizationName    string `envconfig:"WES_ORGANIZATION_NAME" default:"wes" desc:"service-info organization.name"`
	OrganizationURL     string `envconfig:"WES_ORGANIZATION_URL" default:"https://github.com/wes-dev/wes" desc:"service-info organization.url"`
	Environment         string `envconfig:"WES_ENVIRONMENT" default:"dev" desc:"service-info environment"`
	AuthInstructionsURL string `envconfig:"WES_AUTH_INSTRUCTIONS_URL" default:"https://github.com/wes-dev/wes#authentication" desc:"service-info auth_instructions_url"`

	AlertWebhookURL string   `envconfig:"WES_ALERT_WEBHOOK_URL" desc:"alerting: POST a JSON alert here when a run fails"`
	AlertSlackURL   string   `envconfig:"WES_ALERT_SLACK_URL" desc:"alerting: Slack-compatible incoming webhook (a JSON text payload)"`
	CallbackAllow   []string `envconfig:"WES_CALLBACK_ALLOW" desc:"URL prefixes (comma-separated) a run may name in its wes.callback_url tag to receive its state changes; empty: none"`
	AlertTags       []string `envconfig:"WES_ALERT_TAGS" desc:"alerting: comma-separated key=value tags a run must carry to raise an alert (default: any run)"`
	AlertStates     []string `envconfig:"WES_ALERT_STATES" default:"EXECUTOR_ERROR,SYSTEM_ERROR" desc:"alerting: comma-separated final states that raise an alert"`

	APIURL    string `envconfig:"WES_API_URL" default:"http://localhost:5000/api/ga4gh/wes/v1" desc:"client: the WES API to talk to"`
	PprofAddr string `envconfig:"WES_PPROF_ADDR" desc:"api, executor: serve net/http/pprof on this address, e.g. 127.0.0.1:6060 (empty: off; never expose it)"`
	LogFormat string `envconfig:"WES_LOG_FORMAT" default:"text" desc:"text or json"`
	LogLevel  string `envconfig:"WES_LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
}

// Seconds is a duration given as a Go duration ("500ms", "2m") or, as the
// seed's WORKFLOW_POLL_INTERVAL=5, as a number of seconds.
type Seconds time.Duration

// Decode implements envconfig.Decoder.
func (s *Seconds) Decode(v string) error {
	v = strings.TrimSpace(v)
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		*s = Seconds(n * float64(time.Second))
	} else if d, err := time.ParseDuration(v); err == nil {
		*s = Seconds(d)
	} else {
		return fmt.Errorf("%q is neither a number of seconds nor a duration such as 500ms", v)
	}
	if *s <= 0 {
		return fmt.Errorf("%q must be positive", v)
	}
	return nil
}

// D returns the duration.
func (s Seconds) D() time.Duration { return time.Duration(s) }

package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/wes-dev/wes/events"
	"github.com/wes-dev/wes/models/modelstest"
)

// EnvNATSURL points the suite at a NATS JetStream server.
const EnvNATSURL = "WES_TEST_NATS_URL"

var wesBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wes-integration-")
	if err != nil {
		panic(err)
	}
	wesBin = filepath.Join(dir, "wes")
	build := exec.Command("go", "build", "-o", wesBin, "../cmd/wes")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build wes:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// databaseURL returns a fresh database: PostgreSQL when one is available,
// else a SQLite file (logged loudly).
func databaseURL(t testing.TB) string {
	t.Helper()
	if base := os.Getenv(modelstest.EnvDatabaseURL); base != "" {
		return modelstest.NewPostgresDatabase(t, base)
	}
	if url, ok := tryContainer(t, "postgres"); ok {
		return modelstest.NewPostgresDatabase(t, url)
	}
	t.Logf("!!! %s is not set and no Docker engine answers: this test runs on SQLite, NOT PostgreSQL", modelstest.EnvDatabaseURL)
	return filepath.Join(t.TempDir(), "wes.db")
}

// natsURL returns a NATS JetStream server for the test and a namespace of
// its own on it (streams and buckets are removed when the test ends).
func natsURL(t testing.TB) (url, namespace string) {
	t.Helper()
	namespace = "T" + randomHex(5)
	url = os.Getenv(EnvNATSURL)
	if url == "" {
		if u, ok := tryContainer(t, "nats"); ok {
			url = u
		}
	}
	if url == "" {
		t.Logf("!!! %s is not set and no Docker engine answers: this test runs on an embedded NATS server", EnvNATSURL)
		ns := startNATS(t, 0, t.TempDir())
		url = ns.URL()
	}
	t.Cleanup(func() { deleteNamespace(t, url, namespace) })
	return url, namespace
}

var containers struct {
	sync.Mutex
	urls map[string]string
	err  map[string]error
}

// tryContainer starts (once per test binary) a PostgreSQL or NATS container
// when a Docker engine answers.
func tryContainer(t testing.TB, kind string) (string, bool) {
	containers.Lock()
	defer containers.Unlock()
	if containers.urls == nil {
		containers.urls, containers.err = map[string]string{}, map[string]error{}
	}
	if u, ok := containers.urls[kind]; ok {
		return u, true
	}
	if err, ok := containers.err[kind]; ok {
		t.Logf("no %s container: %v", kind, err)
		return "", false
	}
	url, err := startContainer(kind)
	if err != nil {
		containers.err[kind] = err
		t.Logf("no %s container: %v", kind, err)
		return "", false
	}
	containers.urls[kind] = url
	return url, true
}

func startContainer(kind string) (url string, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("docker: %v", r)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req := testcontainers.ContainerRequest{}
	switch kind {
	case "postgres":
		req = testcontainers.ContainerRequest{
			Image: "postgres:16-alpine", ExposedPorts: []string{"5432/tcp"},
			Env:        map[string]string{"POSTGRES_PASSWORD": "postgres"},
			WaitingFor: wait.ForLog("database system is ready to accept connections").WithOccurrence(2),
		}
	case "nats":
		req = testcontainers.ContainerRequest{
			Image: "nats:2.10", ExposedPorts: []string{"4222/tcp"}, Cmd: []string{"-js"},
			WaitingFor: wait.ForListeningPort("4222/tcp"),
		}
	}
	c, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{ContainerRequest: req, Started: true})
	if err != nil {
		return "", err
	}
	host, err := c.Host(ctx)
	if err != nil {
		return "", err
	}
	port, err := c.MappedPort(ctx, req.ExposedPorts[0])
	if err != nil {
		return "", err
	}
	if kind == "postgres" {
		return fmt.Sprintf("postgres://postgres:postgres@%s:%s/postgres?sslmode=disable", host, port.Port()), nil
	}
	return fmt.Sprintf("nats://%s:%s", host, port.Port()), nil
}

// jetStream connects to url for a test's own look at the namespace's
// streams.
func jetStream(t *testing.T, url, namespace string) (jetstream.JetStream, events.Names) {
	t.Helper()
	nc, err := nats.Connect(url)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	names, err := events.NewNames(namespace)
	require.NoError(t, err)
	return js, names
}

func deleteNamespace(t testing.TB, url, namespace string) {
	nc, err := nats.Connect(url, nats.Timeout(2*time.Second))
	if err != nil {
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	names, _ := events.NewNames(namespace)
	for _, s := range []string{names.RunsStream(), names.EventsStream(), names.DeadLetterStream(),
		"KV_" + names.CancelBucket(), "KV_" + names.ExecutorsBucket(), "KV_" + names.LeasesBucket(), "OBJ_" + names.ObjectsBucket()} {
		_ = js.DeleteStream(ctx, s)
	}
}

func startNATS(t testing.TB, port int, dir string) *events.Embedded {
	t.Helper()
	ns, err := events.StartEmbedded("127.0.0.1", port, dir)
	require.NoError(t, err)
	t.Cleanup(ns.Shutdown)
	return ns
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// env is the configuration shared by the processes of one test.
type env struct {
	t       testing.TB
	vars    map[string]string
	apiBase string
}

// newEnv prepares a database, a NATS namespace and the variables every
// process of the test gets; it migrates the database.
func newEnv(t testing.TB, natsURL, namespace string) *env {
	t.Helper()
	port := freePort(t)
	e := &env{t: t, vars: map[string]string{
		"WES_DATABASE_URL":            databaseURL(t),
		"WES_NATS_URL":                natsURL,
		"WES_NATS_NAMESPACE":          namespace,
		"WES_LISTEN_ADDR":             "127.0.0.1:" + strconv.Itoa(port),
		"DEFAULT_WES_PROVIDER":        "mock",
		"WES_DATA_DIR":                t.TempDir(),
		"WORKFLOW_POLL_INTERVAL":      "1",
		"WES_EXECUTOR_ACK_WAIT":       "6s",
		"WES_EXECUTOR_TTL":            "15s",
		"WES_EXECUTOR_SHUTDOWN_GRACE": "1s",
		"WES_LOG_LEVEL":               "debug",
		"WES_EXECUTOR_METRICS_ADDR":   "127.0.0.1:0",
	}}
	e.apiBase = "http://127.0.0.1:" + strconv.Itoa(port) + "/ga4gh/wes/v1"
	out, err := e.command(nil, "migrate", "up").CombinedOutput()
	require.NoError(t, err, "wes migrate up: %s", out)
	return e
}

func (e *env) command(extra map[string]string, args ...string) *exec.Cmd {
	cmd := exec.Command(wesBin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WES_") && !strings.HasPrefix(kv, "DEFAULT_WES_") && !strings.HasPrefix(kv, "WORKFLOW_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	for k, v := range e.vars {
		if _, ok := extra[k]; !ok {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	for k, v := range extra {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return cmd
}

// proc is a running wes process.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  *bytes.Buffer
	done chan error
	mu   *sync.Mutex
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// start runs `wes args…`; its output is shown if the test fails, and it is
// stopped (SIGTERM) when the test ends.
func (e *env) start(name string, extra map[string]string, args ...string) *proc {
	e.t.Helper()
	p := &proc{name: name, cmd: e.command(extra, args...), log: &bytes.Buffer{}, done: make(chan error, 1), mu: &sync.Mutex{}}
	p.cmd.Stdout = lockedWriter{p.mu, p.log}
	p.cmd.Stderr = lockedWriter{p.mu, p.log}
	require.NoError(e.t, p.cmd.Start())
	go func() { p.done <- p.cmd.Wait() }()
	e.t.Cleanup(func() {
		p.stop(e.t)
		if e.t.Failed() {
			e.t.Logf("---- output of %s ----\n%s", p.name, p.output())
		}
	})
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// stop sends SIGTERM and waits for the exit; it returns the exit error.
func (p *proc) stop(t testing.TB) error {
	if p.cmd.ProcessState != nil {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		t.Errorf("%s did not stop within 30s of SIGTERM", p.name)
		return <-p.done
	}
}

// startAPI starts `wes api` and waits until it answers.
func (e *env) startAPI() *proc {
	e.t.Helper()
	p := e.start("api", nil, "api")
	e.waitReady(p)
	return p
}

func (e *env) waitReady(p *proc) {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(e.apiBase + "/service-info")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case err := <-p.done:
			p.done <- err
			e.t.Fatalf("%s exited: %v\n%s", p.name, err, p.output())
		case <-time.After(100 * time.Millisecond):
		}
	}
	e.t.Fatalf("%s did not answer within 20s\n%s", p.name, p.output())
}

// waitEngines waits until service-info lists n live executors' engine.
func (e *env) waitEngine(engine string) {
	e.t.Helper()
	require.Eventually(e.t, func() bool {
		var info struct {
			WorkflowEngineVersions map[string]any `json:"workflow_engine_versions"`
		}
		e.getJSON("/service-info", &info)
		_, ok := info.WorkflowEngineVersions[engine]
		return ok
	}, 20*time.Second, 100*time.Millisecond, "engine %s never listed in service-info", engine)
}

func (e *env) getJSON(path string, v any) int {
	e.t.Helper()
	resp, err := http.Get(e.apiBase + path)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(e.t, err)
	if v != nil {
		require.NoError(e.t, json.Unmarshal(body, v), "GET %s: %s", path, body)
	}
	return resp.StatusCode
}

func (e *env) post(path, contentType string, body io.Reader, v any) int {
	e.t.Helper()
	resp, err := http.Post(e.apiBase+path, contentType, body)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(e.t, err)
	if v != nil {
		require.NoError(e.t, json.Unmarshal(data, v), "POST %s: %s", path, data)
	}
	return resp.StatusCode
}

type errorResponse struct {
	Msg        string `json:"msg"`
	StatusCode int    `json:"status_code"`
}

// submit posts a mock run as JSON and returns its id.
func (e *env) submit(params map[string]string, tags map[string]string) string {
	e.t.Helper()
	body, err := json.Marshal(map[string]any{
		"workflow_params":            map[string]any{"outputUri": "s3://my-bucket/outputs/"},
		"workflow_type":              "CWL",
		"workflow_type_version":      "1.0",
		"workflow_url":               "https://example.com/workflows/hello-world.cwl",
		"workflow_engine_parameters": params,
		"tags":                       tags,
	})
	require.NoError(e.t, err)
	var out struct {
		RunID string `json:"run_id"`
	}
	status := e.post("/runs", "application/json", bytes.NewReader(body), &out)
	require.Equal(e.t, http.StatusOK, status)
	require.NotEmpty(e.t, out.RunID)
	return out.RunID
}

// submitMultipart posts a run per the specification, with attachments.
func (e *env) submitMultipart(fields map[string]string, files map[string]string) (int, []byte) {
	e.t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, v := range fields {
		require.NoError(e.t, mw.WriteField(k, v))
	}
	for name, content := range files {
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="workflow_attachment"; filename=%q`, name))
		w, err := mw.CreatePart(h)
		require.NoError(e.t, err)
		_, _ = io.WriteString(w, content)
	}
	require.NoError(e.t, mw.Close())
	resp, err := http.Post(e.apiBase+"/runs", mw.FormDataContentType(), &buf)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

type runLog struct {
	RunID   string `json:"run_id"`
	State   string `json:"state"`
	Request struct {
		WorkflowURL              string             `json:"workflow_url"`
		Tags                     map[string]string  `json:"tags"`
		WorkflowEngineParameters map[string]*string `json:"workflow_engine_parameters"`
	} `json:"request"`
	RunLog struct {
		Name       string   `json:"name"`
		Cmd        []string `json:"cmd"`
		StartTime  string   `json:"start_time"`
		EndTime    string   `json:"end_time"`
		Stdout     string   `json:"stdout"`
		Stderr     string   `json:"stderr"`
		ExitCode   *int     `json:"exit_code"`
		SystemLogs []string `json:"system_logs"`
	} `json:"run_log"`
	TaskLogsURL string         `json:"task_logs_url"`
	Outputs     map[string]any `json:"outputs"`
}

func (e *env) run(id string) runLog {
	e.t.Helper()
	var rl runLog
	require.Equal(e.t, http.StatusOK, e.getJSON("/runs/"+id, &rl))
	return rl
}

func (e *env) state(id string) string {
	e.t.Helper()
	var st struct{ State string }
	require.Equal(e.t, http.StatusOK, e.getJSON("/runs/"+id+"/status", &st))
	return st.State
}

// waitState polls the status until it is one of want and returns it; it
// records every state seen on the way.
// finalStates are the states a run ends in.
var finalStates = []string{"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}

// waitComplete waits for run id to end, and requires it COMPLETE: a run
// that fails fails the test at once, saying how it went.
func (e *env) waitComplete(id string, timeout time.Duration, why string) {
	e.t.Helper()
	st, seen := e.waitState(id, timeout, finalStates...)
	require.Equal(e.t, "COMPLETE", st, "%s; states seen: %v", why, seen)
}

func (e *env) waitState(id string, timeout time.Duration, want ...string) (string, []string) {
	e.t.Helper()
	var seen []string
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		st := e.state(id)
		if len(seen) == 0 || seen[len(seen)-1] != st {
			seen = append(seen, st)
		}
		if slices.Contains(want, st) {
			return st, seen
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.t.Fatalf("run %s did not reach %v within %s; states seen: %v", id, want, timeout, seen)
	return "", seen
}

// mockPipeline starts an API and an executor of the mock engine on a
// namespace of their own, and waits until the API offers the engine.
func mockPipeline(t *testing.T) *env {
	t.Helper()
	url, ns := natsURL(t)
	e := newEnv(t, url, ns)
	e.startAPI()
	e.start("executor", nil, "executor")
	e.waitEngine("mock")
	return e
}

// getRange asks u for the byte ranges rng ("0-4", "-5", …) and returns the
// status and the body.
func getRange(t *testing.T, u, rng string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	require.NoError(t, err)
	req.Header.Set("Range", "bytes="+rng)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, body
}

package integration

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// tcpProxy forwards a local port to target and can cut every connection
// and refuse new ones, as a database host that went away does.
type tcpProxy struct {
	t      *testing.T
	addr   string
	target string
	mu     sync.Mutex
	ln     net.Listener
	conns  []net.Conn
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	p := &tcpProxy{t: t, addr: "127.0.0.1:" + itoa(freePort(t)), target: target}
	p.up()
	t.Cleanup(p.down)
	return p
}

func (p *tcpProxy) up() {
	ln, err := net.Listen("tcp", p.addr)
	require.NoError(p.t, err)
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(u, c); u.Close() }()
			go func() { _, _ = io.Copy(c, u); c.Close() }()
		}
	}()
}

func (p *tcpProxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// With the database unreachable, a submission fails fast with 503 and a
// clear message and leaves nothing behind; once it is back, submissions and
// the projector go on.
func TestDatabaseDown(t *testing.T) {
	t.Parallel()
	natsURL, ns := natsURL(t)
	e := newEnv(t, natsURL, ns)
	u, err := url.Parse(e.vars["WES_DATABASE_URL"])
	if err != nil || u.Scheme != "postgres" {
		t.Skip("SKIPPED: needs PostgreSQL (WES_TEST_DATABASE_URL); .ci/run sets it")
	}
	proxy := newTCPProxy(t, u.Host)
	u.Host = proxy.addr
	e.vars["WES_DATABASE_URL"] = u.String()
	e.startAPI()
	e.start("executor", nil, "executor")
	e.waitEngine("mock")
	before := e.submit(map[string]string{"duration": "2s"}, nil)
	e.waitState(before, 20*time.Second, "RUNNING")

	proxy.down()
	body := `{"workflow_type":"CWL","workflow_type_version":"1.0","workflow_url":"https://x/wf.cwl","workflow_engine_parameters":{"duration":"10ms"}}`
	start := time.Now()
	var er errorResponse
	status := e.post("/runs", "application/json", bytes.NewBufferString(body), &er)
	require.Equal(t, http.StatusServiceUnavailable, status, "msg %q", er.Msg)
	require.Less(t, time.Since(start), 10*time.Second, "fails fast, never hangs")
	require.Contains(t, er.Msg, "database is unavailable")

	time.Sleep(3 * time.Second) // the running run ends meanwhile; its events wait in NATS
	proxy.up()
	st, seen := e.waitState(before, 30*time.Second, "COMPLETE", "SYSTEM_ERROR")
	require.Equal(t, "COMPLETE", st, "the projector caught up: %v", seen)
	after := e.submit(map[string]string{"duration": "10ms"}, nil)
	e.waitComplete(after, 20*time.Second, "a run submitted after the outage")

	var list struct {
		Runs []struct {
			RunID string `json:"run_id"`
		} `json:"runs"`
	}
	require.Equal(t, http.StatusOK, e.getJSON("/runs", &list))
	require.Len(t, list.Runs, 2, "the refused submission left nothing behind")
}

//go:build faults

package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// natsCluster is a 3-node NATS JetStream cluster of real nats-server
// processes on loopback ports, with its configuration and data in a
// directory of the test. Any node can be stopped and started again.
type natsCluster struct {
	t     testing.TB
	bin   string
	nodes []*natsNode
}

type natsNode struct {
	name       string
	conf       string
	clientPort int
	httpPort   int
	proc       *osProc
}

// startNATSCluster starts three nodes and waits until JetStream has a meta
// leader and every node is healthy. It skips, loudly, without nats-server.
func startNATSCluster(t testing.TB, dir, logDir string) *natsCluster {
	t.Helper()
	bin := "/usr/sbin/nats-server"
	if _, err := os.Stat(bin); err != nil {
		if bin, err = exec.LookPath("nats-server"); err != nil {
			t.Skip("SKIPPED: nats-server is not installed (apt-get install nats-server); .ci/run installs it")
		}
	}
	c := &natsCluster{t: t, bin: bin}
	ports := make([]int, 9)
	for i := range ports {
		// The OS never hands out 4222 as an ephemeral port, but say so.
		for ports[i] = freePort(t); ports[i] == 4222; ports[i] = freePort(t) {
		}
	}
	for i := range 3 {
		n := &natsNode{
			name:       fmt.Sprintf("faults-nats-%d", i+1),
			clientPort: ports[i], httpPort: ports[3+i],
		}
		var routes []string
		for j := range 3 {
			if j != i {
				routes = append(routes, fmt.Sprintf("    nats-route://127.0.0.1:%d", ports[6+j]))
			}
		}
		n.conf = filepath.Join(dir, n.name+".conf")
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
jetstream {
  store_dir: %q
}
cluster {
  name: faults
  listen: 127.0.0.1:%d
  routes: [
%s
  ]
}
`, n.name, n.clientPort, n.httpPort, filepath.Join(dir, n.name), ports[6+i], strings.Join(routes, "\n"))
		if err := os.WriteFile(n.conf, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		n.proc = newOSProc(t, n.name, filepath.Join(logDir, n.name+".log"), func() *exec.Cmd {
			return exec.Command(bin, "-c", n.conf)
		})
		c.nodes = append(c.nodes, n)
	}
	for _, n := range c.nodes {
		n.proc.start()
	}
	if err := c.waitHealthy(60 * time.Second); err != nil {
		t.Fatalf("NATS cluster: %v", err)
	}
	return c
}

// URL lists the client URLs of every node, as WES_NATS_URL takes them.
func (c *natsCluster) URL() string {
	var urls []string
	for _, n := range c.nodes {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", n.clientPort))
	}
	return strings.Join(urls, ",")
}

// waitHealthy waits until every node answers /healthz and one of them
// reports a JetStream meta leader.
func (c *natsCluster) waitHealthy(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if last = c.healthy(); last == nil {
			return nil
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("not healthy after %s: %w", timeout, last)
}

func (c *natsCluster) healthy() error {
	leader := false
	for _, n := range c.nodes {
		base := fmt.Sprintf("http://127.0.0.1:%d", n.httpPort)
		if _, err := httpGet(base + "/healthz"); err != nil {
			return fmt.Errorf("%s: %w", n.name, err)
		}
		body, err := httpGet(base + "/jsz")
		if err != nil {
			return fmt.Errorf("%s: %w", n.name, err)
		}
		var jsz struct {
			MetaCluster struct {
				Leader string `json:"leader"`
			} `json:"meta_cluster"`
		}
		if json.Unmarshal(body, &jsz) == nil && jsz.MetaCluster.Leader != "" {
			leader = true
		}
	}
	if !leader {
		return fmt.Errorf("no JetStream meta leader yet")
	}
	return nil
}

func httpGet(url string) ([]byte, error) {
	client := http.Client{Timeout: 3 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return body, fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// osProc is a process that can be signalled, killed and started again; its
// output (every incarnation) goes to one log file.
type osProc struct {
	t       testing.TB
	name    string
	logPath string
	build   func() *exec.Cmd

	mu          sync.Mutex
	cmd         *exec.Cmd
	done        chan struct{}
	incarnation int
}

func newOSProc(t testing.TB, name, logPath string, build func() *exec.Cmd) *osProc {
	p := &osProc{t: t, name: name, logPath: logPath, build: build}
	t.Cleanup(p.shutdown)
	return p
}

// start starts a new incarnation; the previous one must have exited.
func (p *osProc) start() {
	p.t.Helper()
	log, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.incarnation++
	fmt.Fprintf(log, "===== %s incarnation %d started %s\n", p.name, p.incarnation, time.Now().Format(time.RFC3339Nano))
	cmd := p.build()
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(log, "===== %s incarnation exited %s: %v\n", p.name, time.Now().Format(time.RFC3339Nano), err)
		log.Close()
		close(done)
	}()
	p.cmd, p.done = cmd, done
}

// pid is the process id of the current incarnation.
func (p *osProc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

// signal sends sig to the current incarnation.
func (p *osProc) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Signal(sig)
}

// wait waits up to timeout for the current incarnation to exit.
func (p *osProc) wait(timeout time.Duration) bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}

func (p *osProc) exited() bool { return p.wait(0) }

// stop sends sig and waits for the exit; past timeout it kills the process
// and reports false.
func (p *osProc) stop(sig syscall.Signal, timeout time.Duration) bool {
	_ = p.signal(syscall.SIGCONT)
	_ = p.signal(sig)
	if p.wait(timeout) {
		return true
	}
	_ = p.signal(syscall.SIGKILL)
	p.wait(10 * time.Second)
	return false
}

func (p *osProc) shutdown() {
	p.mu.Lock()
	started := p.cmd != nil
	p.mu.Unlock()
	if started && !p.exited() && !p.stop(syscall.SIGTERM, 30*time.Second) {
		p.t.Errorf("%s did not stop within 30s of SIGTERM", p.name)
	}
}

// tail returns the last n lines of the process's log.
func (p *osProc) tail(n int) string {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// wesProc starts `wes args…` of env e with extra variables, which build may
// change between incarnations (a restarted executor gets a new id).
func (e *env) wesProc(name, logDir string, extra func(incarnation int) map[string]string, args ...string) *osProc {
	var p *osProc
	p = newOSProc(e.t, name, filepath.Join(logDir, name+".log"), func() *exec.Cmd {
		return e.command(extra(p.incarnation), args...)
	})
	return p
}

func fixed(vars map[string]string) func(int) map[string]string {
	return func(int) map[string]string { return vars }
}

// waitAnswers waits until base answers service-info with 200.
func waitAnswers(p *osProc, base string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, err := httpGet(base + "/service-info"); err == nil {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("%s exited:\n%s", p.name, p.tail(30))
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s did not answer within %s:\n%s", p.name, timeout, p.tail(30))
}

func atoiOr(s string, def int) int {
	if n, err := strconv.Atoi(s); err == nil {
		return n
	}
	return def
}

package integration

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// TestNATSPermissions runs the API and an executor as the least-privilege
// users of deployments/nats/permissions.conf, on a nats-server of its own:
// runs complete and are canceled, a run handed back by an executor that
// shuts down is read back by the next one (its history), an attempt listens
// for a takeover, an executor with another ack wait reads the registry (and
// refuses to start), and the server reports no permissions violation.
func TestNATSPermissions(t *testing.T) {
	t.Parallel()
	bin := "/usr/sbin/nats-server"
	if _, err := os.Stat(bin); err != nil {
		if bin, err = exec.LookPath("nats-server"); err != nil {
			t.Skip("SKIPPED: nats-server is not installed (apt-get install nats-server); .ci/run installs it")
		}
	}
	dir := t.TempDir()
	perms, err := os.ReadFile("../deployments/nats/permissions.conf")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "permissions.conf"), perms, 0o600))
	port := freePort(t)
	conf := fmt.Sprintf("listen: 127.0.0.1:%d\njetstream { store_dir: %q }\ninclude ./permissions.conf\n", port, filepath.Join(dir, "data"))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "nats.conf"), []byte(conf), 0o600))
	logPath := filepath.Join(dir, "nats.log")
	logFile, err := os.Create(logPath)
	require.NoError(t, err)
	srv := exec.Command(bin, "-c", filepath.Join(dir, "nats.conf"))
	srv.Env = append(os.Environ(), "WES_NATS_API_PASSWORD=api-secret", "WES_NATS_EXECUTOR_PASSWORD=executor-secret")
	srv.Stdout, srv.Stderr = logFile, logFile
	require.NoError(t, srv.Start())
	t.Cleanup(func() {
		_ = srv.Process.Kill()
		_ = srv.Wait()
		logFile.Close()
	})
	url := func(user, password string) string {
		return fmt.Sprintf("nats://%s:%s@127.0.0.1:%d", user, password, port)
	}
	require.Eventually(t, func() bool { return portOpen(port) }, 10*time.Second, 50*time.Millisecond, "nats-server did not start")

	// The file names the default namespace's streams and subjects.
	e := newEnv(t, url("wes_api", "api-secret"), "WES")
	e.vars["WES_EXECUTOR_ACK_WAIT"] = "4s" // an attempt of 6 s listens for a takeover
	e.vars["WES_REQUEUE_AFTER"] = "3s"     // the reconciler looks the handed-back run up
	e.startAPI()
	executor := url("wes_executor", "executor-secret")
	first := e.start("executor-1", map[string]string{"WES_NATS_URL": executor}, "executor")
	e.waitEngine("mock")

	done := e.submit(map[string]string{"duration": "0s"}, nil)
	canceled := e.submit(map[string]string{"duration": "60s"}, nil)
	handedBack := e.submit(map[string]string{"duration": "6s"}, nil)
	e.waitComplete(done, 30*time.Second, "a run under the permissions")
	e.waitState(canceled, 30*time.Second, "RUNNING")
	require.Equal(t, http.StatusOK, e.post("/runs/"+canceled+"/cancel", "", nil, nil))
	st, _ := e.waitState(canceled, 30*time.Second, "CANCELED", "COMPLETE")
	require.Equal(t, "CANCELED", st)
	require.Contains(t, fetch(t, e.apiBase+"/runs/"+done+"/logs/stdout?follow=true"), "mock: done")
	// A read from an offset pulls the object's chunks from there.
	status, tail := getRange(t, e.apiBase+"/runs/"+done+"/logs/stdout", "-11")
	require.Equal(t, http.StatusPartialContent, status)
	require.Equal(t, "mock: done\n", string(tail))

	e.waitState(handedBack, 30*time.Second, "RUNNING")
	require.NoError(t, first.stop(t))
	e.start("executor-2", map[string]string{"WES_NATS_URL": executor}, "executor")
	st, _ = e.waitState(handedBack, 60*time.Second, "COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR")
	require.Equal(t, "COMPLETE", st)
	require.Contains(t, fmt.Sprint(e.run(handedBack).RunLog.SystemLogs), "handed back or never started", "the second executor read the run's history")

	// An executor with another ack wait reads the registry, and refuses
	// to start.
	mismatched := e.start("executor-3", map[string]string{"WES_NATS_URL": executor, "WES_EXECUTOR_ACK_WAIT": "9s"}, "executor")
	select {
	case err := <-mismatched.done:
		mismatched.done <- err
		require.Error(t, err, "an executor with another ack wait started")
	case <-time.After(30 * time.Second):
		t.Fatal("an executor with another ack wait did not stop")
	}
	require.Contains(t, mismatched.output(), "WES_EXECUTOR_ACK_WAIT=4s")

	logs, err := os.ReadFile(logPath)
	require.NoError(t, err)
	violations := regexp.MustCompile(`(?m)^.*Violation.*$`).FindAllString(string(logs), -1)
	require.Empty(t, violations, "permissions.conf lacks what wes asks for")

	// An executor may not queue runs (only the API does, having checked
	// who asks): a compromised one cannot inject work.
	nc, err := nats.Connect(executor)
	require.NoError(t, err)
	defer nc.Close()
	refused := make(chan error, 1)
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case refused <- err:
		default:
		}
	})
	require.NoError(t, nc.Publish("wes.runs.submitted.mock.forged", []byte(`{}`)))
	require.NoError(t, nc.Flush())
	select {
	case err := <-refused:
		require.ErrorContains(t, err, "Permissions Violation")
	case <-time.After(5 * time.Second):
		t.Fatal("an executor queued a run")
	}
}

// portOpen reports whether something listens on 127.0.0.1:port.
func portOpen(port int) bool {
	c, err := (&net.Dialer{Timeout: 200 * time.Millisecond}).Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return false
	}
	c.Close()
	return true
}

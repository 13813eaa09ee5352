package client

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Wait rides out a server that does not answer for a while, saying so, and
// gives up on one that does not answer for c.Unreachable.
func TestWaitRidesOutAndGivesUp(t *testing.T) {
	t.Parallel()
	var calls, failFor atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		if n <= failFor.Load() {
			http.Error(w, `{"msg":"restarting","status_code":503}`, http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if strings.HasSuffix(r.URL.Path, "/status") {
			_, _ = w.Write([]byte(`{"run_id":"r1","state":"COMPLETE"}`))
			return
		}
		_, _ = w.Write([]byte(`{"run_id":"r1","state":"COMPLETE"}`))
	}))
	t.Cleanup(srv.Close)
	c := New(srv.URL, "")
	var warnings []string
	c.Warn = func(msg string) { warnings = append(warnings, msg) }
	c.Unreachable = 2 * time.Second

	failFor.Store(3) // three 503s, then the run's state
	rl, err := c.Wait(context.Background(), "r1", 10*time.Millisecond, nil)
	require.NoError(t, err)
	require.Equal(t, "COMPLETE", rl.State)
	require.Len(t, warnings, 1, "one warning while the server does not answer: %q", warnings)
	require.Contains(t, warnings[0], "cannot read the state of run r1")

	calls.Store(0)
	failFor.Store(1 << 30) // never answers
	c.Unreachable = 200 * time.Millisecond
	start := time.Now()
	_, err = c.Wait(context.Background(), "r1", 10*time.Millisecond, nil)
	require.ErrorContains(t, err, "gave up waiting for run r1: the server has not answered for 200ms")
	require.Less(t, time.Since(start), 2*time.Second)
	require.Less(t, calls.Load(), int32(100), "the server is hammered: %d requests in 200ms", calls.Load())
}

// Strings a server or another user chose are printed without the control
// characters that would drive the terminal.
func TestPrintable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"plain run-1 ü 名前", "plain run-1 ü 名前"},
		{"\x1b[31mred", `\x1b[31mred`},
		{"evil\x1b]52;c;aGk=\aname", `evil\x1b]52;c;aGk=\aname`},
		{"tab\tnew\nline", `tab\tnew\nline`},
		{"csi\u009b2J", `csi\u009b2J`},
		{"txt.\u202eexe", `txt.\u202eexe`},
	} {
		require.Equal(t, tc.want, Printable(tc.in), "%q", tc.in)
	}
	e := &APIError{StatusCode: 400, Msg: "bad \x1b[2J"}
	require.Equal(t, `bad \x1b[2J (HTTP 400)`, e.Error())
}

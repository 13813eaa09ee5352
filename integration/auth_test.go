package integration

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const (
	aliceToken = "alice-token-0123456789"
	bobToken   = "bob-token-0123456789ab"
	rootToken  = "root-token-0123456789a"
	carolToken = "carol-token-0123456789"
)

// With WES_AUTH_MODE=token every user sees only their own runs; another
// user's run does not exist for them; an admin sees all; the token file is
// re-read without a restart.
func TestTokenAuthAndOwnership(t *testing.T) {
	t.Parallel()
	tokens := filepath.Join(t.TempDir(), "tokens")
	require.NoError(t, os.WriteFile(tokens, []byte("# token user roles\n"+
		aliceToken+" alice\n"+bobToken+" bob\n"+rootToken+" root admin\n"), 0o600))
	url, ns := natsURL(t)
	e := newEnv(t, url, ns)
	e.vars["WES_AUTH_MODE"] = "token"
	e.vars["WES_AUTH_TOKENS_FILE"] = tokens
	api := e.startAPI()
	e.start("executor", nil, "executor")
	e.waitEngine("mock")

	do := func(method, path, token string, body io.Reader) (int, http.Header, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, e.apiBase+path, body)
		require.NoError(t, err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, data
	}
	submit := func(token string) string {
		status, _, body := do(http.MethodPost, "/runs", token, bytes.NewBufferString(
			`{"workflow_type":"CWL","workflow_type_version":"1.0","workflow_url":"https://example.com/wf.cwl","workflow_engine_parameters":{"duration":"10ms"}}`))
		require.Equal(t, http.StatusOK, status, "%s", body)
		var out struct {
			RunID string `json:"run_id"`
		}
		require.NoError(t, json.Unmarshal(body, &out))
		return out.RunID
	}

	// No token, a bad token: 401 with WWW-Authenticate and an ErrorResponse.
	for _, token := range []string{"", "not-a-valid-token-at-all"} {
		status, hdr, body := do(http.MethodGet, "/runs", token, nil)
		require.Equal(t, http.StatusUnauthorized, status)
		require.Contains(t, hdr.Get("WWW-Authenticate"), "Bearer")
		var er errorResponse
		require.NoError(t, json.Unmarshal(body, &er))
		require.Equal(t, 401, er.StatusCode)
	}
	status, _, _ := do(http.MethodGet, "/service-info", "", nil)
	require.Equal(t, http.StatusOK, status, "service-info stays public")

	aliceRun := submit(aliceToken)
	bobRun := submit(bobToken)
	for _, id := range []string{aliceRun, bobRun} {
		require.Eventually(t, func() bool {
			_, _, body := do(http.MethodGet, "/runs/"+id+"/status", rootToken, nil)
			return bytes.Contains(body, []byte(`"COMPLETE"`))
		}, 20*time.Second, 100*time.Millisecond)
	}

	// Bob cannot see, follow, download or cancel Alice's run: it does not exist for him.
	for _, path := range []string{"", "/status", "/tasks", "/tasks/mock-1", "/logs/stdout", "/logs/stdout?follow=true", "/outputs"} {
		status, _, body := do(http.MethodGet, "/runs/"+aliceRun+path, bobToken, nil)
		require.Equal(t, http.StatusNotFound, status, "GET %s as bob: %s", path, body)
		status, _, body = do(http.MethodGet, "/runs/"+aliceRun+path, aliceToken, nil)
		require.Equal(t, http.StatusOK, status, "GET %s as alice: %s", path, body)
	}
	status, _, _ = do(http.MethodPost, "/runs/"+aliceRun+"/cancel", bobToken, nil)
	require.Equal(t, http.StatusNotFound, status)

	list := func(token string) []string {
		_, _, body := do(http.MethodGet, "/runs", token, nil)
		var page struct {
			Runs []struct {
				RunID string `json:"run_id"`
			} `json:"runs"`
		}
		require.NoError(t, json.Unmarshal(body, &page))
		var ids []string
		for _, r := range page.Runs {
			ids = append(ids, r.RunID)
		}
		return ids
	}
	require.Equal(t, []string{aliceRun}, list(aliceToken))
	require.Equal(t, []string{bobRun}, list(bobToken))
	require.ElementsMatch(t, []string{aliceRun, bobRun}, list(rootToken), "an admin sees every run")

	counts := func(token string) int {
		_, _, body := do(http.MethodGet, "/service-info", token, nil)
		var info struct {
			Counts map[string]int `json:"system_state_counts"`
		}
		require.NoError(t, json.Unmarshal(body, &info))
		return info.Counts["COMPLETE"]
	}
	require.Equal(t, 1, counts(aliceToken))
	require.Equal(t, 2, counts(rootToken))
	require.Equal(t, 0, counts(""))

	// A token added to the file works without a restart.
	status, _, _ = do(http.MethodGet, "/runs", carolToken, nil)
	require.Equal(t, http.StatusUnauthorized, status)
	f, err := os.OpenFile(tokens, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString(carolToken + " carol\n")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.Eventually(t, func() bool {
		status, _, _ := do(http.MethodGet, "/runs", carolToken, nil)
		return status == http.StatusOK
	}, 5*time.Second, 200*time.Millisecond)

	require.NotContains(t, api.output(), aliceToken, "tokens never appear in logs")
}

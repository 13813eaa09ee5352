package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestLoadConfig(t *testing.T) {
	t.Parallel()
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

	cfg, err := loadConfig(env(nil))
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:5000", cfg.ListenAddr, "defaults apply")
	require.Equal(t, 10*time.Second, cfg.PollInterval.D())
	require.Equal(t, "local", cfg.Provider)
	require.Equal(t, []string{"EXECUTOR_ERROR", "SYSTEM_ERROR"}, cfg.AlertStates)
	require.Equal(t, "http://localhost:5000/api/ga4gh/wes/v1", cfg.APIURL)

	cfg, err = loadConfig(env(map[string]string{
		"WORKFLOW_POLL_INTERVAL": "5", "DEFAULT_WES_PROVIDER": "mock", "WES_EXECUTOR_SLOTS": "7",
		"WES_ALLOW_LOCAL_WORKFLOWS": "true", "WES_ALERT_STATES": "CANCELED, SYSTEM_ERROR",
		"WES_API_URL": "http://wes:5000/ga4gh/wes/v1",
	}))
	require.NoError(t, err)
	require.Equal(t, 5*time.Second, cfg.PollInterval.D(), "the seed's seconds")
	require.Equal(t, "mock", cfg.Provider)
	require.Equal(t, 7, cfg.ExecutorSlots)
	require.True(t, cfg.AllowLocalWorkflows)
	require.Equal(t, []string{"CANCELED", "SYSTEM_ERROR"}, cfg.AlertStates)
	require.Equal(t, "http://wes:5000/ga4gh/wes/v1", cfg.APIURL)

	for k, v := range map[string]string{
		"WES_EXECUTOR_SLOTS": "many", "WES_ALLOW_LOCAL_WORKFLOWS": "maybe", "WORKFLOW_POLL_INTERVAL": "soon",
	} {
		_, err := loadConfig(env(map[string]string{k: v}))
		require.ErrorContains(t, err, k)
	}

	// Values that would be taken silently for something else are refused.
	for _, tc := range []map[string]string{
		{"WES_PUBLIC_URL": "localhost:5000"}, // no scheme: every log and output URL would be unusable
		{"WES_PUBLIC_URL": "ftp://wes.example.org"},
		{"WES_PUBLIC_URL": "https://"},
		{"WES_EXECUTOR_SLOTS": "0"},
		{"WES_MAX_PAGE_SIZE": "0"},
		{"WES_MAX_PAGE_SIZE": "10"}, // below the default page size, 50
		{"WES_ENGINE_USER": "nobody", "WES_ENGINE_UIDS": "200000-200099"},
	} {
		_, err := loadConfig(env(tc))
		for k := range tc {
			require.ErrorContains(t, err, k, "%v", tc)
		}
	}
	cfg, err = loadConfig(env(map[string]string{"WES_PUBLIC_URL": "https://wes.example.org:8443", "WES_MAX_PAGE_SIZE": "10", "WES_DEFAULT_PAGE_SIZE": "5"}))
	require.NoError(t, err)
	require.Equal(t, 10, cfg.MaxPageSize)
}

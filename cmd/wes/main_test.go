package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// configVariables lists the environment variables of Config (its envconfig
// tags).
func configVariables(t *testing.T) []string {
	t.Helper()
	var out []string
	typ := reflect.TypeFor[Config]()
	for i := range typ.NumField() {
		if v := typ.Field(i).Tag.Get("envconfig"); v != "" {
			out = append(out, v)
		}
	}
	require.NotEmpty(t, out)
	return out
}

func TestRunHelp(t *testing.T) {
	t.Parallel()
	subcommands := []string{"dev", "api", "executor", "projector", "alerts", "migrate", "runs", "service-info", "version"}
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		t.Run(args[0], func(t *testing.T) {
			t.Parallel()
			var out, errOut bytes.Buffer
			require.NoError(t, run(context.Background(), args, os.Getenv, &out, &errOut))
			help := out.String()
			for _, c := range subcommands {
				require.Contains(t, help, "\n  "+c+" ", "subcommand %s", c)
			}
			for _, c := range commands {
				require.Contains(t, help, c.summary)
			}
			for _, v := range configVariables(t) {
				require.Contains(t, help, "  "+v+" ", "variable %s", v)
			}
			require.Contains(t, help, "WES_NATS_NAMESPACE")
			require.Contains(t, help, "WORKFLOW_POLL_INTERVAL")
			require.Empty(t, errOut.String())
		})
	}
}

func TestRunWithoutArguments(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	err := run(context.Background(), nil, os.Getenv, &out, &errOut)
	require.ErrorIs(t, err, errUsage)
	require.Contains(t, out.String(), "Usage: wes <command>")
}

func TestRunSubcommandHelp(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want []string
	}{
		// --help after a subcommand prints its usage and starts nothing.
		{args: []string{"dev", "--help"}, want: []string{"Usage: wes dev", "embedded NATS", "WES_DEV_NATS_PORT"}},
		{args: []string{"migrate", "-h"}, want: []string{"Usage: wes migrate up|status", "WES_DATABASE_URL"}},
		{args: []string{"executor", "--help"}, want: []string{"Usage: wes executor", "WES_EXECUTOR_SLOTS"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			var out, errOut bytes.Buffer
			require.NoError(t, run(context.Background(), tt.args, os.Getenv, &out, &errOut))
			for _, w := range tt.want {
				require.Contains(t, out.String(), w)
			}
		})
	}
}

func TestRunUnknownCommand(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"frobnicate", "--now"}, os.Getenv, &out, &errOut)
	require.Error(t, err)
	require.False(t, errors.Is(err, errUsage))
	require.Contains(t, err.Error(), `unknown command "frobnicate"`)
	require.Contains(t, errOut.String(), "Usage: wes <command>")
	require.Empty(t, out.String())
}

// run's getenv is the process's environment: the configuration must come
// from it, not from os.Getenv behind its back, or a caller (a test, an
// embedding program) cannot configure the program it runs.
func TestRunReadsConfigurationFromGetenv(t *testing.T) {
	t.Parallel()
	getenv := func(k string) string {
		if k == "WES_LOG_FORMAT" {
			return "xml"
		}
		return ""
	}
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"version"}, getenv, &out, &errOut)
	require.Error(t, err, "WES_LOG_FORMAT=xml given through getenv was not seen")
	require.Contains(t, err.Error(), "WES_LOG_FORMAT")
}

func TestNewLogger(t *testing.T) {
	t.Parallel()
	tests := []struct {
		format, level string
		wantErr       bool
		wantJSON      bool
		wantLines     []string // of debug, info, warn: those the level keeps
	}{
		{format: "text", level: "info", wantLines: []string{"info", "warn"}},
		{format: "JSON", level: "debug", wantJSON: true, wantLines: []string{"debug", "info", "warn"}},
		{format: "json", level: "warn", wantJSON: true, wantLines: []string{"warn"}},
		{format: "text", level: "ERROR"},
		{format: "xml", level: "info", wantErr: true},
		{format: "text", level: "loud", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.format+"/"+tt.level, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			log, err := newLogger(tt.format, tt.level, &buf)
			if tt.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			log.Debug("debug", "run_id", "r1")
			log.Info("info", "run_id", "r1")
			log.Warn("warn", "run_id", "r1")
			var got []string
			for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
				if line == "" {
					continue
				}
				require.Contains(t, line, "r1")
				require.Equal(t, tt.wantJSON, strings.HasPrefix(line, "{"), line)
				for _, msg := range []string{"debug", "info", "warn"} {
					if strings.Contains(line, "msg="+msg) || strings.Contains(line, `"msg":"`+msg+`"`) {
						got = append(got, msg)
					}
				}
			}
			require.Equal(t, tt.wantLines, got)
		})
	}
}

// WES_EXECUTOR_METRICS_ADDR=off serves nothing (an empty variable means
// its default, 127.0.0.1:9464).
func TestServeOpsOff(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- serveOps(ctx, &environment{}, "off", nil, nil) }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("serveOps served with the address off")
	}
}

// One WES_DATA_DIR serves one wes dev at a time.
func TestLockDataDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	unlock, err := lockDataDir(dir)
	require.NoError(t, err)
	_, err = lockDataDir(dir)
	require.ErrorContains(t, err, "in use by another wes dev")
	unlock()
	unlock, err = lockDataDir(dir)
	require.NoError(t, err, "free again once the first let go")
	unlock()
}

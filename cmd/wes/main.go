// Command wes is the GA4GH Workflow Execution Service: API, executors,
// projector, migrations and the all-in-one `wes dev`, in one binary.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/kelseyhightower/envconfig"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		var exit exitCodeError
		if errors.As(err, &exit) {
			os.Exit(exit.code)
		}
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			os.Exit(130) // interrupted (a client waiting for a run), as a shell reports it
		}
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, "wes:", err)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

type command struct {
	name, args, summary string
	run                 func(ctx context.Context, env *environment, args []string) error
}

var commands = []command{
	{"dev", "", "everything in one process: API, projector, executors, embedded NATS and SQLite under $WES_DATA_DIR", runDev},
	{"api", "", "the API with the projector and outbox relay (needs WES_DATABASE_URL and WES_NATS_URL)", runAPI},
	{"executor", "", "an executor pool pulling runs from NATS (needs WES_NATS_URL and engines)", runExecutor},
	{"projector", "", "the projector alone", runProjector},
	{"alerts", "", "the alert subscriber alone (WES_ALERT_WEBHOOK_URL, WES_ALERT_SLACK_URL)", runAlerts},
	{"migrate", "up|status", "apply or show database migrations (WES_DATABASE_URL)", runMigrate},
	{"runs", "submit|list|get|status|cancel|logs|outputs|watch|wait", "the client: talk to the API at $WES_API_URL (wes runs --help)", runRuns},
	{"service-info", "", "print the service-info of $WES_API_URL", runServiceInfo},
	{"bench", "[ceilings|fill|list] [flags]", "load generator and benchmarks against $WES_API_URL (wes bench --help)", runBench},
	{"cwl-runner", "[--outdir DIR] [--quiet] tool.cwl [job.yml]", "a drop-in cwl-runner that runs the tool through $WES_API_URL", runCWLRunner},
	{"version", "", "print the version", func(_ context.Context, env *environment, _ []string) error {
		fmt.Fprintln(env.stdout, version())
		return nil
	}},
}

// environment is what every subcommand gets: configuration, output, logger.
type environment struct {
	cfg    Config
	getenv func(string) string
	stdout io.Writer
	stderr io.Writer
	log    *slog.Logger
}

// run is the whole program; main only supplies the process's environment.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	var cmd *command
	for i := range commands {
		if commands[i].name == args[0] {
			cmd = &commands[i]
		}
	}
	if cmd == nil {
		usage(stderr)
		return fmt.Errorf("unknown command %q", args[0])
	}
	if len(args) > 1 && (args[1] == "-h" || args[1] == "--help") && cmd.name != "runs" && cmd.name != "bench" {
		fmt.Fprintf(stdout, "Usage: wes %s %s\n\n%s\n\n", cmd.name, cmd.args, cmd.summary)
		configUsage(stdout)
		return nil
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	env := &environment{cfg: cfg, getenv: getenv, stdout: stdout, stderr: stderr}
	log, err := newLogger(env.cfg.LogFormat, env.cfg.LogLevel, stderr)
	if err != nil {
		return err
	}
	env.log = log
	if err := cmd.run(ctx, env, args[1:]); !errors.Is(err, flag.ErrHelp) {
		return err // -h: the flags were printed, as asked
	}
	return nil
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "wes — a GA4GH Workflow Execution Service (WES 1.1.0)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage: wes <command> [arguments]")
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, c := range commands {
		fmt.Fprintf(tw, "  %s %s\t%s\n", c.name, c.args, c.summary)
	}
	tw.Flush()
	fmt.Fprintln(w)
	configUsage(w)
}

func configUsage(w io.Writer) {
	fmt.Fprintln(w, "Configuration (environment variables):")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	_ = envconfig.Usagef("", &Config{}, tw, "{{range .}}  {{usage_key .}}\t{{usage_default .}}\t{{usage_description .}}\n{{end}}")
	tw.Flush()
}

func newLogger(format, level string, w io.Writer) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("WES_LOG_LEVEL %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("WES_LOG_FORMAT %q: want text or json", format)
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wes-dev/wes/bench"
	"github.com/wes-dev/wes/events"
)

const benchUsage = `Usage:
  wes bench [--concurrency N[,N…]] [--runs N | --duration D] [--rate R] [--mock-duration D] [--submit-only] [--json] [--svg FILE]
      submit mock runs to $WES_API_URL and report submit, dispatch and end-to-end
      throughput and latency; follows the runs' events on $WES_NATS_URL.
      A list of concurrencies runs one benchmark after another (a sweep);
      --svg draws them. --submit-only measures submissions alone: it neither
      follows nor waits for the runs (pause the executors to measure the API
      by itself).
  wes bench ceilings [--concurrency N] [--duration D] [--json]
      what PostgreSQL ($WES_DATABASE_URL) and JetStream ($WES_NATS_URL) sustain
      by themselves: single-row insert transactions/s and publish/ack rates
  wes bench fill --runs N
      insert N finished synthetic runs straight into $WES_DATABASE_URL
  wes bench list [--page-size N] [--pages N] [--json]
      time GET /runs of $WES_API_URL: first pages and walks through every page,
      unfiltered and by state
`

func runBench(ctx context.Context, env *environment, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "ceilings":
			return runBenchCeilings(ctx, env, args[1:])
		case "fill":
			return runBenchFill(ctx, env, args[1:])
		case "list":
			return runBenchList(ctx, env, args[1:])
		case "-h", "--help", "help":
			fmt.Fprint(env.stdout, benchUsage)
			return nil
		}
	}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	fs.Usage = func() { fmt.Fprint(env.stderr, benchUsage) }
	conc := fs.String("concurrency", "16", "concurrent clients; a comma-separated list runs a sweep")
	runs := fs.Int("runs", 0, "submissions per benchmark (default 2000 when no --duration)")
	duration := fs.Duration("duration", 0, "submit for this long instead of a number of runs")
	mockDuration := fs.Duration("mock-duration", 0, "how long each mock run runs")
	multipart := fs.Bool("multipart", false, "submit multipart/form-data (the WES spec's format) instead of JSON")
	rate := fs.Float64("rate", 0, "cap on submissions per second across all clients (0: as fast as they go)")
	wait := fs.Duration("wait", 5*time.Minute, "how long to wait for the runs to complete after the last submission")
	asJSON := fs.Bool("json", false, "print one JSON object per benchmark")
	svg := fs.String("svg", "", "write a chart of the sweep to this SVG file")
	submitOnly := fs.Bool("submit-only", false, "measure submissions alone: do not follow or wait for the runs")
	if _, err := parseFlags(fs, args); err != nil {
		return errUsage
	}
	if *runs == 0 && *duration == 0 {
		*runs = 2000
	}
	levels, err := parseInts(*conc)
	if err != nil {
		return fmt.Errorf("--concurrency: %w", err)
	}
	var subscribe bench.Subscribe
	if !*submitOnly {
		nc, names, err := benchNATS(env)
		if err != nil {
			return err
		}
		defer nc.Close()
		subscribe = func(fn bench.StateFunc) (func(), error) {
			sub, err := events.WatchStates(nc, names, func(c events.StateChange) { fn(c.RunID, string(c.State)) })
			if err != nil {
				return nil, err
			}
			// The subscription must be in place before the first submission.
			if err := nc.Flush(); err != nil {
				return nil, err
			}
			return func() { _ = sub.Unsubscribe() }, nil
		}
	}
	var results []*bench.Result
	for i, c := range levels {
		if i > 0 && !*asJSON {
			fmt.Fprintln(env.stdout)
		}
		res, err := bench.Run(ctx, bench.Config{
			APIURL: env.cfg.APIURL, Token: env.getenv("WES_TOKEN"), Concurrency: c, Runs: *runs, Duration: *duration,
			MockDuration: *mockDuration, Multipart: *multipart, Wait: *wait, Rate: *rate, SubmitOnly: *submitOnly,
		}, subscribe)
		if err != nil {
			return err
		}
		results = append(results, res)
		if *asJSON {
			if err := json.NewEncoder(env.stdout).Encode(res); err != nil {
				return err
			}
		} else {
			printBench(env.stdout, res)
		}
	}
	if *svg != "" {
		f, err := os.Create(*svg)
		if err != nil {
			return err
		}
		title := fmt.Sprintf("wes bench: %s submissions of %s mock runs", results[0].Format, mockDuration.String())
		if err := bench.Chart(f, title, results); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	for _, r := range results {
		if r.ErrorsTotal > 0 {
			return fmt.Errorf("%d error(s): %v", r.ErrorsTotal, r.Errors)
		}
	}
	return nil
}

// benchNATS connects to NATS to follow run events.
func benchNATS(env *environment) (*nats.Conn, events.Names, error) {
	names, err := events.NewNames(env.cfg.NATSNamespace)
	if err != nil {
		return nil, events.Names{}, err
	}
	opts := []nats.Option{nats.Name("wes-bench")}
	if env.cfg.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(env.cfg.NATSCreds))
	}
	nc, err := nats.Connect(env.cfg.NATSURL, opts...)
	if err != nil {
		return nil, events.Names{}, fmt.Errorf("connect to NATS at %s (set WES_NATS_URL; the bench follows run events there): %w", redactURLs(env.cfg.NATSURL), err)
	}
	return nc, names, nil
}

func printBench(w io.Writer, r *bench.Result) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	rate := ""
	if r.Rate > 0 {
		rate = fmt.Sprintf(" at most %.0f/s", r.Rate)
	}
	if r.SubmitOnly {
		fmt.Fprintf(w, "%d clients, %s submissions%s, submissions alone: %d submitted in %.1fs\n",
			r.Concurrency, r.Format, rate, r.Submitted, r.SubmitSeconds)
	} else {
		fmt.Fprintf(w, "%d clients, %s submissions%s, mock runs of %gs: %d submitted in %.1fs, %d completed\n",
			r.Concurrency, r.Format, rate, r.MockDurationS, r.Submitted, r.SubmitSeconds, r.Completed)
	}
	if r.DispatchedEarly > 0 {
		fmt.Fprintf(w, "%d of %d runs were INITIALIZING before their submission's answer arrived (dispatch 0 ms)\n",
			r.DispatchedEarly, r.Dispatched)
	}
	fmt.Fprintln(tw, "\tper second\tp50 ms\tp95 ms\tp99 ms\tmax ms\t")
	fmt.Fprintf(tw, "submit\t%.0f\t%.1f\t%.1f\t%.1f\t%.1f\t\n", r.SubmitPerSec, r.SubmitP50, r.SubmitP95, r.SubmitP99, r.SubmitMax)
	if !r.SubmitOnly {
		fmt.Fprintf(tw, "dispatch (200 → INITIALIZING)\t\t%.1f\t%.1f\t%.1f\t%.1f\t\n", r.DispatchP50, r.DispatchP95, r.DispatchP99, r.DispatchMax)
		fmt.Fprintf(tw, "end to end (submit → COMPLETE)\t%.0f\t%.1f\t%.1f\t%.1f\t%.1f\t\n", r.E2EPerSec, r.E2EP50, r.E2EP95, r.E2EP99, r.E2EMax)
	}
	tw.Flush()
	if r.ErrorsTotal > 0 {
		fmt.Fprintf(w, "errors: %v\n", r.Errors)
	} else {
		fmt.Fprintln(w, "errors: none")
	}
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func runBenchCeilings(ctx context.Context, env *environment, args []string) error {
	fs := flag.NewFlagSet("bench ceilings", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	conc := fs.Int("concurrency", 16, "concurrent clients")
	d := fs.Duration("duration", 5*time.Second, "how long to measure each")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parseFlags(fs, args); err != nil {
		return errUsage
	}
	if !strings.HasPrefix(env.cfg.DatabaseURL, "postgres") {
		return errors.New("WES_DATABASE_URL must be a postgres:// URL")
	}
	nc, _, err := benchNATS(env)
	if err != nil {
		return err
	}
	defer nc.Close()
	c, err := bench.MeasureCeilings(ctx, env.cfg.DatabaseURL, nc, *conc, *d)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(env.stdout).Encode(c)
	}
	fmt.Fprintf(env.stdout, "ceilings with %d clients:\n  PostgreSQL single-row insert transactions/s  %.0f\n  JetStream publishes/s (each waits for its ack)  %.0f\n  JetStream publishes/s (async, 256 in flight)  %.0f\n",
		c.Concurrency, c.PGInsertPerSec, c.JSPublishPerSec, c.JSAsyncPublishPerSec)
	return nil
}

func runBenchFill(ctx context.Context, env *environment, args []string) error {
	fs := flag.NewFlagSet("bench fill", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	n := fs.Int("runs", 1_000_000, "runs to insert")
	if _, err := parseFlags(fs, args); err != nil {
		return errUsage
	}
	if !strings.HasPrefix(env.cfg.DatabaseURL, "postgres") {
		return errors.New("WES_DATABASE_URL must be a postgres:// URL")
	}
	took, err := bench.Fill(ctx, env.cfg.DatabaseURL, *n, func(done int) {
		fmt.Fprintf(env.stderr, "\r%d runs inserted", done)
	})
	fmt.Fprintln(env.stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "inserted %d runs in %.1fs\n", *n, took.Seconds())
	return nil
}

func runBenchList(ctx context.Context, env *environment, args []string) error {
	fs := flag.NewFlagSet("bench list", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	pageSize := fs.Int("page-size", 100, "page_size of every request")
	pages := fs.Int("pages", 0, "most pages per walk (0: every page)")
	first := fs.Int("first", 200, "requests of each first page")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parseFlags(fs, args); err != nil {
		return errUsage
	}
	results, err := bench.List(ctx, bench.ListConfig{
		APIURL: env.cfg.APIURL, Token: env.getenv("WES_TOKEN"), PageSize: *pageSize, FirstPage: *first, MaxPages: *pages,
	})
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(env.stdout).Encode(results)
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "GET /runs (page_size %d)\trequests\truns\tp50 ms\tp95 ms\tp99 ms\tmax ms\t\n", *pageSize)
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t\n", r.Scenario, r.Requests, r.Runs, r.P50, r.P95, r.P99, r.Max)
	}
	return tw.Flush()
}

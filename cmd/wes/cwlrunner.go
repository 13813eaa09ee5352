package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/wes-dev/wes/models"
)

// runCWLRunner is a drop-in cwl-runner that runs a tool through a WES
// server: `wes cwl-runner [--outdir DIR] [--quiet] tool.cwl [job.yml]`. It
// attaches what the tool and job reference, waits, downloads the outputs
// into --outdir, prints the output object with locations rewritten to those
// files, and exits with the run's exit code, so that a CWL test harness
// (cwltest --tool "wes cwl-runner") can run against a WES.
func runCWLRunner(ctx context.Context, env *environment, args []string) error {
	fs := flag.NewFlagSet("wes cwl-runner", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	outdir := fs.String("outdir", ".", "where to put the output files")
	quiet := fs.Bool("quiet", false, "print no progress")
	engine := fs.String("engine", "", "workflow engine on the server (default: the server's choice for CWL)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 1 || len(pos) > 2 {
		return errors.New("usage: wes cwl-runner [--outdir DIR] [--quiet] tool.cwl [job.yml]")
	}
	sub, err := buildSubmission(pos[0], pos[1:], "CWL", "", nil)
	if err != nil {
		return err
	}
	sub.WorkflowEngine = *engine
	c := newClient(env)
	id, err := c.Submit(ctx, sub)
	if err != nil {
		return err
	}
	progress := env.stderr
	if *quiet {
		progress = io.Discard
	}
	fmt.Fprintf(progress, "wes cwl-runner: run %s\n", id)
	rl, err := c.Wait(ctx, id, 500*time.Millisecond, func(state string) { fmt.Fprintf(progress, "wes cwl-runner: %s\n", state) })
	if err != nil {
		return err
	}
	if rl.State != "COMPLETE" {
		if rl.RunLog.Stderr != "" && !*quiet {
			_ = c.Stream(ctx, rl.RunLog.Stderr, false, env.stderr)
		}
		return runExit(rl)
	}
	files, err := c.Outputs(ctx, id)
	if err != nil {
		return err
	}
	if err := download(ctx, c, files, *outdir); err != nil {
		return err
	}
	abs, err := filepath.Abs(*outdir)
	if err != nil {
		return err
	}
	local := map[string]string{}
	for _, f := range files {
		local[f.URL] = filepath.Join(abs, filepath.FromSlash(f.Path))
	}
	var outputs any
	if err := json.Unmarshal(rl.Outputs, &outputs); err != nil {
		return fmt.Errorf("outputs of run %s: %w", id, err)
	}
	models.VisitObjects(outputs, func(o map[string]any) {
		if loc, ok := o["location"].(string); ok {
			if p, ok := local[loc]; ok {
				o["location"], o["path"] = "file://"+p, p
			}
		}
	})
	return printJSON(env.stdout, outputs)
}

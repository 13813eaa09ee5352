package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wes-dev/wes/client"
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
	overwrite := fs.Bool("overwrite", false, "replace files in --outdir that exist already")
	engine := fs.String("engine", "", "workflow engine on the server (default: the server's choice for CWL)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 1 || len(pos) > 2 {
		return errors.New("usage: wes cwl-runner [--outdir DIR] [--quiet] tool.cwl [job.yml]")
	}
	// tool.cwl#main names a process of a packed document.
	tool, frag := pos[0], ""
	if i := strings.LastIndexByte(tool, '#'); i > 0 && !fileExists(tool) {
		tool, frag = tool[:i], tool[i:]
	}
	sub, err := buildSubmission(tool, pos[1:], "CWL", "", nil)
	if err != nil {
		return err
	}
	sub.WorkflowURL += frag
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
	rl, err := c.Wait(ctx, id, 500*time.Millisecond, func(state string) { fmt.Fprintf(progress, "wes cwl-runner: %s\n", client.Printable(state)) })
	if err != nil {
		return err
	}
	if rl.State != "COMPLETE" {
		// Why it failed, --quiet or not (a test harness always passes it):
		// the engine's stderr and the run's system logs.
		if rl.RunLog.Stderr != "" {
			_ = c.Stream(ctx, rl.RunLog.Stderr, false, env.stderr)
		}
		for _, l := range rl.RunLog.SystemLogs {
			fmt.Fprintf(env.stderr, "wes cwl-runner: %s\n", client.Printable(l))
		}
		return runExit(rl)
	}
	files, err := c.Outputs(ctx, id)
	if err != nil {
		return err
	}
	if err := download(ctx, c, files, *outdir, *overwrite); err != nil {
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
	// Only the paths this download wrote are local: a path the server
	// names means nothing here, and is not trusted (placeDirectories
	// creates the directories of the paths it finds).
	models.VisitObjects(outputs, func(o map[string]any) {
		delete(o, "path")
		if loc, ok := o["location"].(string); ok {
			if p, ok := local[loc]; ok {
				o["location"], o["path"] = "file://"+p, p
			}
		}
	})
	if err := placeDirectories(outputs, abs); err != nil {
		return err
	}
	return printJSON(env.stdout, outputs)
}

// placeDirectories gives each Directory of outputs without a location (the
// server stored its files, and names them in its listing) the directory of
// outdir its listing is in, or outdir/basename for an empty one, and
// creates it.
func placeDirectories(v any, outdir string) error {
	var errs []error
	// place fills in the Directories in v, innermost first, and returns
	// v's local path ("" if none).
	var place func(v any) string
	place = func(v any) string {
		switch t := v.(type) {
		case []any:
			for _, c := range t {
				place(c)
			}
		case map[string]any:
			listed := "" // the directory the listing's entries are in
			for k, c := range t {
				items, isListing := c.([]any)
				if k != "listing" || !isListing {
					place(c)
					continue
				}
				for _, it := range items {
					if p := place(it); p != "" && listed == "" {
						listed = filepath.Dir(p)
					}
				}
			}
			if p, ok := t["path"].(string); ok {
				return p
			}
			if t["class"] != "Directory" {
				return ""
			}
			dir := listed
			if dir != "" && !within(outdir, dir) {
				return "" // not a path of this download's
			}
			if dir == "" {
				base, _ := t["basename"].(string)
				if base == "" || base != filepath.Base(base) || base == ".." || base == "." {
					return ""
				}
				dir = filepath.Join(outdir, base)
			}
			if err := os.MkdirAll(dir, 0o750); err != nil {
				errs = append(errs, err)
			}
			t["location"], t["path"] = "file://"+dir, dir
			return dir
		}
		return ""
	}
	place(v)
	return errors.Join(errs...)
}

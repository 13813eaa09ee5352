package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sync/errgroup"
	"sigs.k8s.io/yaml"

	"github.com/wes-dev/wes/client"
	"github.com/wes-dev/wes/models"
)

// exitCodeError makes the process exit with a run's exit code.
type exitCodeError struct{ code int }

func (e exitCodeError) Error() string { return fmt.Sprintf("run ended with exit code %d", e.code) }

func newClient(env *environment) *client.Client {
	c := client.New(env.cfg.APIURL, env.getenv("WES_TOKEN"))
	c.Warn = func(msg string) { fmt.Fprintln(env.stderr, "wes: "+msg) }
	return c
}

// parseFlags parses flags that may come before, between or after the
// positional arguments, and returns the positional ones.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// multiFlag collects a repeated flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func runServiceInfo(ctx context.Context, env *environment, _ []string) error {
	info, err := newClient(env).ServiceInfo(ctx)
	if err != nil {
		return err
	}
	var v any
	if err := json.Unmarshal(info, &v); err != nil {
		return err
	}
	return printJSON(env.stdout, v)
}

var runsUsage = `Usage: wes runs <command> [flags] [arguments]   (talks to $WES_API_URL; bearer token from $WES_TOKEN)

  submit WORKFLOW [PARAMS] [--type T] [--version V] [--engine E] [--engine-param k=v]…
                           [--tag k=v]… [--attach FILE]… [--wait] [--json]
  list [--state S] [--tag k:v]… [--all] [--page-size N] [--page-token T] [--json]
  get ID [--json]            status ID [--json]          cancel ID
  logs ID [--stderr] [-f]    outputs ID [--dir DIR [--overwrite]] [--json]
  watch ID / wait ID         follow a run; exit with its exit code
`

func runRuns(ctx context.Context, env *environment, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(env.stdout, runsUsage)
		return nil
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("wes runs "+sub, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	c := newClient(env)
	// runID parses the flags defined so far and returns the one run id.
	runID := func() (string, error) {
		pos, err := parseFlags(fs, args)
		if err != nil {
			return "", err
		}
		if len(pos) != 1 {
			return "", fmt.Errorf("wes runs %s takes one run id", sub)
		}
		return pos[0], nil
	}
	switch sub {
	case "submit":
		return runsSubmit(ctx, env, c, fs, asJSON, args)
	case "list":
		return runsList(ctx, env, c, fs, asJSON, args)
	case "get", "status", "cancel":
		id, err := runID()
		if err != nil {
			return err
		}
		switch sub {
		case "get":
			rl, err := c.GetRun(ctx, id)
			if err != nil {
				return err
			}
			return printJSON(env.stdout, rl)
		case "status":
			st, err := c.Status(ctx, id)
			if err != nil {
				return err
			}
			if *asJSON {
				return printJSON(env.stdout, st)
			}
			fmt.Fprintln(env.stdout, client.Printable(st.State))
			return nil
		default:
			if err := c.Cancel(ctx, id); err != nil {
				return err
			}
			// Cancel is idempotent, and says nothing of a run that had
			// ended already: say it here.
			if st, err := c.Status(ctx, id); err == nil && client.Terminal(st.State) && st.State != "CANCELED" {
				fmt.Fprintf(env.stderr, "wes: run %s had ended already (%s): nothing was canceled\n", id, client.Printable(st.State))
			}
			if *asJSON {
				return printJSON(env.stdout, map[string]string{"run_id": id})
			}
			fmt.Fprintln(env.stdout, id)
			return nil
		}
	case "logs":
		stderr := fs.Bool("stderr", false, "show stderr instead of stdout")
		follow := fs.Bool("f", false, "follow until the run ends")
		id, err := runID()
		if err != nil {
			return err
		}
		rl, err := c.GetRun(ctx, id)
		if err != nil {
			return err
		}
		u := rl.RunLog.Stdout
		if *stderr {
			u = rl.RunLog.Stderr
		}
		if u == "" {
			return fmt.Errorf("run %s has no log: it ended (%s) before an engine ran it", id, client.Printable(rl.State))
		}
		if !*follow {
			return c.Stream(ctx, u, false, env.stdout)
		}
		return followLog(ctx, c, id, u, env.stdout)
	case "outputs":
		dir := fs.String("dir", "", "download the files into this directory")
		overwrite := fs.Bool("overwrite", false, "with --dir: replace files that exist already")
		id, err := runID()
		if err != nil {
			return err
		}
		files, err := c.Outputs(ctx, id)
		if err != nil {
			return err
		}
		if *dir != "" {
			if err := download(ctx, c, files, *dir, *overwrite); err != nil {
				return err
			}
		}
		if *asJSON {
			return printJSON(env.stdout, files)
		}
		for _, f := range files {
			size := "?"
			if f.Size != nil {
				size = fmt.Sprint(*f.Size)
			}
			fmt.Fprintf(env.stdout, "%s\t%s\t%s\n", client.Printable(f.Path), size, client.Printable(f.URL))
		}
		return nil
	case "watch", "wait":
		id, err := runID()
		if err != nil {
			return err
		}
		return watch(ctx, env, c, id, *asJSON)
	}
	fmt.Fprint(env.stderr, runsUsage)
	return fmt.Errorf("unknown command wes runs %s", sub)
}

// download writes each output file below dir, refusing paths that leave it
// and, unless overwrite, files that exist already: output names come from
// the workflow, and an existing file (a repository's .git/config, a
// shell's .bashrc) is not the workflow's to replace. An overwritten file is
// removed first, so that it does not keep the old file's mode.
func download(ctx context.Context, c *client.Client, files []client.OutputFile, dir string, overwrite bool) error {
	root, err := openRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	for _, f := range files {
		rel := filepath.FromSlash(f.Path)
		if d := filepath.Dir(rel); d != "." {
			if err := root.MkdirAll(d, 0o750); err != nil {
				return fmt.Errorf("output %q: %w (a path that leaves %s is refused)", f.Path, err, dir)
			}
		}
		if overwrite {
			if err := root.Remove(rel); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("output %q: %w", f.Path, err)
			}
		}
		out, err := root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("output %q: %s exists already, and outputs do not replace files unless asked to (download into an empty directory, or pass --overwrite)", f.Path, filepath.Join(dir, rel))
		}
		if err != nil {
			return fmt.Errorf("output %q: %w (a path that leaves %s is refused)", f.Path, err, dir)
		}
		err = c.Stream(ctx, f.URL, false, out)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("download %s: %w", f.Path, err)
		}
	}
	return nil
}

func openRoot(dir string) (*os.Root, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	return os.OpenRoot(dir)
}

// watch prints one line per state change (state, elapsed, tasks done of
// total) and returns an exitCodeError unless the run completed.
func watch(ctx context.Context, env *environment, c *client.Client, id string, asJSON bool) error {
	start := time.Now()
	rl, err := c.Wait(ctx, id, time.Second, func(state string) {
		if asJSON {
			return
		}
		done, total := 0, 0
		if tasks, err := c.Tasks(ctx, id); err == nil {
			total = len(tasks.TaskLogs)
			for _, t := range tasks.TaskLogs {
				if t.EndTime != "" {
					done++
				}
			}
		}
		fmt.Fprintf(env.stdout, "%s  %-14s %8s  tasks %d/%d\n", id, client.Printable(state), time.Since(start).Round(time.Second), done, total)
	})
	if err != nil {
		return err
	}
	if asJSON {
		if err := printJSON(env.stdout, rl); err != nil {
			return err
		}
	} else if rl.State != "COMPLETE" {
		// Where to look: the engine's stderr and the run's system logs.
		for _, l := range rl.RunLog.SystemLogs {
			fmt.Fprintf(env.stderr, "wes: %s\n", client.Printable(l))
		}
		fmt.Fprintf(env.stderr, "wes: run %s ended %s; its engine's stderr: wes runs logs %s --stderr\n", id, client.Printable(rl.State), id)
	}
	return runExit(rl)
}

func runExit(rl *client.RunLog) error {
	switch {
	case rl.State == "COMPLETE":
		return nil
	case rl.RunLog.ExitCode != nil && *rl.RunLog.ExitCode > 0 && *rl.RunLog.ExitCode < 256:
		return exitCodeError{*rl.RunLog.ExitCode}
	}
	// No code, or one a process cannot exit with (the low 8 bits of 256
	// are 0: success).
	return exitCodeError{1}
}

func runsList(ctx context.Context, env *environment, c *client.Client, fs *flag.FlagSet, asJSON *bool, args []string) error {
	state := fs.String("state", "", "only runs in this state")
	all := fs.Bool("all", false, "follow every page")
	pageSize := fs.Int("page-size", 50, "runs per page")
	first := fs.String("page-token", "", "start at this page (the next_page_token of the one before)")
	var tags multiFlag
	fs.Var(&tags, "tag", "only runs with this tag (key:value or key=value, as submit takes it), repeatable")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	if *pageSize < 1 {
		return fmt.Errorf("--page-size %d: want at least 1", *pageSize)
	}
	for i, t := range tags {
		if !strings.Contains(t, ":") {
			tags[i] = strings.Replace(t, "=", ":", 1) // submit's key=value
		}
	}
	if *asJSON {
		// WES's RunListResponse: with --all every run and no token; else
		// one page and the token of the next, to pass to --page-token.
		out := client.RunList{Runs: []client.RunSummary{}}
		for token := *first; ; {
			page, err := c.ListRuns(ctx, *pageSize, token, *state, tags)
			if err != nil {
				return err
			}
			out.Runs = append(out.Runs, page.Runs...)
			out.NextPageToken = page.NextPageToken
			if token = page.NextPageToken; token == "" || !*all {
				break
			}
		}
		return printJSON(env.stdout, out)
	}
	// A table is printed a page at a time. A run summary has no workflow
	// type: each row's comes from its run, read a few at a time.
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RUN ID\tSTATE\tTYPE\tSTART\tDURATION\tTAGS")
	for token := *first; ; {
		page, err := c.ListRuns(ctx, *pageSize, token, *state, tags)
		if err != nil {
			return err
		}
		types := make([]string, len(page.Runs))
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(8)
		for i, r := range page.Runs {
			g.Go(func() error {
				rl, err := c.GetRun(gctx, r.RunID)
				if err != nil {
					types[i] = "?"
					return nil // the row is still worth showing
				}
				var req struct {
					Type    string `json:"workflow_type"`
					Version string `json:"workflow_type_version"`
				}
				_ = json.Unmarshal(rl.Request, &req)
				types[i] = req.Type + " " + req.Version
				return nil
			})
		}
		_ = g.Wait()
		for i, r := range page.Runs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", client.Printable(r.RunID), client.Printable(r.State), client.Printable(types[i]),
				client.Printable(r.StartTime), duration(r.StartTime, r.EndTime), client.Printable(formatTags(r.Tags)))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if token = page.NextPageToken; token == "" {
			return nil
		}
		if !*all {
			fmt.Fprintf(env.stderr, "more runs: --page-token %s (or --all)\n", client.Printable(token))
			return nil
		}
	}
}

func duration(start, end string) string {
	s, err := time.Parse(time.RFC3339, start)
	if err != nil {
		return ""
	}
	e := time.Now()
	if end != "" {
		if e, err = time.Parse(time.RFC3339, end); err != nil {
			return ""
		}
	}
	return e.Sub(s).Round(time.Second).String()
}

func formatTags(tags map[string]string) string {
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+tags[k])
	}
	return strings.Join(parts, ",")
}

func runsSubmit(ctx context.Context, env *environment, c *client.Client, fs *flag.FlagSet, asJSON *bool, args []string) error {
	typ := fs.String("type", "", "workflow type (guessed from the file: CWL, SMK, NFL, WDL)")
	version := fs.String("version", "", "workflow type version (guessed from the file)")
	engine := fs.String("engine", "", "workflow engine")
	wait := fs.Bool("wait", false, "follow the run and exit with its exit code")
	var tags, attach, engineParams multiFlag
	fs.Var(&tags, "tag", "tag key=value, repeatable")
	fs.Var(&attach, "attach", "extra file to attach, repeatable")
	fs.Var(&engineParams, "engine-param", "workflow engine parameter key=value (key alone for a flag), repeatable")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 1 || len(pos) > 2 {
		return errors.New("usage: wes runs submit WORKFLOW [PARAMS] [flags]")
	}
	sub, err := buildSubmission(pos[0], pos[1:], *typ, *version, attach)
	if err != nil {
		return err
	}
	sub.WorkflowEngine = *engine
	for _, t := range tags {
		k, v, ok := strings.Cut(t, "=")
		if !ok || k == "" {
			return fmt.Errorf("--tag %q: want key=value (key= for an empty value)", t)
		}
		if sub.Tags == nil {
			sub.Tags = map[string]string{}
		}
		sub.Tags[k] = v
	}
	for _, p := range engineParams {
		k, v, hasValue := strings.Cut(p, "=")
		if sub.EngineParameters == nil {
			sub.EngineParameters = map[string]*string{}
		}
		if hasValue {
			sub.EngineParameters[k] = &v
		} else {
			sub.EngineParameters[k] = nil
		}
	}
	id, err := c.Submit(ctx, sub)
	if err != nil {
		return err
	}
	if !*wait {
		if *asJSON {
			return printJSON(env.stdout, map[string]string{"run_id": id})
		}
		fmt.Fprintln(env.stdout, id)
		return nil
	}
	return watch(ctx, env, c, id, *asJSON)
}

// buildSubmission reads a workflow, its params and the files they refer to.
// Every attachment is named relative to the workflow's directory.
func buildSubmission(workflow string, params []string, typ, version string, extra []string) (client.Submission, error) {
	// What is attached is named by its path below the deepest directory
	// that holds all of it: the workflow's, unless a job file or an input
	// lies beside or above it (tests/wf/tool.cwl with tests/job.json, as
	// CWL conformance tests are laid out). A first pass finds them all.
	all, err := buildSubmissionIn(string(filepath.Separator), workflow, params, typ, version, extra)
	if err != nil {
		return all, err
	}
	var root string
	for name := range all.Attachments {
		if strings.HasPrefix(name, localPrefix) {
			continue // named by the client, wherever the file is
		}
		dir := filepath.Dir(filepath.Join(string(filepath.Separator), filepath.FromSlash(name)))
		for root != "" && !within(root, dir) {
			root = filepath.Dir(root)
		}
		if root == "" {
			root = dir
		}
	}
	return buildSubmissionIn(root, workflow, params, typ, version, extra)
}

// within reports whether p is dir or below it (both clean and absolute).
func within(dir, p string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// buildSubmissionIn is buildSubmission with attachments named by their
// paths below root (absolute).
func buildSubmissionIn(root, workflow string, params []string, typ, version string, extra []string) (client.Submission, error) {
	var sub client.Submission
	wfData, err := os.ReadFile(workflow)
	if err != nil {
		return sub, err
	}
	guessType, guessVersion := guessWorkflowType(workflow, wfData)
	sub.WorkflowType, sub.WorkflowTypeVersion = cmpOr(typ, guessType), cmpOr(version, guessVersion)
	if sub.WorkflowType == "" || sub.WorkflowTypeVersion == "" {
		missing := "--type and --version"
		if sub.WorkflowType != "" {
			missing = "--version"
		}
		return sub, fmt.Errorf("cannot tell the type and version of %s: give %s", workflow, missing)
	}
	absBase := root
	absWorkflow, err := filepath.Abs(workflow)
	if err != nil {
		return sub, err
	}
	wfName, err := filepath.Rel(absBase, absWorkflow)
	if err != nil {
		return sub, err
	}
	sub.WorkflowURL = filepath.ToSlash(wfName)
	sub.Attachments = map[string][]byte{}
	scope, err := referenceScope(absWorkflow, extra)
	if err != nil {
		return sub, err
	}
	// attach adds file p under its path relative to root, and returns
	// that name; check, if not nil, vets each file (and what it links to).
	attach := func(p string, check func(string) error) (string, error) {
		abs, err := filepath.Abs(p)
		if err != nil {
			return "", err
		}
		if !within(absBase, abs) {
			return "", fmt.Errorf("%s is outside %s: it cannot be attached under a relative name", p, root)
		}
		rel, err := filepath.Rel(absBase, abs)
		if err != nil {
			return "", err
		}
		name := filepath.ToSlash(rel)
		return name, attachAs(sub.Attachments, abs, name, check)
	}
	add := func(p string) error { _, err := attach(p, nil); return err }
	// What the workflow's documents name is confined to scope: they may
	// be someone else's, and a reference must not send this machine's
	// files (../../.ssh/id_rsa, or a link to it) to the server.
	addReference := func(p string) error { _, err := attach(p, scope); return err }
	if err := addWithReferences(workflow, addReference, map[string]bool{}); err != nil {
		return sub, err
	}
	if len(params) == 1 {
		data, err := os.ReadFile(params[0])
		if err != nil {
			return sub, err
		}
		obj, err := paramsJSON(data)
		if err != nil {
			return sub, fmt.Errorf("%s: %w", params[0], err)
		}
		// Relative input files of the params (relative to the params
		// file) are attached too, and the params name them by their
		// attachment names, which the server resolves.
		names := map[string]string{}
		if sub.WorkflowType == "WDL" {
			// WDL names input files by plain strings: those that name a
			// file next to the params are attached, and named by their
			// attachment names, which the executor resolves.
			dir := filepath.Dir(params[0])
			if sub.Params, err = renameStrings(obj, func(s string) (string, bool, error) {
				if s == "" || strings.Contains(s, "://") || filepath.IsAbs(s) || !fileExists(filepath.Join(dir, filepath.FromSlash(s))) {
					return "", false, nil
				}
				name, err := attach(filepath.Join(dir, filepath.FromSlash(s)), nil)
				return name, err == nil, err
			}); err != nil {
				return sub, fmt.Errorf("%s: %w", params[0], err)
			}
			return sub, addAll(extra, add)
		}
		relative, local := fileLocations(obj)
		for _, loc := range relative {
			name, err := attach(filepath.Join(filepath.Dir(params[0]), filepath.FromSlash(loc)), nil)
			if err != nil {
				return sub, err
			}
			names[loc] = name
		}
		// Local files named by absolute path or file:// URL are this
		// machine's, not the server's: attached under names of their own.
		for i, loc := range local {
			p := loc
			if u, err := url.Parse(loc); err == nil && u.Scheme == "file" {
				p = u.Path
			}
			name := fmt.Sprintf("%s%d/%s", localPrefix, i+1, filepath.Base(p))
			if err := attachAs(sub.Attachments, p, name, nil); err != nil {
				return sub, err
			}
			names[loc] = name
		}
		if sub.Params, err = relocate(obj, names); err != nil {
			return sub, fmt.Errorf("%s: %w", params[0], err)
		}
	}
	return sub, addAll(extra, add)
}

// addAll adds each of paths.
func addAll(paths []string, add func(string) error) error {
	for _, p := range paths {
		if err := add(p); err != nil {
			return err
		}
	}
	return nil
}

// renameStrings replaces every string value of params (not keys) that
// rename maps, and returns the params as JSON.
func renameStrings(params json.RawMessage, rename func(string) (string, bool, error)) (json.RawMessage, error) {
	var v any
	if err := json.Unmarshal(params, &v); err != nil {
		return nil, err
	}
	var errs []error
	v = models.MapStrings(v, func(s string) any {
		to, ok, err := rename(s)
		if err != nil {
			errs = append(errs, err)
		}
		if ok {
			return to
		}
		return s
	})
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

// followLog streams a run's log until the run has ended. A stream that
// ends before the run does (the API restarting, a proxy's timeout) is
// followed again; what was printed already is skipped, for a follow starts
// at the log's first byte.
func followLog(ctx context.Context, c *client.Client, id, u string, w io.Writer) error {
	var printed int64
	delay := 500 * time.Millisecond
	giveUp := cmp.Or(c.Unreachable, 5*time.Minute)
	var failingSince time.Time
	for {
		before := printed
		err := c.Stream(ctx, u, true, &skipWriter{skip: printed, w: w, n: &printed})
		var apiErr *client.APIError
		if errors.As(err, &apiErr) && apiErr.StatusCode < 500 {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err == nil {
			st, serr := c.Status(ctx, id)
			if serr == nil && client.Terminal(st.State) {
				return nil
			}
		}
		// A server that answers nothing at all for long is given up on.
		switch {
		case err == nil || printed > before:
			failingSince = time.Time{}
		case failingSince.IsZero():
			failingSince = time.Now()
			if c.Warn != nil {
				c.Warn(fmt.Sprintf("the log of run %s stopped (%v); following it again for up to %s", id, err, giveUp))
			}
		case time.Since(failingSince) >= giveUp:
			return fmt.Errorf("gave up following the log of run %s: the server has not answered for %s: %w", id, giveUp, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 10*time.Second)
	}
}

// skipWriter drops the first skip bytes written to it and passes the rest
// to w, counting in n every byte w has taken, skipped ones included.
type skipWriter struct {
	skip int64
	w    io.Writer
	n    *int64
}

func (s *skipWriter) Write(p []byte) (int, error) {
	all := len(p)
	if s.skip > 0 {
		cut := min(int64(len(p)), s.skip)
		s.skip -= cut
		p = p[cut:]
	}
	n, err := s.w.Write(p)
	*s.n += int64(n)
	if err != nil {
		return all - len(p) + n, err
	}
	return all, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

var (
	cwlVersionRE = regexp.MustCompile(`"?cwlVersion"?\s*:\s*["']?(v1\.[0-9])`)
	wdlVersionRE = regexp.MustCompile(`(?m)^\s*version\s+([0-9.]+)`)
	// include: "rules/a.smk", script: "scripts/b.py", configfile: "c.yaml", …
	smkRefRE    = regexp.MustCompile(`(?m)^\s*(include|script|notebook|conda|configfile)\s*:\s*["']([^"']+)["']`)
	wdlImportRE = regexp.MustCompile(`(?m)^\s*import\s+["']([^"']+)["']`)
	// A CWL document's references to files it loads or reads, in YAML or
	// JSON, block or flow style, quoted or not, with a #fragment or a
	// comment after; only those naming an existing file are attached.
	cwlRunRE = regexp.MustCompile(`(?m)(?:^|[\s{,\-])["']?(?:run|\$import|\$include|\$mixin|location|path)["']?\s*:\s*["']?([^\s"'#{},\]]+)`)
)

func guessWorkflowType(file string, data []byte) (string, string) {
	switch ext := strings.ToLower(filepath.Ext(file)); {
	case ext == ".cwl":
		if m := cwlVersionRE.FindSubmatch(data); m != nil {
			return "CWL", string(m[1])
		}
		return "CWL", ""
	case ext == ".wdl":
		if m := wdlVersionRE.FindSubmatch(data); m != nil {
			return "WDL", string(m[1])
		}
		return "WDL", "draft-2"
	case ext == ".nf":
		return "NFL", "DSL2"
	case ext == ".smk" || filepath.Base(file) == "Snakefile":
		return "SMK", "7"
	case ext == ".yml" || ext == ".yaml" || ext == ".json":
		// A CWL document under another name says so by its version.
		if m := cwlVersionRE.FindSubmatch(data); m != nil {
			return "CWL", string(m[1])
		}
	}
	return "", ""
}

// addWithReferences attaches a workflow file and, for CWL, the files its
// run:/$import/$include lines name, recursively.
func addWithReferences(file string, add func(string) error, seen map[string]bool) error {
	if seen[file] {
		return nil
	}
	seen[file] = true
	if err := add(file); err != nil {
		return err
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	if filepath.Base(file) == "Snakefile" || strings.HasSuffix(file, ".smk") {
		// A Snakefile's include:, script:, notebook: and conda: name files
		// relative to it; its configfile: relative to where snakemake runs
		// (the project's directory, the current one here), or next to it.
		for _, m := range smkRefRE.FindAllSubmatch(data, -1) {
			directive, name := string(m[1]), string(m[2])
			if strings.Contains(name, "://") || filepath.IsAbs(name) {
				continue
			}
			candidates := []string{filepath.Join(filepath.Dir(file), filepath.FromSlash(name))}
			if directive == "configfile" {
				candidates = append([]string{filepath.FromSlash(name)}, candidates...)
			}
			for _, p := range candidates {
				if !fileExists(p) {
					continue
				}
				if err := addWithReferences(p, add, seen); err != nil {
					return err
				}
				break
			}
		}
		return nil
	}
	refs := cwlRunRE
	switch {
	case strings.HasSuffix(file, ".wdl"):
		refs = wdlImportRE // import "tasks.wdl" as tasks
	case !strings.HasSuffix(file, ".cwl") && !strings.HasSuffix(file, ".yml") && !strings.HasSuffix(file, ".yaml"):
		return nil
	}
	for _, m := range refs.FindAllSubmatch(data, -1) {
		ref := string(m[1])
		if strings.Contains(ref, "://") || path.IsAbs(ref) {
			continue
		}
		p := filepath.Join(filepath.Dir(file), filepath.FromSlash(ref))
		if !fileExists(p) {
			continue
		}
		if err := addWithReferences(p, add, seen); err != nil {
			return err
		}
	}
	return nil
}

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// paramsJSON accepts a params file in YAML or JSON and returns the JSON
// object.
func paramsJSON(data []byte) (json.RawMessage, error) {
	out, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("params are neither YAML nor JSON: %w", err)
	}
	if t := bytes.TrimSpace(out); len(t) == 0 || t[0] != '{' {
		return nil, errors.New("params must be a mapping (a JSON object)")
	}
	return out, nil
}

// relocate replaces the location/path values of File and Directory
// objects that names maps; params without such values are returned as they are.
func relocate(params json.RawMessage, names map[string]string) (json.RawMessage, error) {
	moved := false
	for loc, name := range names {
		moved = moved || loc != name
	}
	if !moved {
		return params, nil
	}
	var v any
	if err := json.Unmarshal(params, &v); err != nil {
		return nil, err
	}
	models.VisitObjects(v, func(t map[string]any) {
		if !models.IsFileObject(t) {
			return
		}
		for _, k := range []string{"location", "path"} {
			if s, ok := t[k].(string); ok && names[s] != "" {
				t[k] = names[s]
			}
		}
	})
	return json.Marshal(v)
}

// localPrefix begins the attachment names of a job's local files named by
// absolute path or file:// URL (fileLocations).
const localPrefix = "wes-local/"

// attachAs adds the file or directory p to attachments under name (a
// directory's files under name/…, a link to a file as the file it names:
// data often is a link to a shared copy).
func attachAs(attachments map[string][]byte, p, name string, check func(string) error) error {
	return filepath.WalkDir(p, func(f string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if fi, err := os.Stat(f); err != nil || !fi.Mode().IsRegular() {
			return nil
		}
		if check != nil {
			if err := check(f); err != nil {
				return err
			}
		}
		rel, err := filepath.Rel(p, f)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(f)
		attachments[path.Join(name, filepath.ToSlash(rel))] = data
		return err
	})
}

// referenceScope returns the check of a file a workflow's documents name:
// it, and what it links to, must lie in the workflow's directory, the
// current one (unless that is the home directory or above it), or what
// --attach names (extra).
func referenceScope(absWorkflow string, extra []string) (func(string) error, error) {
	dirs := []string{filepath.Dir(absWorkflow)}
	wd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	// The current directory is a project's (where snakemake would run),
	// unless it is the home directory or above it: run from ~, a workflow
	// in ~/Downloads must not reach ~/.ssh.
	if home, err := os.UserHomeDir(); err != nil || !within(wd, home) {
		dirs = append(dirs, wd)
	}
	for _, e := range extra {
		abs, err := filepath.Abs(e)
		if err != nil {
			return nil, err
		}
		dirs = append(dirs, abs)
	}
	for _, d := range dirs[:len(dirs):len(dirs)] {
		if r, err := filepath.EvalSymlinks(d); err == nil && r != d {
			dirs = append(dirs, r) // the same places reached through links
		}
	}
	inScope := func(p string) bool {
		return slices.ContainsFunc(dirs, func(d string) bool { return within(d, p) })
	}
	return func(p string) error {
		abs, err := filepath.Abs(p)
		if err != nil {
			return err
		}
		target := abs
		if r, err := filepath.EvalSymlinks(abs); err == nil {
			target = r
		}
		if inScope(abs) && inScope(target) {
			return nil
		}
		what := abs
		if target != abs {
			what = fmt.Sprintf("%s (a link to %s)", abs, target)
		}
		return fmt.Errorf("the workflow refers to %s, outside its directory and the current one (a project's, not your home directory): what a workflow names is attached only from there (pass --attach %s to send it anyway)", what, p)
	}, nil
}

// fileLocations lists the location/path values of File and Directory
// objects: the relative ones, and the absolute or file:// ones that name
// something on this machine.
func fileLocations(params json.RawMessage) (relative, local []string) {
	var v any
	_ = json.Unmarshal(params, &v)
	models.VisitObjects(v, func(t map[string]any) {
		if !models.IsFileObject(t) {
			return
		}
		for _, k := range []string{"location", "path"} {
			s, ok := t[k].(string)
			if !ok {
				continue
			}
			p := s
			if u, err := url.Parse(s); err == nil && u.Scheme == "file" {
				p = u.Path
			} else if strings.Contains(s, "://") {
				continue // a URL: the server's to fetch
			} else if !path.IsAbs(s) {
				relative = append(relative, s)
				return
			}
			if _, err := os.Stat(p); err == nil {
				local = append(local, s)
			}
			return
		}
	})
	slices.Sort(relative)
	slices.Sort(local)
	return slices.Compact(relative), slices.Compact(local)
}

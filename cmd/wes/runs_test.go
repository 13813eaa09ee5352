package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wes-dev/wes/client"
)

func TestParseFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		args     []string
		wantPos  []string
		wantJSON bool
		wantType string
		wantTags []string
		wantErr  bool
	}{
		{name: "none", args: nil, wantPos: nil},
		{name: "positional only", args: []string{"wf.cwl", "job.yml"}, wantPos: []string{"wf.cwl", "job.yml"}},
		{
			name: "flags before", args: []string{"--json", "--type", "CWL", "wf.cwl", "job.yml"},
			wantPos: []string{"wf.cwl", "job.yml"}, wantJSON: true, wantType: "CWL",
		},
		{
			name: "flags between", args: []string{"wf.cwl", "--tag", "a=1", "-json", "job.yml"},
			wantPos: []string{"wf.cwl", "job.yml"}, wantJSON: true, wantTags: []string{"a=1"},
		},
		{
			name: "flags after", args: []string{"wf.cwl", "job.yml", "--type=WDL", "--tag", "a=1", "--tag", "b=2"},
			wantPos: []string{"wf.cwl", "job.yml"}, wantType: "WDL", wantTags: []string{"a=1", "b=2"},
		},
		{
			name: "flags everywhere", args: []string{"--tag", "a=1", "wf.cwl", "--json", "job.yml", "--tag", "b=2"},
			wantPos: []string{"wf.cwl", "job.yml"}, wantJSON: true, wantTags: []string{"a=1", "b=2"},
		},
		{name: "unknown flag", args: []string{"wf.cwl", "--nope"}, wantErr: true},
		{name: "flag without its value", args: []string{"wf.cwl", "--type"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			asJSON := fs.Bool("json", false, "")
			typ := fs.String("type", "", "")
			var tags multiFlag
			fs.Var(&tags, "tag", "")
			pos, err := parseFlags(fs, tt.args)
			if tt.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.wantPos, pos)
			require.Equal(t, tt.wantJSON, *asJSON)
			require.Equal(t, tt.wantType, *typ)
			require.Equal(t, multiFlag(tt.wantTags), tags)
		})
	}
}

func TestGuessWorkflowType(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, file, data      string
		wantType, wantVersion string
	}{
		{name: "CWL v1.0", file: "wf.cwl", data: "#!/usr/bin/env cwl-runner\ncwlVersion: v1.0\nclass: Workflow\n", wantType: "CWL", wantVersion: "v1.0"},
		{name: "CWL v1.2", file: "dir/tool.cwl", data: "class: CommandLineTool\ncwlVersion: v1.2\n", wantType: "CWL", wantVersion: "v1.2"},
		{name: "CWL quoted", file: "wf.cwl", data: "cwlVersion: \"v1.1\"\n", wantType: "CWL", wantVersion: "v1.1"},
		{name: "CWL in JSON", file: "wf.cwl", data: "{\n  \"cwlVersion\": \"v1.2\",\n  \"class\": \"Workflow\"\n}\n", wantType: "CWL", wantVersion: "v1.2"},
		{name: "CWL in one-line JSON", file: "wf.cwl", data: `{"class": "CommandLineTool", "cwlVersion": "v1.2"}`, wantType: "CWL", wantVersion: "v1.2"},
		{name: "CWL named .yml", file: "hello.yml", data: "class: CommandLineTool\ncwlVersion: v1.1\n", wantType: "CWL", wantVersion: "v1.1"},
		{name: "YAML that is no CWL", file: "job.yml", data: "reads: a.fq\n", wantType: "", wantVersion: ""},
		{name: "CWL upper-case extension", file: "WF.CWL", data: "cwlVersion: v1.2\n", wantType: "CWL", wantVersion: "v1.2"},
		{name: "CWL without version", file: "wf.cwl", data: "class: Workflow\n", wantType: "CWL", wantVersion: ""},
		{name: "WDL 1.0", file: "wf.wdl", data: "version 1.0\n\nworkflow w {}\n", wantType: "WDL", wantVersion: "1.0"},
		{name: "WDL 1.1 after a comment", file: "wf.wdl", data: "# a workflow\nversion 1.1\n", wantType: "WDL", wantVersion: "1.1"},
		{name: "WDL draft-2", file: "wf.wdl", data: "workflow w {}\n", wantType: "WDL", wantVersion: "draft-2"},
		{name: "Nextflow", file: "main.nf", data: "workflow {}\n", wantType: "NFL", wantVersion: "DSL2"},
		{name: "Snakefile", file: "dir/Snakefile", data: "rule all:\n", wantType: "SMK", wantVersion: "7"},
		{name: "smk", file: "rules.smk", data: "rule all:\n", wantType: "SMK", wantVersion: "7"},
		{name: "unknown", file: "wf.py", data: "cwlVersion: v1.2\nversion 1.0\n", wantType: "", wantVersion: ""},
		{name: "no extension", file: "workflow", data: "cwlVersion: v1.2\n", wantType: "", wantVersion: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			typ, version := guessWorkflowType(tt.file, []byte(tt.data))
			require.Equal(t, tt.wantType, typ)
			require.Equal(t, tt.wantVersion, version)
		})
	}
}

func TestParamsJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in, want string
		wantErr        bool
	}{
		{name: "YAML mapping", in: "message: hello\ncount: 3\nreads:\n  class: File\n  location: a.txt\n",
			want: `{"count":3,"message":"hello","reads":{"class":"File","location":"a.txt"}}`},
		{name: "JSON object", in: `{"message": "hello", "list": [1, 2]}`, want: `{"list":[1,2],"message":"hello"}`},
		{name: "empty mapping", in: "{}", want: `{}`},
		{name: "YAML list", in: "- a\n- b\n", wantErr: true},
		{name: "JSON array", in: `[{"a":1}]`, wantErr: true},
		{name: "scalar", in: "hello", wantErr: true},
		{name: "number", in: "42", wantErr: true},
		{name: "empty", in: "", wantErr: true},
		{name: "null", in: "null", wantErr: true},
		{name: "malformed", in: "a: [1, 2\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := paramsJSON([]byte(tt.in))
			if tt.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.JSONEq(t, tt.want, string(got))
		})
	}
}

func TestFileLocations(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, params string
		want         []string
	}{
		{name: "none", params: `{"message":"hi","n":3}`, want: nil},
		{name: "location", params: `{"a":{"class":"File","location":"data/a.txt"}}`, want: []string{"data/a.txt"}},
		{name: "path when no location", params: `{"a":{"class":"File","path":"b.txt"}}`, want: []string{"b.txt"}},
		{name: "location before path", params: `{"a":{"class":"File","location":"a.txt","path":"b.txt"}}`, want: []string{"a.txt"}},
		{
			name: "nested in lists and records, sorted, without duplicates",
			params: `{"z":{"class":"File","location":"z.txt"},
				"list":[{"class":"File","location":"b.txt"},{"class":"File","location":"a.txt"},{"class":"File","location":"b.txt"}],
				"rec":{"inner":[[{"class":"File","location":"deep/c.txt"}]]}}`,
			want: []string{"a.txt", "b.txt", "deep/c.txt", "z.txt"},
		},
		{
			name: "absolute paths and URLs are not attached",
			params: `{"a":{"class":"File","location":"/data/a.txt"},"b":{"class":"File","location":"https://example.org/b.txt"},
				"c":{"class":"File","path":"file:///tmp/c.txt"},"d":{"class":"File","location":"d.txt"}}`,
			want: []string{"d.txt"},
		},
		{name: "a Directory", params: `{"a":{"class":"Directory","location":"dir"}}`, want: []string{"dir"}},
		{name: "not a File or Directory", params: `{"b":{"location":"x.txt"},"c":{"class":"Other","location":"y.txt"}}`, want: nil},
		{name: "not JSON", params: `nope`, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			relative, _ := fileLocations(json.RawMessage(tt.params))
			require.Equal(t, tt.want, relative)
		})
	}
}

// writeFiles writes files (slash-separated names relative to dir).
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o750))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	}
}

// cwlProject is a CWL workflow whose steps run tools in sub-directories and
// a sub-workflow that refers back to a tool by a relative path.
var cwlProject = map[string]string{
	"wf/main.cwl": `cwlVersion: v1.2
class: Workflow
inputs:
  reads: File
outputs: []
steps:
  echo:
    run: tools/echo.cwl
    in: {reads: reads}
    out: []
  inner:
    run: "sub/inner.cwl"
    in: {reads: reads}
    out: []
  remote:
    run: https://example.org/remote.cwl
    in: {}
    out: []
  inline:
    run:
      class: CommandLineTool
      baseCommand: "true"
    in: {}
    out: []
`,
	"wf/tools/echo.cwl": "cwlVersion: v1.2\nclass: CommandLineTool\nbaseCommand: echo\n",
	"wf/sub/inner.cwl": `cwlVersion: v1.2
class: Workflow
steps:
  count:
    run: ../tools/wc.cwl
  again:
    run: ../tools/echo.cwl
`,
	"wf/tools/wc.cwl":        "cwlVersion: v1.2\nclass: CommandLineTool\nbaseCommand: wc\n",
	"wf/tools/unused.cwl":    "cwlVersion: v1.2\nclass: CommandLineTool\n",
	"wf/job.yml":             "reads:\n  class: File\n  location: data/in.txt\nlabel: x\n",
	"wf/data/in.txt":         "line 1\nline 2\n",
	"wf/hello.wdl":           "version 1.0\nimport \"tasks/greet.wdl\" as greet\nimport \"https://example.org/remote.wdl\"\nworkflow hello {}\n",
	"wf/tasks/greet.wdl":     "version 1.0\n  import '../tasks/count.wdl'\ntask greet {}\n", // single-quoted: a WDL string too
	"wf/tasks/count.wdl":     "version 1.0\ntask count {}\n",
	"wf/wdl-inputs.json":     `{"hello.reads": "data/in.txt", "hello.all": ["data/in.txt", "not a file"], "hello.n": 3, "hello.url": "https://example.org/x.txt"}`,
	"wf/extra/notes.txt":     "notes\n",
	"outside.txt":            "outside\n",
	"outside.cwl":            "cwlVersion: v1.2\nclass: CommandLineTool\n",
	"wf/job-outside.yml":     "reads:\n  class: File\n  location: ../outside.txt\n",
	"wf/list.yml":            "- a\n- b\n",
	"wf/escape.cwl":          "cwlVersion: v1.2\nclass: Workflow\nsteps:\n  s:\n    run: ../outside.cwl\n",
	"wf/untyped.workflow":    "something\n",
	"wf/Snakefile":           "configfile: \"config.yaml\"\nrule all:\n",
	"wf/config.yaml":         "samples: [a]\n",
	"wf/job-abs-and-url.yml": "a:\n  class: File\n  location: https://example.org/a.txt\n",
	"wf/jobs/job.yml":        "reads:\n  class: File\n  location: in2.txt\n",
	"wf/job-dir.yml":         "ref:\n  class: Directory\n  location: ref\n",
	"wf/ref/a.txt":           "a\n",
	"wf/ref/sub/b.txt":       "b\n",
	"wf/jobs/in2.txt":        "line\n",
}

func TestBuildSubmission(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	writeFiles(t, root, cwlProject)
	wf := filepath.Join(root, "wf")
	read := func(name string) []byte {
		data, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(name)))
		require.NoError(t, err)
		return data
	}

	tests := []struct {
		name            string
		workflow        string
		params          []string
		typ, version    string
		extra           []string
		wantErr         string
		wantType        string
		wantVersion     string
		wantURL         string
		wantAttachments []string // relative to root
		wantParams      string
	}{
		{
			name:     "CWL with tools in sub-directories and a job",
			workflow: "wf/main.cwl", params: []string{"wf/job.yml"},
			wantType: "CWL", wantVersion: "v1.2", wantURL: "main.cwl",
			wantAttachments: []string{"wf/main.cwl", "wf/tools/echo.cwl", "wf/sub/inner.cwl", "wf/tools/wc.cwl", "wf/data/in.txt"},
			wantParams:      `{"reads":{"class":"File","location":"data/in.txt"},"label":"x"}`,
		},
		{
			name:     "a job in a sub-directory names its input by the attachment's name",
			workflow: "wf/main.cwl", params: []string{"wf/jobs/job.yml"},
			wantType: "CWL", wantVersion: "v1.2", wantURL: "main.cwl",
			wantAttachments: []string{"wf/main.cwl", "wf/tools/echo.cwl", "wf/sub/inner.cwl", "wf/tools/wc.cwl", "wf/jobs/in2.txt"},
			wantParams:      `{"reads":{"class":"File","location":"jobs/in2.txt"}}`,
		},
		{
			name:     "a Directory input attaches the files below it",
			workflow: "wf/main.cwl", params: []string{"wf/job-dir.yml"},
			wantType: "CWL", wantVersion: "v1.2", wantURL: "main.cwl",
			wantAttachments: []string{"wf/main.cwl", "wf/tools/echo.cwl", "wf/sub/inner.cwl", "wf/tools/wc.cwl", "wf/ref/a.txt", "wf/ref/sub/b.txt"},
			wantParams:      `{"ref":{"class":"Directory","location":"ref"}}`,
		},
		{
			name:     "--attach of a directory",
			workflow: "wf/tools/echo.cwl", extra: []string{"wf/tools"},
			wantType: "CWL", wantVersion: "v1.2", wantURL: "echo.cwl",
			wantAttachments: []string{"wf/tools/echo.cwl", "wf/tools/wc.cwl", "wf/tools/unused.cwl"},
		},
		{
			name:     "extra attachment, explicit type and version",
			workflow: "wf/main.cwl", typ: "CWL", version: "v1.0", extra: []string{"wf/extra/notes.txt"},
			wantType: "CWL", wantVersion: "v1.0", wantURL: "main.cwl",
			wantAttachments: []string{"wf/main.cwl", "wf/tools/echo.cwl", "wf/sub/inner.cwl", "wf/tools/wc.cwl", "wf/extra/notes.txt"},
		},
		{
			name:     "Snakefile and its configfile",
			workflow: "wf/Snakefile",
			wantType: "SMK", wantVersion: "7", wantURL: "Snakefile",
			wantAttachments: []string{"wf/Snakefile", "wf/config.yaml"},
		},
		{
			name:     "WDL with its imports, and the input files its params name",
			workflow: "wf/hello.wdl", params: []string{"wf/wdl-inputs.json"},
			wantType: "WDL", wantVersion: "1.0", wantURL: "hello.wdl",
			wantAttachments: []string{"wf/hello.wdl", "wf/tasks/greet.wdl", "wf/tasks/count.wdl", "wf/data/in.txt"},
			wantParams:      `{"hello.reads": "data/in.txt", "hello.all": ["data/in.txt", "not a file"], "hello.n": 3, "hello.url": "https://example.org/x.txt"}`,
		},
		{
			name:     "remote input files are not attached",
			workflow: "wf/tools/echo.cwl", params: []string{"wf/job-abs-and-url.yml"},
			wantType: "CWL", wantVersion: "v1.2", wantURL: "echo.cwl",
			wantAttachments: []string{"wf/tools/echo.cwl"},
			wantParams:      `{"a":{"class":"File","location":"https://example.org/a.txt"}}`,
		},
		{name: "params not a mapping", workflow: "wf/main.cwl", params: []string{"wf/list.yml"}, wantErr: "must be a mapping"},
		{name: "missing params file", workflow: "wf/main.cwl", params: []string{"wf/nope.yml"}, wantErr: "nope.yml"},
		{name: "missing workflow", workflow: "wf/nope.cwl", wantErr: "nope.cwl"},
		{name: "type cannot be guessed", workflow: "wf/untyped.workflow", wantErr: "--type and --version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			abs := func(name string) string { return filepath.Join(root, filepath.FromSlash(name)) }
			var params, extra []string
			for _, p := range tt.params {
				params = append(params, abs(p))
			}
			for _, p := range tt.extra {
				extra = append(extra, abs(p))
			}
			sub, err := buildSubmission(abs(tt.workflow), params, tt.typ, tt.version, extra)
			if tt.wantErr != "" {
				require.Error(t, err)
				require.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.wantType, sub.WorkflowType)
			require.Equal(t, tt.wantVersion, sub.WorkflowTypeVersion)
			require.Equal(t, tt.wantURL, sub.WorkflowURL)
			want := map[string][]byte{}
			for _, name := range tt.wantAttachments {
				rel, err := filepath.Rel(filepath.Dir(abs(tt.workflow)), abs(name))
				require.NoError(t, err)
				want[filepath.ToSlash(rel)] = read(name)
			}
			require.Equal(t, want, sub.Attachments)
			if tt.wantParams == "" {
				require.Empty(t, sub.Params)
			} else {
				require.JSONEq(t, tt.wantParams, string(sub.Params))
			}
		})
	}
	require.DirExists(t, wf)
}

// Paths given relative to the working directory and absolute ones mix.
func TestBuildSubmissionRelativePaths(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, root, cwlProject)
	t.Chdir(root)
	sub, err := buildSubmission("wf/main.cwl", []string{filepath.Join(root, "wf", "job.yml")}, "", "", []string{filepath.Join(root, "wf", "extra", "notes.txt")})
	require.NoError(t, err)
	require.Contains(t, sub.Attachments, "extra/notes.txt")
	require.Contains(t, sub.Attachments, "data/in.txt")
	sub, err = buildSubmission(filepath.Join(root, "wf", "main.cwl"), []string{"wf/job.yml"}, "", "", nil)
	require.NoError(t, err)
	require.Contains(t, sub.Attachments, "data/in.txt")

	// --attach ./DIR: its files under their names below the workflow's
	// directory, a link to a file as the file it names.
	require.NoError(t, os.Symlink(filepath.Join(root, "outside.txt"), filepath.Join(root, "wf", "extra", "linked.txt")))
	sub, err = buildSubmission("wf/main.cwl", nil, "", "", []string{"./wf/extra"})
	require.NoError(t, err)
	require.Equal(t, "notes\n", string(sub.Attachments["extra/notes.txt"]), "names: %v", slices.Collect(maps.Keys(sub.Attachments)))
	require.Equal(t, "outside\n", string(sub.Attachments["extra/linked.txt"]))
}

func TestRunExit(t *testing.T) {
	t.Parallel()
	code := func(n int) *int { return &n }
	tests := []struct {
		name     string
		state    string
		exitCode *int
		want     error
	}{
		{name: "complete", state: "COMPLETE", exitCode: code(0), want: nil},
		{name: "complete without exit code", state: "COMPLETE", want: nil},
		{name: "executor error with exit code 4", state: "EXECUTOR_ERROR", exitCode: code(4), want: exitCodeError{4}},
		{name: "executor error with exit code 0", state: "EXECUTOR_ERROR", exitCode: code(0), want: exitCodeError{1}},
		{name: "executor error without exit code", state: "EXECUTOR_ERROR", want: exitCodeError{1}},
		{name: "system error", state: "SYSTEM_ERROR", want: exitCodeError{1}},
		{name: "canceled", state: "CANCELED", want: exitCodeError{1}},
		{name: "canceled after the engine exited 130", state: "CANCELED", exitCode: code(130), want: exitCodeError{130}},
		{name: "an exit code a process cannot have", state: "EXECUTOR_ERROR", exitCode: code(256), want: exitCodeError{1}},
		{name: "a negative exit code", state: "EXECUTOR_ERROR", exitCode: code(-1), want: exitCodeError{1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rl := &client.RunLog{State: tt.state, RunLog: client.Log{ExitCode: tt.exitCode}}
			err := runExit(rl)
			if tt.want == nil {
				require.NoError(t, err)
				return
			}
			var ec exitCodeError
			require.ErrorAs(t, err, &ec)
			require.Equal(t, tt.want, ec)
		})
	}
}

// A followed log whose stream ends before the run (the API restarting) is
// followed again, without printing twice what was printed.
func TestFollowLogResumes(t *testing.T) {
	t.Parallel()
	var streams, statuses atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/status"):
			state := "RUNNING"
			if statuses.Add(1) > 1 {
				state = "COMPLETE"
			}
			fmt.Fprintf(w, `{"run_id":"r","state":%q}`, state)
		case strings.HasSuffix(r.URL.Path, "/logs/stdout"):
			require.Equal(t, "true", r.URL.Query().Get("follow"))
			if streams.Add(1) == 1 {
				io.WriteString(w, "line 1\n") // and the server goes away
				return
			}
			io.WriteString(w, "line 1\nline 2\n")
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	c := client.New(srv.URL, "")
	var out bytes.Buffer
	require.NoError(t, followLog(context.Background(), c, "r", srv.URL+"/runs/r/logs/stdout", &out))
	require.Equal(t, "line 1\nline 2\n", out.String())
	require.EqualValues(t, 2, streams.Load())
}

// runs list --all prints every page, each row with its run's workflow
// type, or "?" when the run cannot be read.
func TestRunsListPages(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/runs":
			if r.URL.Query().Get("page_token") == "" {
				io.WriteString(w, `{"runs":[{"run_id":"a","state":"COMPLETE","tags":{}},{"run_id":"b","state":"RUNNING","tags":{}}],"next_page_token":"p2"}`)
				return
			}
			io.WriteString(w, `{"runs":[{"run_id":"c","state":"QUEUED","tags":{"k":"v"}}],"next_page_token":""}`)
		case "/runs/b":
			http.Error(w, `{"msg":"boom","status_code":500}`, http.StatusInternalServerError)
		default:
			fmt.Fprintf(w, `{"run_id":%q,"request":{"workflow_type":"CWL","workflow_type_version":"v1.2"}}`, strings.TrimPrefix(r.URL.Path, "/runs/"))
		}
	}))
	t.Cleanup(srv.Close)
	var out bytes.Buffer
	env := &environment{stdout: &out}
	asJSON := false
	fs := flag.NewFlagSet("list", flag.ContinueOnError)
	require.NoError(t, runsList(context.Background(), env, client.New(srv.URL, ""), fs, &asJSON, []string{"--all", "--page-size", "2"}))
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 4, out.String())
	require.Regexp(t, `^a\s+COMPLETE\s+CWL v1.2`, lines[1])
	require.Regexp(t, `^b\s+RUNNING\s+\?`, lines[2])
	require.Regexp(t, `^c\s+QUEUED\s+CWL v1.2\s+.*k=v`, lines[3])

	// Without --all: one page, and how to get the next; with --json, the
	// token a script passes back.
	out.Reset()
	var errOut bytes.Buffer
	env.stderr = &errOut
	require.NoError(t, runsList(context.Background(), env, client.New(srv.URL, ""), flag.NewFlagSet("list", flag.ContinueOnError), &asJSON, []string{"--page-size", "2"}))
	require.Len(t, strings.Split(strings.TrimSpace(out.String()), "\n"), 3, out.String())
	require.Contains(t, errOut.String(), "--page-token p2")
	asJSON = true
	for _, tc := range []struct {
		args      []string
		wantRuns  []string
		wantToken string
	}{
		{args: []string{"--page-size", "2"}, wantRuns: []string{"a", "b"}, wantToken: "p2"},
		{args: []string{"--page-size", "2", "--page-token", "p2"}, wantRuns: []string{"c"}},
		{args: []string{"--all"}, wantRuns: []string{"a", "b", "c"}},
	} {
		out.Reset()
		require.NoError(t, runsList(context.Background(), env, client.New(srv.URL, ""), flag.NewFlagSet("list", flag.ContinueOnError), &asJSON, tc.args))
		var page client.RunList
		require.NoError(t, json.Unmarshal(out.Bytes(), &page), out.String())
		var ids []string
		for _, r := range page.Runs {
			ids = append(ids, r.RunID)
		}
		require.Equal(t, tc.wantRuns, ids, "%v", tc.args)
		require.Equal(t, tc.wantToken, page.NextPageToken, "%v", tc.args)
	}
}

// References in the forms CWL documents write them are attached: list items,
// flow mappings, quotes, fragments, comments, JSON, and a default's file.
func TestCWLReferencesAttached(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	writeFiles(t, root, map[string]string{
		"wf.cwl": `cwlVersion: v1.2
class: Workflow
requirements:
  - $import: types.yml
  - class: InlineJavascriptRequirement
    expressionLib:
      - { $include: lib.js }
inputs:
  whale:
    type: File
    default: {class: File, location: whale.txt}
steps:
  a:
    run: 'a.cwl' # the first tool
  b:
    run: b.cwl#main
  c: {"run": "c.cwl", "in": {}}
  d:
    run: https://example.org/d.cwl
`,
		"types.yml": "- name: T\n", "lib.js": "var x;\n", "whale.txt": "whale\n",
		"a.cwl": "cwlVersion: v1.2\n", "b.cwl": "cwlVersion: v1.2\n", "c.cwl": "cwlVersion: v1.2\n",
		"unused.cwl": "cwlVersion: v1.2\n",
	})
	sub, err := buildSubmission(filepath.Join(root, "wf.cwl"), nil, "", "", nil)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"wf.cwl", "types.yml", "lib.js", "whale.txt", "a.cwl", "b.cwl", "c.cwl"}, slices.Collect(maps.Keys(sub.Attachments)))
}

// cwl-runner's Directory outputs whose files the server stored get the
// directory of --outdir their listing is in; an empty one its basename.
func TestPlaceDirectories(t *testing.T) {
	t.Parallel()
	outdir := t.TempDir()
	var outputs any
	require.NoError(t, json.Unmarshal([]byte(`{
		"d": {"class": "Directory", "basename": "outd", "listing": [
			{"class": "File", "basename": "a.txt", "path": "`+outdir+`/outd/a.txt", "location": "file://`+outdir+`/outd/a.txt"},
			{"class": "Directory", "basename": "sub", "listing": [
				{"class": "File", "basename": "b.txt", "path": "`+outdir+`/outd/sub/b.txt"}]}]},
		"empty": {"class": "Directory", "basename": "nothing", "listing": []},
		"hostile": {"class": "Directory", "basename": "../up", "listing": []},
		"elsewhere": {"class": "Directory", "basename": "e", "listing": [
			{"class": "File", "basename": "x", "path": "`+outdir+`-not/made/x"}]},
		"f": {"class": "File", "path": "`+outdir+`/f.txt"}}`), &outputs))
	require.NoError(t, placeDirectories(outputs, outdir))
	o := outputs.(map[string]any)
	d := o["d"].(map[string]any)
	require.Equal(t, filepath.Join(outdir, "outd"), d["path"])
	require.Equal(t, "file://"+filepath.Join(outdir, "outd"), d["location"])
	sub := d["listing"].([]any)[1].(map[string]any)
	require.Equal(t, filepath.Join(outdir, "outd", "sub"), sub["path"])
	require.Equal(t, filepath.Join(outdir, "nothing"), o["empty"].(map[string]any)["path"])
	require.DirExists(t, filepath.Join(outdir, "nothing"), "an empty output directory is created")
	require.NotContains(t, o["hostile"], "path", "a basename that leaves --outdir is not placed")
	require.NotContains(t, o["elsewhere"], "path", "a listing outside --outdir is not placed")
	require.NoDirExists(t, outdir+"-not", "nothing is created outside --outdir")
}

// Downloaded outputs do not replace existing files (a workflow names its
// outputs: .git/hooks/pre-commit, .bashrc) unless asked to, and a replaced
// file does not keep the old one's mode.
func TestDownloadDoesNotOverwrite(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "from the workflow\n")
	}))
	t.Cleanup(srv.Close)
	c := client.New(srv.URL, "")
	dir := t.TempDir()
	hook := filepath.Join(dir, ".git", "hooks", "pre-commit")
	require.NoError(t, os.MkdirAll(filepath.Dir(hook), 0o755))
	require.NoError(t, os.WriteFile(hook, []byte("#!/bin/sh\n"), 0o755))
	files := []client.OutputFile{
		{Path: "new.txt", URL: srv.URL + "/o/new.txt"},
		{Path: ".git/hooks/pre-commit", URL: srv.URL + "/o/hook"},
	}

	err := download(context.Background(), c, files, dir, false)
	require.ErrorContains(t, err, "exists already")
	require.ErrorContains(t, err, "--overwrite")
	data, err := os.ReadFile(hook)
	require.NoError(t, err)
	require.Equal(t, "#!/bin/sh\n", string(data), "the existing file is untouched")

	require.NoError(t, os.Remove(filepath.Join(dir, "new.txt")))
	require.NoError(t, download(context.Background(), c, files, dir, true))
	data, err = os.ReadFile(hook)
	require.NoError(t, err)
	require.Equal(t, "from the workflow\n", string(data))
	fi, err := os.Stat(hook)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o644), fi.Mode().Perm(), "a replaced file is a new file, not executable")
}

// Files beside or above the workflow's directory (a job file and its data
// in tests/, the tool in tests/wf/, as CWL conformance tests are laid
// out) are attached below their deepest common directory, and the
// workflow_url names the workflow there.
func TestBuildSubmissionBeyondTheWorkflowsDirectory(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	writeFiles(t, root, cwlProject)
	in := func(name string) string { return filepath.Join(root, filepath.FromSlash(name)) }
	names := func(sub client.Submission) []string { return slices.Collect(maps.Keys(sub.Attachments)) }

	sub, err := buildSubmission(in("wf/main.cwl"), []string{in("wf/job-outside.yml")}, "", "", nil)
	require.NoError(t, err)
	require.Equal(t, "wf/main.cwl", sub.WorkflowURL)
	require.ElementsMatch(t, []string{"wf/main.cwl", "wf/tools/echo.cwl", "wf/sub/inner.cwl", "wf/tools/wc.cwl", "outside.txt"}, names(sub))
	require.JSONEq(t, `{"reads":{"class":"File","location":"outside.txt"}}`, string(sub.Params))

	// What a workflow names outside its directory (and the current one)
	// goes only when --attach names it.
	_, err = buildSubmission(in("wf/escape.cwl"), nil, "", "", nil)
	require.ErrorContains(t, err, "outside its directory and the current one")
	require.ErrorContains(t, err, "--attach "+in("outside.cwl"))
	sub, err = buildSubmission(in("wf/escape.cwl"), nil, "", "", []string{in("outside.cwl")})
	require.NoError(t, err)
	require.Equal(t, "wf/escape.cwl", sub.WorkflowURL)
	require.ElementsMatch(t, []string{"wf/escape.cwl", "outside.cwl"}, names(sub))

	sub, err = buildSubmission(in("wf/main.cwl"), nil, "", "", []string{in("outside.txt")})
	require.NoError(t, err)
	require.Equal(t, "wf/main.cwl", sub.WorkflowURL)
	require.Contains(t, sub.Attachments, "outside.txt")
}

// A workflow's reference that leads out of its directory, by ../ or by a
// link (a cloned repository can hold one to ~/.ssh/id_rsa), is refused;
// the job's own inputs are the user's and go wherever they are.
func TestWorkflowReferencesStayInItsDirectory(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	secret := filepath.Join(t.TempDir(), "id_rsa")
	require.NoError(t, os.WriteFile(secret, []byte("PRIVATE KEY\n"), 0o600))
	writeFiles(t, root, map[string]string{
		"wf/up.cwl":   "cwlVersion: v1.2\nclass: CommandLineTool\ninputs:\n  k:\n    type: File\n    default: {class: File, location: ../../../../../../../../" + strings.TrimPrefix(secret, "/") + "}\n",
		"wf/link.cwl": "cwlVersion: v1.2\nclass: CommandLineTool\ninputs:\n  k:\n    type: File\n    default: {class: File, location: data/key}\n",
		"wf/ok.cwl":   "cwlVersion: v1.2\nclass: CommandLineTool\ninputs:\n  k: File\n",
		"wf/job.yml":  "k: {class: File, location: " + secret + "}\n",
	})
	require.NoError(t, os.MkdirAll(filepath.Join(root, "wf", "data"), 0o755))
	require.NoError(t, os.Symlink(secret, filepath.Join(root, "wf", "data", "key")))

	for _, wf := range []string{"wf/up.cwl", "wf/link.cwl"} {
		sub, err := buildSubmission(filepath.Join(root, wf), nil, "", "", nil)
		require.ErrorContains(t, err, "outside its directory and the current one", wf)
		for _, data := range sub.Attachments {
			require.NotContains(t, string(data), "PRIVATE KEY", wf)
		}
	}
	sub, err := buildSubmission(filepath.Join(root, "wf/ok.cwl"), []string{filepath.Join(root, "wf/job.yml")}, "", "", nil)
	require.NoError(t, err, "a job's inputs are the user's to send")
	require.Contains(t, sub.Attachments, localPrefix+"1/id_rsa")
}

// The standard Snakemake layout: workflow/Snakefile includes rules whose
// scripts lie beside them, and configfile: names config/ of the project
// directory, where snakemake runs (here, the current directory).
func TestSnakemakeProjectAttached(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, root, map[string]string{
		"workflow/Snakefile":         "configfile: \"config/config.yaml\"\ninclude: \"rules/a.smk\"\nrule all:\n    input: \"out.txt\"\n",
		"workflow/rules/a.smk":       "rule a:\n    output: \"out.txt\"\n    conda: '../envs/a.yaml'\n    script: \"../scripts/b.py\"\n",
		"workflow/scripts/b.py":      "open(snakemake.output[0], 'w').write('b')\n",
		"workflow/envs/a.yaml":       "dependencies: [python]\n",
		"config/config.yaml":         "samples: [a]\n",
		"workflow/scripts/unused.py": "",
	})
	t.Chdir(root)
	sub, err := buildSubmission("workflow/Snakefile", nil, "", "", nil)
	require.NoError(t, err)
	require.Equal(t, "workflow/Snakefile", sub.WorkflowURL)
	require.ElementsMatch(t, []string{"workflow/Snakefile", "workflow/rules/a.smk", "workflow/scripts/b.py", "workflow/envs/a.yaml", "config/config.yaml"},
		slices.Collect(maps.Keys(sub.Attachments)))
}

// A job's local files named by absolute path or file:// URL are attached
// under names of their own, and the params name them so.
func TestLocalJobInputsAttached(t *testing.T) {
	t.Parallel()
	root, data := t.TempDir(), t.TempDir()
	writeFiles(t, root, map[string]string{"wf/tool.cwl": "cwlVersion: v1.2\nclass: CommandLineTool\n"})
	writeFiles(t, data, map[string]string{"ref.fa": ">chr1\n", "reads.fq": "@r\n", "dir/a.txt": "a\n", "dir/sub/b.txt": "b\n"})
	job := filepath.Join(root, "wf", "job.json")
	require.NoError(t, os.WriteFile(job, []byte(`{
		"ref": {"class": "File", "location": "file://`+data+`/ref.fa"},
		"reads": {"class": "File", "path": "`+data+`/reads.fq"},
		"dir": {"class": "Directory", "location": "`+data+`/dir"},
		"remote": {"class": "File", "location": "/no/such/file.txt"}}`), 0o644))
	sub, err := buildSubmission(filepath.Join(root, "wf", "tool.cwl"), []string{job}, "", "", nil)
	require.NoError(t, err)
	require.Equal(t, "tool.cwl", sub.WorkflowURL, "the local files do not move the attachments' root")
	require.Equal(t, ">chr1\n", string(sub.Attachments["wes-local/3/ref.fa"]))
	require.Equal(t, "@r\n", string(sub.Attachments["wes-local/2/reads.fq"]))
	require.Equal(t, "b\n", string(sub.Attachments["wes-local/1/dir/sub/b.txt"]))
	require.JSONEq(t, `{
		"ref": {"class": "File", "location": "wes-local/3/ref.fa"},
		"reads": {"class": "File", "path": "wes-local/2/reads.fq"},
		"dir": {"class": "Directory", "location": "wes-local/1/dir"},
		"remote": {"class": "File", "location": "/no/such/file.txt"}}`, string(sub.Params))
}

// What the client says when a command has nothing to do, or failed: a
// cancel of a run that had ended, a run that ended in failure (where to
// look), a page size of 0, submit's key=value tags given to list, -h.
func TestClientSaysWhatHappened(t *testing.T) {
	t.Parallel()
	var listTags []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/runs/done/cancel", "/runs/failed/cancel":
			io.WriteString(w, `{"run_id":"done"}`)
		case "/runs/done/status":
			io.WriteString(w, `{"run_id":"done","state":"COMPLETE"}`)
		case "/runs/failed/status":
			io.WriteString(w, `{"run_id":"failed","state":"EXECUTOR_ERROR"}`)
		case "/runs/failed":
			io.WriteString(w, `{"run_id":"failed","state":"EXECUTOR_ERROR","run_log":{"exit_code":3,"system_logs":["attempt 1 on executor x"]}}`)
		case "/runs/never":
			io.WriteString(w, `{"run_id":"never","state":"CANCELED","run_log":{"system_logs":[]}}`)
		case "/runs":
			listTags = r.URL.Query()["tag"]
			io.WriteString(w, `{"runs":[],"next_page_token":""}`)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	getenv := func(k string) string {
		if k == "WES_API_URL" {
			return srv.URL
		}
		return ""
	}
	wes := func(args ...string) (string, string, error) {
		var out, errOut bytes.Buffer
		err := run(context.Background(), args, getenv, &out, &errOut)
		return out.String(), errOut.String(), err
	}

	_, stderr, err := wes("runs", "cancel", "done")
	require.NoError(t, err)
	require.Contains(t, stderr, "had ended already (COMPLETE): nothing was canceled")

	_, stderr, err = wes("runs", "wait", "failed")
	require.Equal(t, exitCodeError{3}, err)
	require.Contains(t, stderr, "attempt 1 on executor x")
	require.Contains(t, stderr, "wes runs logs failed --stderr")

	_, _, err = wes("runs", "list", "--page-size", "0")
	require.ErrorContains(t, err, "--page-size 0")

	_, _, err = wes("runs", "list", "--tag", "project=demo", "--tag", "a:b=c")
	require.NoError(t, err)
	require.Equal(t, []string{"project:demo", "a:b=c"}, listTags)

	for _, args := range [][]string{{"runs", "logs", "never"}, {"runs", "logs", "-f", "never"}} {
		_, _, err = wes(args...)
		require.ErrorContains(t, err, "has no log: it ended (CANCELED) before an engine ran it", args)
	}

	_, stderr, err = wes("runs", "submit", "-h")
	require.NoError(t, err, "help, as asked, is no failure")
	require.Contains(t, stderr, "-engine")
}

// Run from the home directory, a workflow below it still cannot reach the
// rest of it: the current directory is in scope only when it is a
// project's, below home.
func TestWorkflowReferencesFromHome(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	writeFiles(t, home, map[string]string{
		".ssh/id_rsa":            "PRIVATE KEY\n",
		"Downloads/evil/wf.cwl":  "cwlVersion: v1.2\nclass: CommandLineTool\ninputs:\n  k:\n    type: File\n    default: {class: File, location: ../../.ssh/id_rsa}\n",
		"project/wf/main.cwl":    "cwlVersion: v1.2\nclass: Workflow\nsteps:\n  s:\n    run: ../tools/t.cwl\n",
		"project/tools/t.cwl":    "cwlVersion: v1.2\nclass: CommandLineTool\n",
		"project/tools/other.md": "x\n",
	})
	t.Chdir(home)
	_, err := buildSubmission(filepath.Join(home, "Downloads/evil/wf.cwl"), nil, "", "", nil)
	require.ErrorContains(t, err, "outside its directory and the current one")

	t.Chdir(filepath.Join(home, "project")) // a project's directory
	sub, err := buildSubmission(filepath.Join(home, "project/wf/main.cwl"), nil, "", "", nil)
	require.NoError(t, err)
	require.Contains(t, sub.Attachments, "tools/t.cwl")
}

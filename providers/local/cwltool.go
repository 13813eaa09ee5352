package local

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/wes-dev/wes/models"
)

var cwlVersions = map[string][]string{"CWL": {"v1.0", "v1.1", "v1.2"}}

// cwlParams are the cwltool options a run may set; none can move the run's
// directories.
func cwlParams() []param {
	return []param{
		{name: "--parallel", kind: "flag"},
		{name: "--quiet", kind: "flag"},
		{name: "--debug", kind: "flag"},
		{name: "--verbose", kind: "flag"},
		{name: "--timestamps", kind: "flag"},
		{name: "--strict", kind: "flag"},
		{name: "--non-strict", kind: "flag"},
		{name: "--no-container", kind: "flag"},
		{name: "--enable-ext", kind: "flag"},
		{name: "--on-error", kind: "enum", values: []string{"stop", "continue"}},
	}
}

// cwltool runs CWL with the reference runner. It stops its jobs within a
// fraction of a second on SIGINT but waits for each child on SIGTERM.
func cwltool() engine {
	return engine{
		name: "cwltool", binary: "cwltool",
		versionArgs: []string{"--version"}, version: lastVersion,
		types:  cwlVersions,
		params: cwlParams(),
		stop:   syscall.SIGINT,
		argv: func(bin string, r *runSpec) []string {
			argv := []string{bin, "--disable-color",
				"--outdir", r.outputs,
				"--tmpdir-prefix", r.tmp + "/",
				"--tmp-outdir-prefix", r.tmp + "/",
			}
			argv = append(argv, r.engineArgs...)
			return append(argv, r.workflow, r.params)
		},
		outputs: cwlOutputs,
		tasks:   func() taskParser { return &cwlTasks{byName: map[string]*models.TaskLog{}} },
	}
}

// cwlOutputs returns the output object a CWL runner printed on stdout.
func cwlOutputs(_ *runSpec, stdout []byte) (json.RawMessage, error) {
	// The object is the last JSON document on stdout.
	s := strings.TrimSpace(string(stdout))
	i := strings.Index(s, "{")
	if i < 0 {
		return json.RawMessage(`{}`), nil
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(s[i:]), &v); err != nil {
		return nil, fmt.Errorf("output object is not JSON: %w", err)
	}
	return json.Marshal(v)
}

// cwltool logs "[job NAME] DIR$ CMD" when a tool starts and
// "[job NAME] completed success|permanentFail|…" when it ends; "[step NAME]
// start" for workflow steps.
var (
	cwlJobStart = regexp.MustCompile(`\[job ([^\]]+)\] \S*\$ (.*)$`)
	cwlJobEnd   = regexp.MustCompile(`\[job ([^\]]+)\] completed (\w+)`)
)

type cwlTasks struct {
	byName map[string]*models.TaskLog
	n      int
	// pending is a task whose command line goes on (lines ending in \).
	pending *models.TaskLog
}

func (c *cwlTasks) line(s string, now time.Time) []models.TaskLog {
	if t := c.pending; t != nil {
		more := strings.TrimSpace(s)
		t.Cmd = append(t.Cmd, strings.Fields(strings.TrimSuffix(more, `\`))...)
		if strings.HasSuffix(more, `\`) {
			return nil
		}
		c.pending = nil
		return []models.TaskLog{*t}
	}
	if m := cwlJobStart.FindStringSubmatch(s); m != nil {
		c.n++
		first := strings.TrimSpace(m[2])
		t := &models.TaskLog{ID: fmt.Sprintf("%d", c.n), Name: m[1], StartTime: &now,
			Cmd: strings.Fields(strings.TrimSuffix(first, `\`))}
		c.byName[m[1]] = t
		if strings.HasSuffix(first, `\`) {
			c.pending = t
			return nil
		}
		return []models.TaskLog{*t}
	}
	if m := cwlJobEnd.FindStringSubmatch(s); m != nil {
		t, ok := c.byName[m[1]]
		if !ok {
			return nil
		}
		code := 0
		if m[2] != "success" {
			code = 1
			t.SystemLogs = append(t.SystemLogs, "completed "+m[2])
		}
		t.EndTime, t.ExitCode = &now, &code
		delete(c.byName, m[1])
		return []models.TaskLog{*t}
	}
	return nil
}

package local

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/wes-dev/wes/models"
)

// engine is one adapter: how to find the engine, build its argument vector
// (never a shell string), stop it, and read what it reports.
type engine struct {
	name   string
	binary string
	// versionArgs make the binary print its version; version extracts it.
	versionArgs []string
	version     func(out string) string
	types       map[string][]string
	// typesFor, if set, gives the types by the version installed.
	typesFor func(version string) map[string][]string
	params   []param
	// stop is the signal that makes the engine stop its jobs quickly.
	stop syscall.Signal
	argv func(bin string, r *runSpec) []string
	// setup, if set, writes what the engine reads besides the run's
	// inputs, before it starts.
	setup func(r *runSpec) error
	// outputs reads the output object once the engine exited 0.
	outputs func(r *runSpec, stdout []byte) (json.RawMessage, error)
	// tasks returns a parser of the engine's log lines (may be nil).
	tasks func() taskParser
	// finish, if set, reads task logs the engine wrote to a file.
	finish func(r *runSpec) ([]models.TaskLog, error)
	// failure, if set, says from the engine's report why a run that exited
	// non-zero failed (its system logs).
	failure func(r *runSpec) []string
	// passEnv names the variables of the executor's environment the engine
	// is given (its runtime's, such as JAVA_HOME); envDefault, if set, gives
	// the value of one that is unset there ("" for none).
	passEnv    []string
	envDefault func(name string, getenv func(string) string) string
	// bareInputs: the engine's inputs name files by plain strings (WDL's
	// File values), not File objects: a relative string that names a staged
	// attachment becomes its path, and an absolute one that exists on the
	// host is refused unless local paths are allowed.
	bareInputs bool
	// outdirParam, if set, is the workflow parameter that names the output
	// directory; it is set to outputs/ unless the run gave it.
	outdirParam string
}

// taskParser turns log lines into task updates.
type taskParser interface {
	line(s string, now time.Time) []models.TaskLog
}

// param is a workflow_engine_parameters key an engine accepts.
type param struct {
	name string
	// kind: models.ParamFlag, ParamInt or ParamEnum (of values).
	kind   string
	values []string
	// arg renders the parameter; nil means --name or --name=value.
	arg func(value string) []string
}

func (p param) render(v *string) ([]string, error) {
	val := ""
	if v != nil {
		val = *v
	}
	if err := models.CheckEngineParameter(p.name, p.kind, p.values, val); err != nil {
		return nil, err
	}
	if p.kind == models.ParamFlag {
		if p.arg != nil {
			return p.arg(""), nil
		}
		return []string{p.name}, nil
	}
	if p.arg != nil {
		return p.arg(val), nil
	}
	return []string{p.name + "=" + val}, nil
}

// openRunFile opens path, a file the engine wrote below the run's
// directory dir, for reading: through an os.Root, and not through a link,
// so that a workflow (whose engine may run as another user) cannot make
// root read what a link it planted names.
func openRunFile(dir, path string) (*os.File, error) {
	rel, err := filepath.Rel(dir, path)
	if err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return root.OpenFile(rel, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
}

// linkOrCopy makes dst the file src, both named relative to root (the
// run's directory): a hard link, or a copy where the kernel refuses the
// link (a file of another user, such as a container's root, under
// fs.protected_hardlinks; another filesystem). Through root, no link a
// workflow planted below outputs/ (outputs/a -> /etc) leads root's link or
// copy out of the run's directory. An existing dst is left as it is: the
// error wraps fs.ErrExist.
func linkOrCopy(root *os.Root, src, dst string) error {
	err := root.Link(src, dst)
	if err == nil || errors.Is(err, fs.ErrExist) {
		return err
	}
	in, oerr := root.OpenFile(src, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if oerr != nil {
		return errors.Join(err, oerr)
	}
	defer in.Close()
	out, oerr := root.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if oerr != nil {
		return errors.Join(err, oerr)
	}
	if _, cerr := io.Copy(out, in); cerr != nil {
		out.Close()
		root.Remove(dst)
		return fmt.Errorf("copy %s: %w", src, cerr)
	}
	return out.Close()
}

// relIn returns p relative to dir, which holds it.
func relIn(dir, p string) (string, error) {
	rel, err := filepath.Rel(dir, p)
	if err != nil || !within(dir, p) {
		return "", fmt.Errorf("%s is not in %s", p, dir)
	}
	return rel, nil
}

// within reports whether p is dir or below it (both cleaned, absolute).
func within(dir, p string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// fileURL is the file:// URL of an absolute path, percent-encoded ("50%.txt"
// is file:///…/50%25.txt): what the executor parses to find stored outputs.
func fileURL(p string) string {
	return (&url.URL{Scheme: "file", Path: filepath.ToSlash(p)}).String()
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// engineArgs renders the run's workflow_engine_parameters through the
// allow-list, in a stable order.
func engineArgs(e engine, given map[string]*string) ([]string, error) {
	var out []string
	for _, p := range e.params {
		v, ok := given[p.name]
		if !ok {
			continue
		}
		args, err := p.render(v)
		if err != nil {
			return nil, err
		}
		out = append(out, args...)
	}
	for k := range given {
		if !containsParam(e.params, k) {
			return nil, fmt.Errorf("engine parameter %q is not accepted by %s", k, e.name)
		}
	}
	return out, nil
}

func containsParam(ps []param, name string) bool {
	for _, p := range ps {
		if p.name == name {
			return true
		}
	}
	return false
}

var versionRE = regexp.MustCompile(`\d+(\.\d+)+`)

// lastVersion returns the last dotted number in out ("cwltool 3.1.2" → "3.1.2").
func lastVersion(out string) string {
	all := versionRE.FindAllString(out, -1)
	if len(all) == 0 {
		return "unknown"
	}
	return all[len(all)-1]
}

// scanLines feeds each line of data to fn.
func scanLines(data string, fn func(string)) {
	sc := bufio.NewScanner(strings.NewReader(data))
	for sc.Scan() {
		fn(sc.Text())
	}
}

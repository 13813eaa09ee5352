package local

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/wes-dev/wes/models"
)

// maxCWLDocument bounds a CWL document checkCWLDocuments reads; a larger
// one is refused.
const maxCWLDocument = 16 << 20

// checkCWLDocuments refuses, while local paths are disabled, a workflow
// whose documents would make the engine read a file of the executor's
// host: a File or Directory whose location or path is absolute or file://
// (a default, say), or a run:, $import, $include or $mixin that is
// absolute, file:// or leads out of the attachments. It follows the
// documents the engine loads, from the workflow (its attachment) through
// run:, $import and $mixin, whatever their names; one it cannot check (too
// large, not YAML or JSON) is refused: the engine would not run it either.
// Params are checked by resolveInputs; a workflow_url of http(s) is the
// engine's to fetch, with what it names, and is not checked.
func checkCWLDocuments(inputs, workflow string) error {
	first := strings.SplitN(workflow, "#", 2)[0]
	if !within(inputs, first) {
		return nil
	}
	queue, seen := []string{first}, map[string]bool{first: true}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		name, _ := filepath.Rel(inputs, p)
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("the workflow loads %s, which is not attached", filepath.ToSlash(name))
		}
		if err != nil {
			return fmt.Errorf("attachment %s: %w", name, err)
		}
		if fi.Size() > maxCWLDocument {
			return fmt.Errorf("attachment %s: %d bytes is more than a CWL document may be here (%d) while local paths are disabled", name, fi.Size(), maxCWLDocument)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("read attachment %s: %w", name, err)
		}
		var doc any
		js, err := yaml.YAMLToJSON(data)
		if err == nil {
			err = yaml.Unmarshal(js, &doc)
		}
		if err != nil {
			return fmt.Errorf("attachment %s is not a CWL document (YAML or JSON), which is checked while local paths are disabled: %w", name, err)
		}
		dir := filepath.Dir(p)
		var refused error
		models.VisitObjects(doc, func(obj map[string]any) {
			keys := []string{"run", "$import", "$include", "$mixin"}
			if models.IsFileObject(obj) {
				keys = append(keys, "location", "path")
			}
			for _, k := range keys {
				ref, ok := obj[k].(string)
				if !ok || refused != nil {
					continue
				}
				if !localRefAllowed(ref, dir, inputs) {
					refused = fmt.Errorf("attachment %s: %s %q reads a file of the executor's host, and local paths are disabled (WES_ALLOW_LOCAL_WORKFLOWS); attach the file and name it relative to the document", name, k, ref)
					return
				}
				// A document the engine loads in turn (not $include's
				// text, nor a File's data).
				if target, ok := loadedDocument(k, ref, dir); ok && !seen[target] {
					seen[target] = true
					queue = append(queue, target)
				}
			}
		})
		if refused != nil {
			return refused
		}
	}
	return nil
}

// loadedDocument returns the path of the document a run:, $import or
// $mixin reference ref, in a document in dir, loads, if it names one.
func loadedDocument(key, ref, dir string) (string, bool) {
	if key != "run" && key != "$import" && key != "$mixin" {
		return "", false
	}
	u, err := url.Parse(ref)
	if err != nil || u.Scheme != "" || u.Path == "" {
		return "", false // a URL, or a #fragment of this document
	}
	return filepath.Join(dir, filepath.FromSlash(u.Path)), true
}

// localRefAllowed reports whether ref, named in a document in dir, stays
// off the host's files: a URL of another scheme, or a relative path that
// stays below inputs.
func localRefAllowed(ref, dir, inputs string) bool {
	if strings.HasPrefix(ref, "_:") { // a blank node: a literal, named by no path
		return true
	}
	u, err := url.Parse(ref)
	if err != nil {
		return false
	}
	switch {
	case u.Scheme == "file":
		return false
	case u.Scheme != "" && len(u.Scheme) > 1: // http:, https:, … (not a Windows drive letter)
		return true
	case filepath.IsAbs(u.Path):
		return false
	}
	p := filepath.Join(dir, filepath.FromSlash(u.Path))
	return within(inputs, p)
}

package local

import (
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/wes-dev/wes/models"
)

// maxCWLDocument bounds the attached documents checkCWLDocuments reads:
// larger ones are data, not CWL.
const maxCWLDocument = 16 << 20

// checkCWLDocuments refuses, while local paths are disabled, attached CWL
// documents (and YAML or JSON job files) that would make the engine read a
// file of the executor's host: a File or Directory whose location or path
// is absolute or file:// (a default, say), or a run:, $import, $include or
// $mixin that is absolute, file:// or leads out of the attachments. Params
// are checked by resolveInputs; this covers what the workflow itself names.
// A document that does not parse is left to the engine to refuse.
func checkCWLDocuments(inputs string, attachments []string) error {
	for _, name := range attachments {
		switch strings.ToLower(path.Ext(name)) {
		case ".cwl", ".yml", ".yaml", ".json":
		default:
			continue
		}
		p, err := inside(inputs, name)
		if err != nil {
			return err
		}
		fi, err := os.Stat(p)
		if err != nil || fi.Size() > maxCWLDocument {
			continue
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("read attachment %s: %w", name, err)
		}
		js, err := yaml.YAMLToJSON(data)
		if err != nil {
			continue
		}
		var doc any
		if yaml.Unmarshal(js, &doc) != nil {
			continue
		}
		dir := filepath.Dir(p)
		var refused error
		models.VisitObjects(doc, func(obj map[string]any) {
			if refused != nil {
				return
			}
			keys := []string{"run", "$import", "$include", "$mixin"}
			if models.IsFileObject(obj) {
				keys = append(keys, "location", "path")
			}
			for _, k := range keys {
				ref, ok := obj[k].(string)
				if ok && !localRefAllowed(ref, dir, inputs) {
					refused = fmt.Errorf("attachment %s: %s %q reads a file of the executor's host, and local paths are disabled (WES_ALLOW_LOCAL_WORKFLOWS); attach the file and name it relative to the document", name, k, ref)
					return
				}
			}
		})
		if refused != nil {
			return refused
		}
	}
	return nil
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
	return p == inputs || strings.HasPrefix(p, inputs+string(filepath.Separator))
}

package apiserver

import (
	"encoding/json"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"

	"github.com/gorilla/mux"

	"github.com/wes-dev/wes/events"
	"github.com/wes-dev/wes/models"
)

// outputFile is one stored output file of a run.
type outputFile struct {
	Path string `json:"path"`
	Size *int64 `json:"size,omitempty"`
	URL  string `json:"url"`
}

// resolveOutputs returns the outputs object with every stored file's
// location turned into an absolute URL of this API, and the files found.
func (h *handlers) resolveOutputs(r *http.Request, run *models.Run) (json.RawMessage, []outputFile) {
	if len(run.Outputs) == 0 || string(run.Outputs) == "null" {
		return json.RawMessage(`{}`), nil
	}
	var v any
	if err := json.Unmarshal(run.Outputs, &v); err != nil {
		return run.Outputs, nil
	}
	var files []outputFile
	models.VisitObjects(v, func(t map[string]any) {
		loc, ok := t["location"].(string)
		if !ok || !strings.HasPrefix(loc, events.OutputLocationScheme) {
			return
		}
		rel := strings.TrimPrefix(loc, events.OutputLocationScheme)
		u := h.url(r, "/runs/"+run.ID+"/outputs/"+escapePath(rel))
		t["location"] = u
		f := outputFile{Path: rel, URL: u}
		if size, ok := t["size"].(float64); ok {
			n := int64(size)
			f.Size = &n
		}
		if !slices.ContainsFunc(files, func(o outputFile) bool { return o.Path == rel }) {
			files = append(files, f)
		}
	})
	out, err := json.Marshal(v)
	if err != nil {
		return run.Outputs, files
	}
	slices.SortFunc(files, func(a, b outputFile) int { return strings.Compare(a.Path, b.Path) })
	return out, files
}

func escapePath(rel string) string {
	segs := strings.Split(rel, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

// listOutputs answers GET /runs/{id}/outputs: the stored output files.
func (h *handlers) listOutputs(w http.ResponseWriter, r *http.Request) {
	run, err := h.run(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	_, files := h.resolveOutputs(r, run)
	if files == nil {
		files = []outputFile{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"run_id": run.ID, "state": run.State, "files": files})
}

// getOutput answers GET /runs/{id}/outputs/{path}: one output file, with
// Range support.
func (h *handlers) getOutput(w http.ResponseWriter, r *http.Request) {
	v := mux.Vars(r)
	run, err := h.run(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	rel := v["path"]
	if rel == "" || path.Clean("/"+rel) != "/"+rel {
		h.fail(w, r, badRequest("output path %q is not a clean relative path", rel))
		return
	}
	h.serveObject(w, r, events.OutputKey(run.ID, rel), "", path.Base(rel),
		withStatus(http.StatusNotFound, nil, "run %s has no stored output %q", run.ID, rel))
}

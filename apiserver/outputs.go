package apiserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"

	"github.com/gorilla/mux"
	"github.com/nats-io/nats.go/jetstream"

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
	var walk func(any)
	walk = func(x any) {
		switch t := x.(type) {
		case map[string]any:
			if loc, ok := t["location"].(string); ok && strings.HasPrefix(loc, events.OutputLocationScheme) {
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
			}
			for _, c := range t {
				walk(c)
			}
		case []any:
			for _, c := range t {
				walk(c)
			}
		}
	}
	walk(v)
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
	run, err := h.s.store.GetRun(r.Context(), mux.Vars(r)["run_id"])
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
	ctx := r.Context()
	v := mux.Vars(r)
	run, err := h.s.store.GetRun(ctx, v["run_id"])
	if err != nil {
		h.fail(w, r, err)
		return
	}
	rel := v["path"]
	if rel == "" || path.Clean("/"+rel) != "/"+rel {
		h.fail(w, r, badRequest("output path %q is not a clean relative path", rel))
		return
	}
	key := events.OutputKey(run.ID, rel)
	info, err := h.s.bus.Objects.GetInfo(ctx, key)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		h.fail(w, r, withStatus(http.StatusNotFound, nil, "run %s has no stored output %q", run.ID, rel))
		return
	}
	if err != nil {
		h.fail(w, r, fmt.Errorf("read %s: %w: %w", key, errBrokerUnavailable, err))
		return
	}
	rs := &objectSeeker{ctx: ctx, objects: h.s.bus.Objects, key: key, size: int64(info.Size)}
	defer rs.Close()
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", path.Base(rel)))
	http.ServeContent(w, r, path.Base(rel), info.ModTime, rs)
}

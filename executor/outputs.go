package executor

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wes-dev/wes/events"
	"github.com/wes-dev/wes/models"
)

// storeOutputs uploads the files below dir to the object store (up to the
// configured total size) and rewrites the file:// locations of those files
// in outputs to events.OutputLocationScheme references. Files over the cap
// keep their local location, and the returned note says so.
func (a *attempt) storeOutputs(ctx context.Context, outputs json.RawMessage, dir string) (json.RawMessage, string, error) {
	if dir == "" || a.e.cfg.LocalOutputLocations {
		return outputs, "", nil
	}
	stored := map[string]bool{}
	var total int64
	var skipped []string
	// Through an os.Root: the engine may run as another user, who owns
	// dir and may swap a file for a link to one of ours while we walk; no
	// path is followed out of dir, and what is opened is checked to be a
	// regular file after it is opened.
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, "", fmt.Errorf("outputs: %w", err)
	}
	defer root.Close()
	err = fs.WalkDir(root.FS(), ".", func(rel string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !d.Type().IsRegular() {
			return err
		}
		f, err := root.OpenFile(rel, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		info, err := f.Stat()
		if err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil // swapped since the walk saw it
		}
		if total+info.Size() > a.e.cfg.MaxOutputBytes {
			skipped = append(skipped, rel)
			return nil
		}
		// nats.go's Put, not events.PutObject: outputs may be large, and
		// Put publishes their chunks without waiting for each ack. Each
		// file has the time its size needs.
		pctx, cancel := context.WithTimeout(ctx, events.TransferTimeout(uint64(info.Size())))
		defer cancel()
		if _, err := a.e.bus.Objects.Put(pctx, jetstream.ObjectMeta{Name: events.OutputKey(a.sub.RunID, rel)}, f); err != nil {
			return fmt.Errorf("store output %s: %w", rel, err)
		}
		total += info.Size()
		stored[rel] = true
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	note := ""
	if len(skipped) > 0 {
		// Those files are the run's only copy: its directory stays.
		a.keepDir = true
		note = fmt.Sprintf("%d output file(s) exceed WES_MAX_OUTPUT_BYTES (%d bytes) and stay in %s on executor %s: %s",
			len(skipped), a.e.cfg.MaxOutputBytes, dir, a.e.cfg.ID, strings.Join(skipped, ", "))
	}
	if len(outputs) == 0 {
		return outputs, note, nil
	}
	var v any
	if err := json.Unmarshal(outputs, &v); err != nil {
		return nil, "", fmt.Errorf("outputs: %w", err)
	}
	prefix := filepath.ToSlash(dir) + "/"
	models.VisitObjects(v, func(t map[string]any) {
		loc, ok := t["location"].(string)
		if !ok {
			return
		}
		// Engines percent-encode locations (cwltool: a%20b.txt).
		u, err := url.Parse(loc)
		if err != nil || u.Scheme != "file" || !strings.HasPrefix(u.Path, prefix) {
			return
		}
		rel := strings.TrimPrefix(u.Path, prefix)
		switch {
		case stored[rel]:
			t["location"] = events.OutputLocationScheme + rel
			delete(t, "path")
		case t["class"] == "Directory" && !slices.ContainsFunc(skipped, func(s string) bool { return strings.HasPrefix(s, rel+"/") }):
			// Its files are stored, and its listing names them by their
			// URLs: its own local location would dangle once the run's
			// directory is gone, and a Directory may be a listing alone.
			delete(t, "location")
			delete(t, "path")
		}
	})
	out, err := json.Marshal(v)
	return out, note, err
}

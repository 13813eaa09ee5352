package apiserver

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wes-dev/wes/events"
	"github.com/wes-dev/wes/models"
)

// Catalog knows which engines the live executors offer. It follows the
// executors bucket; an executor that stopped announcing itself for longer
// than the TTL is forgotten even if its entry has not expired yet.
//
// Every time is this process's clock, when an announcement was received:
// never the server's timestamp of the entry, which a skewed clock (or a
// NATS node's) would make look too old or too young.
type Catalog struct {
	ttl time.Duration
	now func() time.Time

	mu    sync.RWMutex
	execs map[string]seenExecutor
	// synced is when the current watch delivered the registry's full
	// contents; zero while a watch is starting or after one ended, when an
	// executor missing here may merely not have been heard from.
	synced time.Time
	// following is set once Run has started; firstSync is closed when the
	// first watch delivered the registry's contents.
	following bool
	firstSync chan struct{}
	// kv is the executors bucket Run follows.
	kv jetstream.KeyValue

	// refreshMu lets one refresh run at a time; refreshed is when the last
	// one ended. Requests that find no engine would otherwise each list
	// the registry (a consumer on the server per request).
	refreshMu sync.Mutex
	refreshed time.Time
}

// refreshEvery bounds how often refresh reads the registry.
const refreshEvery = time.Second

type seenExecutor struct {
	info events.ExecutorInfo
	seen time.Time
}

// preferred names the default engine of a workflow type when several
// engines accept it and the run names none.
var preferred = map[string][]string{
	"CWL": {"cwltool", "toil"},
	"SMK": {"snakemake"},
	"NFL": {"nextflow"},
	"WDL": {"cromwell"},
}

// NewCatalog returns an empty catalog whose entries live for ttl.
func NewCatalog(ttl time.Duration) *Catalog {
	return &Catalog{ttl: ttl, now: time.Now, execs: map[string]seenExecutor{}, firstSync: make(chan struct{})}
}

// Run follows the executors bucket until ctx ends.
func (c *Catalog) Run(ctx context.Context, kv jetstream.KeyValue, log *slog.Logger) error {
	c.mu.Lock()
	c.following, c.kv = true, kv
	c.mu.Unlock()
	for {
		err := c.follow(ctx, kv, log)
		if ctx.Err() != nil {
			return nil
		}
		if !errors.Is(err, errWatchStalled) {
			// Until the next watch has delivered the registry again, what
			// this catalog holds may be older than the TTL through no
			// executor's fault: it no longer says who is gone.
			c.unsync()
		}
		log.Warn("executor registry watch ended, restarting", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// errWatchStalled ends a watch that delivered nothing for a TTL while
// executors were listed: live executors announce themselves several times a
// TTL, so the watch lost its way (its consumer went with a NATS node).
var errWatchStalled = errors.New("no executor announced itself for a TTL; the watch may have stalled")

// follow runs one watch. Its initial values replace what the catalog held,
// so that executors whose entries lapsed meanwhile are forgotten.
func (c *Catalog) follow(ctx context.Context, kv jetstream.KeyValue, log *slog.Logger) error {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return err
	}
	defer w.Stop()
	initial := map[string]seenExecutor{} // nil once the initial values are in
	quiet := time.NewTimer(c.ttl)
	defer quiet.Stop()
	for {
		var entry jetstream.KeyValueEntry
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-quiet.C:
			c.mu.RLock()
			listed := len(c.execs)
			c.mu.RUnlock()
			if listed > 0 {
				return errWatchStalled
			}
			quiet.Reset(c.ttl)
			continue
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watch closed")
			}
			entry = e
		}
		quiet.Reset(c.ttl)
		if entry == nil { // initial values delivered
			c.mu.Lock()
			c.execs, initial = initial, nil
			if c.synced.IsZero() {
				c.synced = c.now()
			}
			select {
			case <-c.firstSync:
			default:
				close(c.firstSync)
			}
			c.mu.Unlock()
			continue
		}
		if entry.Operation() != jetstream.KeyValuePut {
			c.mu.Lock()
			delete(initial, entry.Key())
			delete(c.execs, entry.Key())
			c.mu.Unlock()
			continue
		}
		var info events.ExecutorInfo
		if err := json.Unmarshal(entry.Value(), &info); err != nil {
			log.Warn("undecodable executor entry", "key", entry.Key(), "err", err)
			continue
		}
		if initial != nil {
			initial[info.ID] = seenExecutor{info: info, seen: c.now()}
			continue
		}
		c.put(info, c.now())
	}
}

// refresh reads the registry itself, for a catalog whose watch may have
// missed announcements: every entry there is an executor that announced
// itself within the TTL, by the server's reckoning. Callers that come
// while a refresh runs, or within refreshEvery of the last one, get its
// result.
func (c *Catalog) refresh() {
	c.refreshMu.Lock()
	defer c.refreshMu.Unlock()
	if time.Since(c.refreshed) < refreshEvery {
		return
	}
	defer func() { c.refreshed = time.Now() }()
	c.mu.RLock()
	kv := c.kv
	c.mu.RUnlock()
	if kv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	keys, err := kv.Keys(ctx)
	if err != nil {
		return
	}
	for _, k := range keys {
		entry, err := kv.Get(ctx, k)
		if err != nil {
			continue
		}
		var info events.ExecutorInfo
		if json.Unmarshal(entry.Value(), &info) == nil {
			c.put(info, c.now())
		}
	}
}

func (c *Catalog) put(info events.ExecutorInfo, seen time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.execs[info.ID] = seenExecutor{info: info, seen: seen}
}

// unsync marks the catalog as not following the registry.
func (c *Catalog) unsync() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.synced = time.Time{}
}

// syncWait bounds how long a submission waits for a catalog that is
// starting to learn of the executors.
const syncWait = 5 * time.Second

// awaitFirstSync waits, up to syncWait, until the first watch has delivered
// the registry, so that an API that has just started does not refuse runs
// for want of engines it has not heard of yet.
func (c *Catalog) awaitFirstSync() {
	c.mu.RLock()
	following, first := c.following, c.firstSync
	c.mu.RUnlock()
	if !following {
		return
	}
	t := time.NewTimer(syncWait)
	defer t.Stop()
	select {
	case <-first:
	case <-t.C:
	}
}

func (c *Catalog) remove(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.execs, id)
}

// Lists reports whether executor id is listed: it announced itself within
// the TTL.
func (c *Catalog) Lists(id string) bool { return c.live(id) }

// live reports whether executor id announced itself within the TTL (a
// draining executor is live: it still holds its runs).
func (c *Catalog) live(id string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	ex, ok := c.execs[id]
	return ok && !ex.seen.Before(c.now().Add(-c.ttl))
}

// settled reports whether the catalog has followed the registry for a whole
// TTL, so that an executor missing from it is really gone (and not merely
// not heard from since this process started).
func (c *Catalog) settled() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return !c.synced.IsZero() && c.now().Sub(c.synced) >= c.ttl
}

// engines lists every engine offered by a live executor that is not
// draining, merged by name and version, sorted by name then version.
func (c *Catalog) engines() []events.EngineInfo {
	c.mu.RLock()
	defer c.mu.RUnlock()
	cutoff := c.now().Add(-c.ttl)
	merged := map[[2]string]events.EngineInfo{}
	for _, ex := range c.execs {
		if ex.seen.Before(cutoff) || ex.info.Draining {
			continue
		}
		for _, e := range ex.info.Engines {
			if !events.ValidEngineName(e.Name) {
				continue // no queue could carry its runs
			}
			k := [2]string{e.Name, e.Version}
			if m, ok := merged[k]; ok {
				m.Parameters = mergeParameters(m.Parameters, e.Parameters)
				merged[k] = m
			} else {
				merged[k] = e
			}
		}
	}
	out := make([]events.EngineInfo, 0, len(merged))
	for _, e := range merged {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b events.EngineInfo) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Version, b.Version))
	})
	return out
}

// mergeParameters keeps the parameters both announcements of an engine
// list, with every distinct definition of each: during a rolling upgrade
// executors of one engine may announce a parameter differently, or not at
// all, and a run's value must suit whichever of them gets the run. Sorted
// by name, then kind.
func mergeParameters(a, b []events.EngineParameter) []events.EngineParameter {
	named := func(ps []events.EngineParameter, name string) bool {
		return slices.ContainsFunc(ps, func(p events.EngineParameter) bool { return p.Name == name })
	}
	var out []events.EngineParameter
	for _, p := range slices.Concat(a, b) {
		if !named(a, p.Name) || !named(b, p.Name) {
			continue
		}
		if !slices.ContainsFunc(out, func(q events.EngineParameter) bool {
			return q.Name == p.Name && q.Type == p.Type && q.Default == p.Default && slices.Equal(q.Values, p.Values)
		}) {
			out = append(out, p)
		}
	}
	slices.SortStableFunc(out, func(x, y events.EngineParameter) int {
		return cmp.Or(cmp.Compare(x.Name, y.Name), cmp.Compare(x.Type, y.Type))
	})
	return out
}

// resolve picks the engine that runs a request: the one it names, or the
// preferred engine for its workflow type. The error says what is offered.
func (c *Catalog) resolve(wfType, wfVersion, engine, engineVersion string) (events.EngineInfo, error) {
	all := c.engines()
	if len(all) == 0 {
		c.awaitFirstSync()
		all = c.engines()
	}
	if len(all) == 0 {
		// The watch may be behind (a NATS node went away with its
		// consumer): ask the registry before refusing the run.
		c.refresh()
		all = c.engines()
	}
	if len(all) == 0 {
		// The service's state, not the request's fault: a client may
		// try again once an executor is back (a restart, say).
		return events.EngineInfo{}, withStatus(http.StatusServiceUnavailable, nil, "no workflow engine is available: no executor with an installed engine is running; nothing was recorded; retry once `wes executor` runs on a host with an engine (see service-info)")
	}
	var typeMatch, versionMatch []events.EngineInfo
	for _, e := range all {
		versions, ok := e.WorkflowTypes[wfType]
		if !ok {
			continue
		}
		typeMatch = append(typeMatch, e)
		if slices.ContainsFunc(versions, func(v string) bool { return models.SameVersion(v, wfVersion) }) {
			versionMatch = append(versionMatch, e)
		}
	}
	if len(typeMatch) == 0 {
		return events.EngineInfo{}, badRequest("workflow_type %q is not supported here; supported: %s", wfType, strings.Join(c.types(all), ", "))
	}
	if len(versionMatch) == 0 {
		return events.EngineInfo{}, badRequest("workflow_type_version %q of %s is not supported here; supported: %s",
			wfVersion, wfType, strings.Join(versionsOf(typeMatch, wfType), ", "))
	}
	candidates := versionMatch
	if engine != "" {
		candidates = slices.DeleteFunc(slices.Clone(candidates), func(e events.EngineInfo) bool { return !strings.EqualFold(e.Name, engine) })
		if len(candidates) == 0 {
			return events.EngineInfo{}, badRequest("workflow_engine %q does not run %s %s here; engines that do: %s",
				engine, wfType, wfVersion, strings.Join(namesOf(versionMatch), ", "))
		}
	}
	if engineVersion != "" {
		named := candidates
		candidates = slices.DeleteFunc(slices.Clone(candidates), func(e events.EngineInfo) bool { return !models.SameVersion(e.Version, engineVersion) })
		if len(candidates) == 0 {
			var have []string
			for _, e := range named {
				have = append(have, e.Name+" "+e.Version)
			}
			return events.EngineInfo{}, badRequest("workflow_engine_version %q is not available; available: %s", engineVersion, strings.Join(have, ", "))
		}
	}
	// Preferred engine first; among versions of one engine, the newest.
	rank := func(e events.EngineInfo) int {
		if i := slices.Index(preferred[wfType], e.Name); i >= 0 {
			return i
		}
		return len(preferred[wfType])
	}
	slices.SortStableFunc(candidates, func(a, b events.EngineInfo) int {
		return cmp.Or(cmp.Compare(rank(a), rank(b)), cmp.Compare(a.Name, b.Name), -compareVersions(a.Version, b.Version))
	})
	return candidates[0], nil
}

func (c *Catalog) types(all []events.EngineInfo) []string {
	var out []string
	for _, e := range all {
		for t := range e.WorkflowTypes {
			if !slices.Contains(out, t) {
				out = append(out, t)
			}
		}
	}
	slices.Sort(out)
	return out
}

func versionsOf(engines []events.EngineInfo, wfType string) []string {
	var out []string
	for _, e := range engines {
		for _, v := range e.WorkflowTypes[wfType] {
			if !slices.Contains(out, v) {
				out = append(out, v)
			}
		}
	}
	slices.Sort(out)
	return out
}

func namesOf(engines []events.EngineInfo) []string {
	var out []string
	for _, e := range engines {
		if !slices.Contains(out, e.Name) {
			out = append(out, e.Name)
		}
	}
	return out
}

// compareVersions orders dotted versions by their numbers ("10.0" > "9.2"),
// falling back to text for parts that are not numbers.
func compareVersions(a, b string) int {
	pa, pb := strings.FieldsFunc(a, isSep), strings.FieldsFunc(b, isSep)
	for i := 0; i < len(pa) && i < len(pb); i++ {
		na, ea := strconv.Atoi(pa[i])
		nb, eb := strconv.Atoi(pb[i])
		var c int
		if ea == nil && eb == nil {
			c = cmp.Compare(na, nb)
		} else {
			c = cmp.Compare(pa[i], pb[i])
		}
		if c != 0 {
			return c
		}
	}
	return cmp.Compare(len(pa), len(pb))
}

func isSep(r rune) bool { return r == '.' || r == '-' || r == '+' || r == '_' }

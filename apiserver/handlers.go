package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/mux"

	"github.com/wes-dev/wes/events"
	"github.com/wes-dev/wes/models"
)

// handlers serves one base path; absolute URLs in answers use it.
type handlers struct {
	s    *Server
	base string
}

func (h *handlers) fail(w http.ResponseWriter, r *http.Request, err error) {
	writeError(w, r, h.s.log, err)
}

// url returns the absolute URL of path below the base path.
func (h *handlers) url(r *http.Request, path string) string {
	origin := h.s.cfg.PublicURL
	if origin == "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		origin = scheme + "://" + r.Host
	}
	return strings.TrimSuffix(origin, "/") + h.base + path
}

func (h *handlers) serviceInfo(w http.ResponseWriter, r *http.Request) {
	// Public, but a user sees only the counts of their own runs (and an
	// anonymous caller in an authenticated mode sees none).
	p := principalOf(r.Context())
	counts := make(map[models.State]int64, len(models.States))
	for _, st := range models.States {
		counts[st] = 0
	}
	if p.Admin || p.User != "" { // an anonymous caller's would be a count of the whole table, for nothing
		var err error
		if counts, err = h.s.counts.get(r.Context(), owner(p), h.s.store.StateCounts); err != nil {
			h.fail(w, r, err)
			return
		}
	}
	cfg := h.s.cfg.Service
	created := cfg.CreatedAt
	if created.IsZero() {
		created = h.s.started
	}
	info := serviceInfo{
		ID:                              cfg.ID,
		Name:                            cfg.Name,
		Type:                            serviceType{Group: "org.ga4gh", Artifact: "wes", Version: "1.1.0"},
		Description:                     cfg.Description,
		Organization:                    organization{Name: cfg.OrganizationName, URL: cfg.OrganizationURL},
		ContactURL:                      cfg.ContactURL,
		DocumentationURL:                cfg.DocumentationURL,
		CreatedAt:                       timestamp(&created),
		UpdatedAt:                       timestamp(&h.s.started),
		Environment:                     cfg.Environment,
		Version:                         cfg.Version,
		WorkflowTypeVersions:            map[string]workflowTypeVersion{},
		SupportedWESVersions:            []string{"1.1.0"},
		SupportedFilesystemProtocols:    []string{"http", "https"},
		WorkflowEngineVersions:          map[string]workflowEngineVersion{},
		DefaultWorkflowEngineParameters: []defaultWorkflowEngineParameter{},
		SystemStateCounts:               make(map[string]int64, len(counts)),
		AuthInstructionsURL:             cfg.AuthInstructionsURL,
		Tags:                            map[string]string{},
	}
	if h.s.cfg.AllowLocalWorkflows {
		info.SupportedFilesystemProtocols = append(info.SupportedFilesystemProtocols, "file")
	}
	for st, n := range counts {
		info.SystemStateCounts[string(st)] = n
	}
	var params engineParams
	for _, e := range h.s.catalog.engines() {
		ev := info.WorkflowEngineVersions[e.Name]
		if !slices.Contains(ev.WorkflowEngineVersion, e.Version) {
			ev.WorkflowEngineVersion = append(ev.WorkflowEngineVersion, e.Version)
		}
		info.WorkflowEngineVersions[e.Name] = ev
		for t, versions := range e.WorkflowTypes {
			tv := info.WorkflowTypeVersions[t]
			for _, v := range versions {
				if !slices.Contains(tv.WorkflowTypeVersion, v) {
					tv.WorkflowTypeVersion = append(tv.WorkflowTypeVersion, v)
				}
			}
			slices.Sort(tv.WorkflowTypeVersion)
			info.WorkflowTypeVersions[t] = tv
		}
		for _, p := range e.Parameters {
			params.add(e.Name, p)
		}
	}
	info.DefaultWorkflowEngineParameters = params.list()
	writeJSON(w, http.StatusOK, info)
}

// engineParams gathers the engines' parameters for service-info. The spec
// gives a parameter a name, a type ("describes the type of the
// parameter") and a default, and no engine: the type says which values it
// takes and which engines take it, "enum stop|continue (cwltool)", so that
// a caller knows what to send to which.
type engineParams struct {
	order   []events.EngineParameter
	engines map[string][]string // by name and kind
}

// paramKey tells parameters apart: by name, kind, default and values.
func paramKey(p events.EngineParameter) string {
	return p.Name + "\x00" + p.Type + "\x00" + p.Default + "\x00" + strings.Join(p.Values, "|")
}

func (ps *engineParams) add(engine string, p events.EngineParameter) {
	key := paramKey(p)
	if ps.engines == nil {
		ps.engines = map[string][]string{}
	}
	if _, ok := ps.engines[key]; !ok {
		ps.order = append(ps.order, p)
	}
	if !slices.Contains(ps.engines[key], engine) {
		ps.engines[key] = append(ps.engines[key], engine)
	}
}

func (ps *engineParams) list() []defaultWorkflowEngineParameter {
	out := []defaultWorkflowEngineParameter{}
	for _, p := range ps.order {
		engines := ps.engines[paramKey(p)]
		kind := p.Type
		if len(p.Values) > 0 {
			kind += " " + strings.Join(p.Values, "|")
		}
		out = append(out, defaultWorkflowEngineParameter{Name: p.Name, Type: kind + " (" + strings.Join(engines, ", ") + ")", DefaultValue: p.Default})
	}
	return out
}

func (h *handlers) submit(w http.ResponseWriter, r *http.Request) {
	lim := h.s.cfg.Limits
	r.Body = http.MaxBytesReader(w, r.Body, lim.MaxRequestBytes)
	id := uuid.Must(uuid.NewV7()).String()
	sink := &objectSink{bus: h.s.bus, runID: id}
	run, err := h.prepare(r, id, sink)
	if err == nil {
		err = h.s.enqueue(run)
	}
	if err != nil {
		sink.discard(h.s.log)
		h.fail(w, r, err)
		return
	}
	if h.s.metrics != nil {
		h.s.metrics.submitted.WithLabelValues(run.Engine).Inc()
	}
	h.s.log.Info("run submitted", "run_id", id, "workflow_type", run.Request.WorkflowType,
		"engine", run.Engine, "attachments", len(run.Attachments))
	writeJSON(w, http.StatusOK, runID{RunID: id})
}

// prepare decodes and validates a submission into a new QUEUED run.
func (h *handlers) prepare(r *http.Request, id string, sink attachmentSink) (*models.Run, error) {
	sub, err := decodeSubmission(r, h.s.cfg.Limits, h.s.cfg.AllowLocalWorkflows, sink)
	if err != nil {
		return nil, err
	}
	req := sub.req
	eng, err := h.s.catalog.resolve(req.WorkflowType, req.WorkflowTypeVersion, req.WorkflowEngine, req.WorkflowEngineVersion)
	if err != nil {
		return nil, err
	}
	if cb, ok := req.Tags[events.CallbackTag]; ok && !events.CallbackAllowed(cb, h.s.cfg.CallbackAllow) {
		return nil, badRequest("tag %s %q is not allowed on this server (WES_CALLBACK_ALLOW lists the URL prefixes it allows)", events.CallbackTag, cb)
	}
	for k, v := range req.WorkflowEngineParameters {
		if !slices.ContainsFunc(eng.Parameters, func(p events.EngineParameter) bool { return p.Name == k }) {
			var accepted []string
			for _, p := range eng.Parameters {
				accepted = append(accepted, p.Name)
			}
			return nil, badRequest("workflow_engine_parameters key %q is not accepted by engine %s; accepted: [%s]", k, eng.Name, strings.Join(slices.Compact(accepted), ", "))
		}
		val := ""
		if v != nil {
			val = *v
		}
		// Every definition of it (executors of one engine may differ
		// during an upgrade): the value must suit whichever runs it.
		for _, p := range eng.Parameters {
			if p.Name != k {
				continue
			}
			if err := models.CheckEngineParameter(k, p.Type, p.Values, val); err != nil {
				return nil, fmt.Errorf("workflow_engine_parameters of engine %s: %w", eng.Name, err)
			}
		}
	}
	return &models.Run{
		ID: id, Owner: principalOf(r.Context()).User, State: models.Queued, Request: req, Engine: eng.Name, Attachments: sub.attachments,
		CreatedAt: time.Now().UTC(),
	}, nil
}

// enqueue records the run and its run.submitted message in one transaction
// (shared with concurrent submissions) and hands the message to the relay.
func (s *Server) enqueue(run *models.Run) error {
	subject, msgID, data, err := s.enc.EncodeSubmitted(events.RunSubmitted{
		RunID: run.ID, Engine: run.Engine, Request: run.Request,
		Attachments: run.Attachments, SubmittedAt: run.CreatedAt,
	})
	if err != nil {
		return err
	}
	// The broker counts the message's headers too (its Nats-Msg-Id): a
	// request that fits only without them would be accepted and never
	// queued.
	if max := s.bus.JS.Conn().MaxPayload() - events.HeaderRoom; max > 0 && int64(len(data)) > max {
		return withStatus(http.StatusRequestEntityTooLarge, nil,
			"the run request is %d bytes as a queue message, more than the broker takes (%d, its max_payload less room for headers); send large inputs as workflow_attachment files", len(data), max)
	}
	return s.commits.create(run, &models.OutboxMessage{Subject: subject, MsgID: msgID, Payload: data})
}

func (h *handlers) getRun(w http.ResponseWriter, r *http.Request) {
	run, err := h.run(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	req := run.Request
	out := runLog{
		RunID: run.ID,
		Request: runRequest{
			WorkflowParams: req.WorkflowParams, WorkflowType: req.WorkflowType, WorkflowTypeVersion: req.WorkflowTypeVersion,
			Tags: req.Tags, WorkflowEngineParameters: req.WorkflowEngineParameters, WorkflowEngine: req.WorkflowEngine,
			WorkflowEngineVersion: req.WorkflowEngineVersion, WorkflowURL: req.WorkflowURL,
		},
		State: string(run.State),
		RunLog: wesLog{
			Name: workflowName(req.WorkflowURL), Cmd: orEmpty(run.Cmd), StartTime: timestamp(run.StartTime), EndTime: timestamp(run.EndTime),
			Stdout: h.url(r, "/runs/"+run.ID+"/logs/stdout"), Stderr: h.url(r, "/runs/"+run.ID+"/logs/stderr"),
			ExitCode: run.ExitCode, SystemLogs: orEmpty(run.SystemLogs),
		},
		TaskLogsURL: h.url(r, "/runs/"+run.ID+"/tasks"),
	}
	if run.State.Terminal() && run.Attempt == 0 {
		// Ended before any executor took it (canceled while queued): no
		// engine ever wrote a log, and no URL leads to one.
		out.RunLog.Stdout, out.RunLog.Stderr = "", ""
	}
	out.Outputs, _ = h.resolveOutputs(r, run)
	if out.Request.Tags == nil {
		out.Request.Tags = map[string]string{}
	}
	if out.Request.WorkflowEngineParameters == nil {
		out.Request.WorkflowEngineParameters = map[string]*string{}
	}
	if len(out.Request.WorkflowParams) == 0 {
		out.Request.WorkflowParams = json.RawMessage(`{}`)
	}
	writeJSON(w, http.StatusOK, out)
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (h *handlers) getStatus(w http.ResponseWriter, r *http.Request) {
	run, err := h.run(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, runStatus{RunID: run.ID, State: string(run.State)})
}

func (h *handlers) listRuns(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := h.pageSize(q.Get("page_size"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	lq := models.ListQuery{Limit: limit, Owner: owner(principalOf(r.Context()))}
	if st := q.Get("state"); st != "" {
		if lq.State, err = models.ParseState(strings.ToUpper(st)); err != nil {
			h.fail(w, r, badRequest("state %q is not a WES state", st))
			return
		}
	}
	if n := len(q["tag"]); n > h.s.cfg.Limits.MaxTags {
		h.fail(w, r, badRequest("%d tag filters given, at most %d allowed (a run has at most that many tags)", n, h.s.cfg.Limits.MaxTags))
		return
	}
	for _, kv := range q["tag"] {
		k, v, ok := strings.Cut(kv, ":")
		if !ok || k == "" {
			h.fail(w, r, badRequest("tag filter %q must be key:value", kv))
			return
		}
		if err := checkText(fmt.Sprintf("tag filter %q", k), kv); err != nil {
			h.fail(w, r, err)
			return
		}
		if _, dup := lq.Tags[k]; dup {
			h.fail(w, r, badRequest("tag %q filtered on twice: a run has one value per tag", k))
			return
		}
		if lq.Tags == nil {
			lq.Tags = map[string]string{}
		}
		lq.Tags[k] = v
	}
	scope := listScope(lq)
	if lq.Before, err = h.s.tokens.decode(q.Get("page_token"), scope); err != nil {
		h.fail(w, r, badRequest("%v", err))
		return
	}
	runs, next, err := h.s.store.ListRuns(r.Context(), lq)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	resp := runListResponse{Runs: make([]runSummary, 0, len(runs)), NextPageToken: h.s.tokens.encode(next, scope)}
	for _, run := range runs {
		tags := run.Request.Tags
		if tags == nil {
			tags = map[string]string{}
		}
		resp.Runs = append(resp.Runs, runSummary{
			RunID: run.ID, State: string(run.State), Tags: tags,
			StartTime: timestamp(run.StartTime), EndTime: timestamp(run.EndTime),
		})
	}
	writeJSON(w, http.StatusOK, resp)
}

// listScope names the query a page token belongs to.
func listScope(q models.ListQuery) string {
	keys := make([]string, 0, len(q.Tags))
	for k := range q.Tags {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "runs\x00%s\x00%s", q.Owner, q.State)
	for _, k := range keys {
		fmt.Fprintf(&b, "\x00%s\x00%s", k, q.Tags[k])
	}
	return b.String()
}

func (h *handlers) pageSize(v string) (int, error) {
	if v == "" {
		return h.s.cfg.DefaultPageSize, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, badRequest("page_size %q must be a positive integer", v)
	}
	// More than the server gives is not an error: the spec lets a page
	// hold fewer items than asked for, and next_page_token leads on.
	return min(n, h.s.cfg.MaxPageSize), nil
}

func (h *handlers) cancel(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	run, err := h.run(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	id := run.ID
	if run.State.Terminal() || run.CancelRequested {
		writeJSON(w, http.StatusOK, runID{RunID: id})
		return
	}
	// The flag first: an executor that holds the run stops it as soon as
	// the flag appears, whatever happens to the event below.
	flagCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err = h.s.bus.Cancel.Put(flagCtx, id, []byte(time.Now().UTC().Format(time.RFC3339)))
	cancel()
	if err != nil {
		h.fail(w, r, fmt.Errorf("set cancel flag: %w: %w", errBrokerUnavailable, err))
		return
	}
	var msg *models.OutboxMessage
	_, changed, err := h.s.store.RequestCancel(ctx, id, func(run *models.Run) (*models.OutboxMessage, error) {
		// A run no executor holds is canceled at once; a held one is
		// CANCELING until its executor has stopped the engine.
		state := models.Canceling
		switch run.State {
		case models.Queued, models.Preempted, models.Unknown:
			state = models.Canceled
		}
		ev := events.RunEvent{RunID: run.ID, State: state, Source: events.SourceAPI, SystemLog: "cancel requested",
			Workflow: events.Ref(run.Request, run.Engine)}
		subject, msgID, data, err := h.s.enc.EncodeEvent(ev)
		if err != nil {
			return nil, err
		}
		msg = &models.OutboxMessage{Subject: subject, MsgID: msgID, Payload: data}
		return msg, nil
	})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if changed {
		h.s.relay.Deliver(*msg)
		h.s.log.Info("cancel requested", "run_id", id, "state", run.State)
	}
	writeJSON(w, http.StatusOK, runID{RunID: id})
}

// workflowName names a run's workflow in its run_log (the spec's Log.name,
// "the task or workflow name"): the last segment of its workflow_url, and
// the fragment that picks a workflow out of a document (hello.cwl#main).
// The engine that ran it, and its version, are in system_logs.
func workflowName(workflowURL string) string {
	u, err := url.Parse(workflowURL)
	if err != nil {
		return workflowURL
	}
	name := path.Base(u.Path)
	if name == "." || name == "/" {
		name = u.Host
	}
	if u.Fragment != "" {
		name += "#" + u.Fragment
	}
	return name
}

func (h *handlers) listTasks(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	run, err := h.run(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	id := run.ID
	limit, err := h.pageSize(r.URL.Query().Get("page_size"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	scope := "tasks\x00" + id
	after, err := h.s.tokens.decode(r.URL.Query().Get("page_token"), scope)
	if err != nil {
		h.fail(w, r, badRequest("%v", err))
		return
	}
	tasks, next, err := h.s.store.ListTasks(ctx, id, after, limit)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	resp := taskListResponse{TaskLogs: make([]taskLog, 0, len(tasks)), NextPageToken: h.s.tokens.encode(next, scope)}
	for i := range tasks {
		resp.TaskLogs = append(resp.TaskLogs, toTaskLog(&tasks[i]))
	}
	writeJSON(w, http.StatusOK, resp)
}

func (h *handlers) getTask(w http.ResponseWriter, r *http.Request) {
	run, err := h.run(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	id := mux.Vars(r)["task_id"]
	if checkText("task id", id) != nil { // no task has it; the database would refuse to look
		h.fail(w, r, fmt.Errorf("task %q: %w", id, models.ErrNotFound))
		return
	}
	t, err := h.s.store.GetTask(r.Context(), run.ID, id)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toTaskLog(t))
}

func toTaskLog(t *models.TaskLog) taskLog {
	return taskLog{
		ID: t.ID, Name: t.Name, Cmd: orEmpty(t.Cmd), StartTime: timestamp(t.StartTime), EndTime: timestamp(t.EndTime),
		Stdout: t.Stdout, Stderr: t.Stderr, ExitCode: t.ExitCode, SystemLogs: orEmpty(t.SystemLogs), TESURI: t.TESURI,
	}
}

// objectSink streams attachments into the object store and can remove what
// it stored when the submission fails. A put that fails, the client gone
// mid-upload included, removes its own chunks (events.Bus.PutObject).
type objectSink struct {
	bus   *events.Bus
	runID string
	keys  []string
}

func (s *objectSink) put(ctx context.Context, name string, r io.Reader) (string, int64, error) {
	key := events.AttachmentKey(s.runID, name)
	src := &errReader{r: r}
	// The run is new, and each of its attachment names comes once: there
	// is nothing to replace.
	info, err := s.bus.PutObject(ctx, key, src, events.PutOptions{Known: true})
	if src.err != nil && !errors.Is(src.err, io.EOF) {
		return "", 0, src.err // the client's body failed (too large, cut off)
	}
	if err != nil {
		return "", 0, fmt.Errorf("%w: %w", errBrokerUnavailable, err)
	}
	s.keys = append(s.keys, key)
	return key, int64(info.Size), nil
}

func (s *objectSink) discard(log interface{ Warn(string, ...any) }) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, k := range s.keys {
		if err := s.bus.Objects.Delete(ctx, k); err != nil {
			log.Warn("cannot remove attachment of a refused submission", "run_id", s.runID, "key", k, "err", err)
		}
	}
}

// errReader remembers the error of the reader it wraps.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil {
		e.err = err
	}
	return n, err
}

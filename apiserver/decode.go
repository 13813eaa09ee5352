package apiserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/wes-dev/wes/models"
)

// Limits bound what one request may carry.
type Limits struct {
	// MaxRequestBytes bounds a whole request body, attachments included.
	MaxRequestBytes int64
	// MaxFieldBytes bounds each form field and JSON document.
	MaxFieldBytes int64
	// MaxAttachments bounds the number of workflow_attachment parts.
	MaxAttachments int
	// MaxTags bounds the number of tags of a run.
	MaxTags int
	// MaxJSONDepth bounds how deeply JSON may nest.
	MaxJSONDepth int
}

// attachmentSink keeps attachment content (the object store, in production).
type attachmentSink interface {
	put(ctx context.Context, name string, r io.Reader) (key string, size int64, err error)
}

// submission is a decoded, validated POST /runs.
type submission struct {
	req         models.RunRequest
	attachments []models.Attachment
}

// decodeSubmission reads a RunWorkflow request, as multipart/form-data (the
// specification) or as a JSON RunRequest (the seed), and validates what can
// be validated without the engine catalog. Attachments go to sink as they
// stream in; on error the caller removes whatever sink received.
func decodeSubmission(r *http.Request, lim Limits, allowLocal bool, sink attachmentSink) (*submission, error) {
	mediaType, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		return nil, withStatus(http.StatusUnsupportedMediaType, nil, "Content-Type must be multipart/form-data or application/json")
	}
	var (
		raw rawRequest
		sub submission
	)
	switch mediaType {
	case "application/json":
		if raw, err = decodeJSONBody(r.Body, lim); err != nil {
			return nil, err
		}
	case "multipart/form-data":
		if params["boundary"] == "" {
			return nil, badRequest("multipart/form-data without a boundary")
		}
		if raw, sub.attachments, err = decodeMultipart(r.Context(), multipart.NewReader(r.Body, params["boundary"]), lim, sink); err != nil {
			return nil, err
		}
	default:
		return nil, withStatus(http.StatusUnsupportedMediaType, nil, "Content-Type %q is not accepted: use multipart/form-data or application/json", mediaType)
	}
	if sub.req, err = raw.parse(lim); err != nil {
		return nil, err
	}
	if err := checkWorkflowURL(sub.req.WorkflowURL, sub.attachments, allowLocal); err != nil {
		return nil, err
	}
	return &sub, nil
}

// rawRequest holds the fields of a RunRequest before their JSON is parsed;
// in multipart each is a form field, in JSON each is a member.
type rawRequest struct {
	WorkflowParams           json.RawMessage `json:"workflow_params"`
	WorkflowType             json.RawMessage `json:"workflow_type"`
	WorkflowTypeVersion      json.RawMessage `json:"workflow_type_version"`
	Tags                     json.RawMessage `json:"tags"`
	WorkflowEngineParameters json.RawMessage `json:"workflow_engine_parameters"`
	WorkflowEngine           json.RawMessage `json:"workflow_engine"`
	WorkflowEngineVersion    json.RawMessage `json:"workflow_engine_version"`
	WorkflowURL              json.RawMessage `json:"workflow_url"`
}

func decodeJSONBody(body io.Reader, lim Limits) (rawRequest, error) {
	var raw rawRequest
	data, err := io.ReadAll(io.LimitReader(body, lim.MaxFieldBytes+1))
	if err != nil {
		return raw, bodyError("request body", err)
	}
	if int64(len(data)) > lim.MaxFieldBytes {
		return raw, withStatus(http.StatusRequestEntityTooLarge, nil, "JSON body is larger than the limit of %d bytes (WES_MAX_FIELD_BYTES); attach large inputs with multipart/form-data", lim.MaxFieldBytes)
	}
	if !utf8.Valid(data) {
		return raw, badRequest("request body is not valid UTF-8, as JSON must be")
	}
	if err := checkDepth("request body", data, lim.MaxJSONDepth); err != nil {
		return raw, err
	}
	// The object's members one by one, rather than json.Unmarshal into
	// rawRequest: that matches names case-insensitively and keeps the last
	// of duplicates, so {"workflow_type": "CWL", "WORKFLOW_TYPE": "WDL"}
	// would be a WDL run. Names are exact here, and given once, as in a
	// multipart form.
	dec := json.NewDecoder(bytes.NewReader(data))
	notRunRequest := func(err error) error {
		return badRequest("request body is not a valid RunRequest: %v", jsonMsg(err))
	}
	if tok, err := dec.Token(); err != nil {
		return raw, notRunRequest(err)
	} else if tok != json.Delim('{') {
		return raw, badRequest("request body is not a valid RunRequest: it must be a JSON object")
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return raw, notRunRequest(err)
		}
		name, _ := tok.(string) // a member's name is a string, or Token failed
		dst := raw.field(name)
		if dst == nil {
			return raw, badRequest("request body is not a valid RunRequest: unknown field %q (field names are exact, in lower case)", name)
		}
		if seen[name] {
			return raw, badRequest("request body is not a valid RunRequest: field %q is given twice", name)
		}
		seen[name] = true
		if err := dec.Decode(dst); err != nil {
			return raw, notRunRequest(err)
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return raw, notRunRequest(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return raw, badRequest("request body has data after the RunRequest object")
	}
	return raw, nil
}

// multipart field name → where it goes.
func (raw *rawRequest) field(name string) *json.RawMessage {
	switch name {
	case "workflow_params":
		return &raw.WorkflowParams
	case "workflow_type":
		return &raw.WorkflowType
	case "workflow_type_version":
		return &raw.WorkflowTypeVersion
	case "tags":
		return &raw.Tags
	case "workflow_engine_parameters":
		return &raw.WorkflowEngineParameters
	case "workflow_engine":
		return &raw.WorkflowEngine
	case "workflow_engine_version":
		return &raw.WorkflowEngineVersion
	case "workflow_url":
		return &raw.WorkflowURL
	}
	return nil
}

// jsonFields are the multipart fields whose value is itself JSON.
var jsonFields = []string{"workflow_params", "tags", "workflow_engine_parameters"}

func decodeMultipart(ctx context.Context, mr *multipart.Reader, lim Limits, sink attachmentSink) (rawRequest, []models.Attachment, error) {
	var (
		raw  rawRequest
		atts []models.Attachment
	)
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return raw, atts, nil
		}
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				return raw, atts, err
			}
			return raw, atts, badRequest("malformed multipart body: %v", err)
		}
		name := part.FormName()
		if name == "workflow_attachment" || name == "workflow_attachment[]" {
			if len(atts) >= lim.MaxAttachments {
				return raw, atts, withStatus(http.StatusRequestEntityTooLarge, nil, "more than %d attachments (WES_MAX_ATTACHMENTS)", lim.MaxAttachments)
			}
			att, err := receiveAttachment(ctx, part, atts, sink)
			if err != nil {
				return raw, atts, err
			}
			atts = append(atts, att)
			continue
		}
		dst := raw.field(name)
		if dst == nil {
			return raw, atts, badRequest("unknown form field %q; RunWorkflow accepts workflow_params, workflow_type, workflow_type_version, tags, workflow_engine, workflow_engine_version, workflow_engine_parameters, workflow_url and workflow_attachment", name)
		}
		if *dst != nil {
			return raw, atts, badRequest("form field %q given more than once", name)
		}
		value, err := io.ReadAll(io.LimitReader(part, lim.MaxFieldBytes+1))
		if err != nil {
			return raw, atts, bodyError(fmt.Sprintf("form field %q", name), err)
		}
		if int64(len(value)) > lim.MaxFieldBytes {
			return raw, atts, withStatus(http.StatusRequestEntityTooLarge, nil, "form field %q is larger than the limit of %d bytes (WES_MAX_FIELD_BYTES)", name, lim.MaxFieldBytes)
		}
		if !utf8.Valid(value) {
			return raw, atts, badRequest("form field %q is not valid UTF-8", name)
		}
		if slices.Contains(jsonFields, name) {
			if len(bytes.TrimSpace(value)) == 0 {
				value = []byte("null")
			}
			if !json.Valid(value) {
				return raw, atts, badRequest("form field %q is not valid JSON", name)
			}
			if err := checkDepth("form field "+strconv.Quote(name), value, lim.MaxJSONDepth); err != nil {
				return raw, atts, err
			}
			*dst = value
		} else {
			*dst, _ = json.Marshal(string(value))
		}
	}
}

func receiveAttachment(ctx context.Context, part *multipart.Part, have []models.Attachment, sink attachmentSink) (models.Attachment, error) {
	// part.FileName() keeps only the base name; the specification allows
	// sub-directories, so read the parameter itself.
	_, params, err := mime.ParseMediaType(part.Header.Get("Content-Disposition"))
	if err != nil || params["filename"] == "" {
		return models.Attachment{}, badRequest("a workflow_attachment part has no filename in its Content-Disposition")
	}
	name, err := cleanAttachmentName(params["filename"])
	if err != nil {
		return models.Attachment{}, err
	}
	for _, a := range have {
		switch {
		case a.Name == name:
			return models.Attachment{}, badRequest("attachment %q given more than once", name)
		case strings.HasPrefix(name, a.Name+"/"), strings.HasPrefix(a.Name, name+"/"):
			return models.Attachment{}, badRequest("attachments %q and %q: one is a file and would be a directory of the other", a.Name, name)
		}
	}
	key, size, err := sink.put(ctx, name, part)
	if errors.Is(err, errBrokerUnavailable) {
		return models.Attachment{}, fmt.Errorf("store attachment %q: %w", name, err)
	}
	if err != nil {
		return models.Attachment{}, bodyError(fmt.Sprintf("attachment %q", name), err)
	}
	return models.Attachment{Name: name, Key: key, Size: size}, nil
}

// checkDepth refuses JSON nested deeper than max (0: no limit), counting
// brackets outside strings; it does not validate.
func checkDepth(what string, data []byte, max int) error {
	if max <= 0 {
		return nil
	}
	depth, inString, escaped := 0, false, false
	for _, c := range data {
		switch {
		case escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case c == '"':
			inString = !inString
		case inString:
		case c == '{' || c == '[':
			if depth++; depth > max {
				return badRequest("%s nests JSON deeper than %d levels (WES_MAX_JSON_DEPTH)", what, max)
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return nil
}

// bodyError turns a failure to read the client's body into its answer: 413
// past the size limit, 400 for a body that ends early or is malformed.
func bodyError(what string, err error) error {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return err
	}
	return badRequest("%s: the request body ended early or is malformed: %v", what, err)
}

// cleanAttachmentName accepts a relative, slash-separated path with no
// empty, "." or ".." segment and no control characters, and returns it.
func cleanAttachmentName(name string) (string, error) {
	switch {
	case name == "":
		return "", badRequest("attachment filename is empty")
	case len(name) > 1024:
		return "", badRequest("attachment filename is longer than 1024 bytes")
	case strings.ContainsFunc(name, unicode.IsControl):
		return "", badRequest("attachment filename %q contains control characters", name)
	case strings.Contains(name, `\`):
		return "", badRequest("attachment filename %q contains a backslash: separate directories with /", name)
	case strings.HasPrefix(name, "/"):
		return "", badRequest("attachment filename %q is absolute: give a path relative to the workflow", name)
	}
	for _, seg := range strings.Split(name, "/") {
		switch seg {
		case "..":
			return "", badRequest("attachment filename %q refers to a parent directory (..)", name)
		case "", ".":
			return "", badRequest("attachment filename %q has an empty or \".\" path segment", name)
		}
		if len(seg) > 255 {
			return "", badRequest("attachment filename %q has a path segment longer than 255 bytes", name)
		}
	}
	return name, nil
}

// parse turns the raw fields into a RunRequest; every message names the
// field at fault.
func (raw rawRequest) parse(lim Limits) (models.RunRequest, error) {
	var (
		req models.RunRequest
		err error
	)
	str := func(name string, v json.RawMessage, required bool) (string, error) {
		var s string
		if len(v) > 0 && string(v) != "null" {
			if err := json.Unmarshal(v, &s); err != nil {
				return "", badRequest("%s must be a string", name)
			}
		}
		s = strings.TrimSpace(s)
		if required && s == "" {
			return "", badRequest("%s is required", name)
		}
		return s, checkText(name, s)
	}
	if req.WorkflowType, err = str("workflow_type", raw.WorkflowType, true); err != nil {
		return req, err
	}
	req.WorkflowType = models.CanonicalWorkflowType(req.WorkflowType)
	if req.WorkflowTypeVersion, err = str("workflow_type_version", raw.WorkflowTypeVersion, true); err != nil {
		return req, err
	}
	if req.WorkflowURL, err = str("workflow_url", raw.WorkflowURL, true); err != nil {
		return req, err
	}
	if req.WorkflowEngine, err = str("workflow_engine", raw.WorkflowEngine, false); err != nil {
		return req, err
	}
	if req.WorkflowEngineVersion, err = str("workflow_engine_version", raw.WorkflowEngineVersion, false); err != nil {
		return req, err
	}
	if req.WorkflowEngineVersion != "" && req.WorkflowEngine == "" {
		return req, badRequest("workflow_engine is required when workflow_engine_version is given")
	}

	params, err := unquote("workflow_params", raw.WorkflowParams, lim.MaxJSONDepth)
	if err != nil {
		return req, err
	}
	if len(params) == 0 || string(params) == "null" {
		params = json.RawMessage(`{}`)
	}
	if params[0] != '{' {
		return req, badRequest("workflow_params must be a JSON object")
	}
	req.WorkflowParams = params

	if v, err := unquote("tags", raw.Tags, lim.MaxJSONDepth); err != nil {
		return req, err
	} else if len(v) > 0 && string(v) != "null" {
		if err := json.Unmarshal(v, &req.Tags); err != nil {
			return req, badRequest("tags must be a JSON object of strings: %v", jsonMsg(err))
		}
	}
	if len(req.Tags) > lim.MaxTags {
		return req, badRequest("%d tags given, at most %d allowed", len(req.Tags), lim.MaxTags)
	}
	for k, v := range req.Tags {
		if k == "" || len(k) > 256 || len(v) > 1024 {
			return req, badRequest("tag %q: keys must be 1 to 256 bytes and values at most 1024 bytes", k)
		}
		if err := checkText(fmt.Sprintf("tag %q", k), k+v); err != nil {
			return req, err
		}
	}

	if v, err := unquote("workflow_engine_parameters", raw.WorkflowEngineParameters, lim.MaxJSONDepth); err != nil {
		return req, err
	} else if len(v) > 0 && string(v) != "null" {
		if err := json.Unmarshal(v, &req.WorkflowEngineParameters); err != nil {
			return req, badRequest("workflow_engine_parameters must be a JSON object whose values are strings or null: %v", jsonMsg(err))
		}
	}
	for k, v := range req.WorkflowEngineParameters {
		if v == nil { // null: a flag without a value, which "" says too (the spec's values are strings)
			req.WorkflowEngineParameters[k] = new(string)
			continue
		}
		if err := checkText(fmt.Sprintf("workflow_engine_parameters %q", k), k+*v); err != nil {
			return req, err
		}
	}
	return req, nil
}

// checkText refuses text a database cannot store as given: NUL characters
// and invalid UTF-8.
func checkText(what, s string) error {
	switch {
	case !utf8.ValidString(s):
		return badRequest("%s is not valid UTF-8", what)
	case strings.IndexByte(s, 0) >= 0:
		return badRequest("%s contains a NUL character", what)
	}
	return nil
}

// unquote accepts a JSON field given either as JSON or as a string that
// holds JSON (as multipart clients and some JSON clients send it). The
// JSON a string holds is bounded in depth like any other (maxDepth).
func unquote(name string, v json.RawMessage, maxDepth int) (json.RawMessage, error) {
	v = bytes.TrimSpace(v)
	if len(v) == 0 || v[0] != '"' {
		return v, nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return nil, badRequest("%s is not valid JSON", name)
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	if !json.Valid([]byte(s)) {
		return nil, badRequest("%s is not valid JSON", name)
	}
	if err := checkDepth(name, []byte(s), maxDepth); err != nil {
		return nil, err
	}
	return json.RawMessage(s), nil
}

// checkWorkflowURL accepts an http(s) URL, a relative path naming an
// attachment (a #fragment is kept for the engine), or, when allowed, a
// local path or file:// URL.
func checkWorkflowURL(raw string, atts []models.Attachment, allowLocal bool) error {
	u, err := url.Parse(raw)
	if err != nil {
		return badRequest("workflow_url %q is not a URL: %v", raw, err)
	}
	switch strings.ToLower(u.Scheme) {
	case "http", "https":
		if u.Host == "" {
			return badRequest("workflow_url %q has no host", raw)
		}
		return nil
	case "file":
		if !allowLocal {
			return badRequest("workflow_url %q is a local file, and local workflows are disabled on this server (WES_ALLOW_LOCAL_WORKFLOWS); attach the workflow instead", raw)
		}
		return nil
	case "":
	default:
		return badRequest("workflow_url scheme %q is not supported: give an http(s) URL or attach the workflow and name it by its relative path", u.Scheme)
	}
	if strings.HasPrefix(u.Path, "/") {
		if !allowLocal {
			return badRequest("workflow_url %q is an absolute local path, and local workflows are disabled on this server (WES_ALLOW_LOCAL_WORKFLOWS); attach the workflow instead", raw)
		}
		return nil
	}
	name := path.Clean(u.Path)
	if name == ".." || strings.HasPrefix(name, "../") {
		return badRequest("workflow_url %q refers to a parent directory (..)", raw)
	}
	if slices.ContainsFunc(atts, func(a models.Attachment) bool { return a.Name == name }) {
		return nil
	}
	if len(atts) == 0 {
		return badRequest("workflow_url %q is a relative path but no workflow_attachment was sent: attach the workflow or give an http(s) URL", raw)
	}
	names := make([]string, 0, len(atts))
	for _, a := range atts {
		names = append(names, a.Name)
	}
	return badRequest("workflow_url %q names no attachment; attached: %s", raw, strings.Join(names, ", "))
}

// jsonMsg shortens encoding/json errors to what a user needs.
func jsonMsg(err error) string {
	var (
		syn *json.SyntaxError
		typ *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("malformed JSON at byte %d: %v", syn.Offset, syn)
	case errors.As(err, &typ):
		if typ.Field != "" {
			return fmt.Sprintf("%s must not be a JSON %s", typ.Field, typ.Value)
		}
		return fmt.Sprintf("unexpected JSON %s", typ.Value)
	}
	return err.Error()
}

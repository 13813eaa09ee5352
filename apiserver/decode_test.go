package apiserver

import (
	"bytes"
	"context"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wes-dev/wes/models"
)

// memSink is an attachmentSink that keeps attachments in memory.
type memSink struct {
	mu    sync.Mutex
	files map[string][]byte
}

func newMemSink() *memSink { return &memSink{files: map[string][]byte{}} }

func (s *memSink) put(_ context.Context, name string, r io.Reader) (string, int64, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return "", 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.files[name] = data
	return "key/" + name, int64(len(data)), nil
}

// seedJSON is a RunRequest as the seed's clients send it.
const seedJSON = `{"workflow_params": {"outputUri": "s3://my-bucket/outputs/"}, "workflow_type": "CWL", "workflow_type_version": "1.0", "workflow_url": "https://example.com/workflows/hello-world.cwl"}`

func testLimits() Limits {
	return Limits{MaxRequestBytes: 1 << 20, MaxFieldBytes: 4096, MaxAttachments: 5, MaxTags: 3}
}

// body is a request body with its Content-Type.
type body struct {
	contentType string
	data        []byte
}

func jsonBody(s string) body { return body{contentType: "application/json", data: []byte(s)} }

// formPart is one part of a multipart body: a field, or an attachment when
// disposition names a filename.
type formPart struct {
	disposition string
	content     string
}

func field(name, value string) formPart {
	return formPart{disposition: `form-data; name="` + name + `"`, content: value}
}

// file is a workflow_attachment whose filename is written verbatim, so that
// directories survive (multipart.Writer.CreateFormFile would keep them too,
// but escapes quotes and backslashes).
func file(filename, content string) formPart {
	return formPart{disposition: `form-data; name="workflow_attachment"; filename="` + filename + `"`, content: content}
}

func form(parts ...formPart) body {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		w, err := mw.CreatePart(textproto.MIMEHeader{"Content-Disposition": {p.disposition}})
		if err != nil {
			panic(err)
		}
		if _, err := io.WriteString(w, p.content); err != nil {
			panic(err)
		}
	}
	if err := mw.Close(); err != nil {
		panic(err)
	}
	return body{contentType: mw.FormDataContentType(), data: buf.Bytes()}
}

// cwlForm is a complete multipart submission of an attached CWL workflow,
// followed by extra parts.
func cwlForm(extra ...formPart) body {
	parts := []formPart{
		field("workflow_type", "CWL"),
		field("workflow_type_version", "v1.0"),
		field("workflow_url", "main.cwl"),
		file("main.cwl", "cwlVersion: v1.0\n"),
	}
	return form(append(parts, extra...)...)
}

// decode runs decodeSubmission on b the way the submit handler does: the
// body limited by http.MaxBytesReader.
func decode(t *testing.T, b body, lim Limits, allowLocal bool) (*submission, *memSink, error) {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/ga4gh/wes/v1/runs", bytes.NewReader(b.data))
	if b.contentType != "" {
		r.Header.Set("Content-Type", b.contentType)
	}
	r.Body = http.MaxBytesReader(httptest.NewRecorder(), r.Body, lim.MaxRequestBytes)
	sink := newMemSink()
	sub, err := decodeSubmission(r, lim, allowLocal, sink)
	return sub, sink, err
}

func ptr(s string) *string { return &s }

func TestDecodeSubmissionSeedJSON(t *testing.T) {
	t.Parallel()
	sub, sink, err := decode(t, jsonBody(seedJSON), testLimits(), false)
	require.NoError(t, err)
	require.Equal(t, "CWL", sub.req.WorkflowType)
	require.Equal(t, "1.0", sub.req.WorkflowTypeVersion)
	require.Equal(t, "https://example.com/workflows/hello-world.cwl", sub.req.WorkflowURL)
	require.JSONEq(t, `{"outputUri": "s3://my-bucket/outputs/"}`, string(sub.req.WorkflowParams))
	require.Empty(t, sub.req.Tags)
	require.Empty(t, sub.req.WorkflowEngine)
	require.Empty(t, sub.req.WorkflowEngineVersion)
	require.Empty(t, sub.req.WorkflowEngineParameters)
	require.Empty(t, sub.attachments)
	require.Empty(t, sink.files)
}

func TestDecodeSubmissionMultipart(t *testing.T) {
	t.Parallel()
	// Contents that a careless decoder would mangle: NUL bytes, CRLF, a line
	// that looks like a boundary, no trailing newline.
	files := map[string]string{
		"dir/sub/main.cwl":           "cwlVersion: v1.0\nclass: Workflow\r\n",
		"dir/sub/tools/echo.cwl":     "--not-a-boundary\r\n--\r\nclass: CommandLineTool",
		"inputs/reads/sample 1.fq":   "@r1\nACGT\n+\n!!!!\n",
		"data/nested/deep/blob.bin":  "\x00\x01\x02\xff\xfe\r\n\r\n\x00",
		"workflow_attachment[]-name": "sent as workflow_attachment[]",
	}
	b := form(
		field("workflow_params", `{"message": "hello", "n": 3}`),
		field("workflow_type", "CWL"),
		field("workflow_type_version", "v1.0"),
		field("tags", `{"project": "wes", "owner": "ann"}`),
		field("workflow_engine", "cwltool"),
		field("workflow_engine_version", "3.1"),
		field("workflow_engine_parameters", `{"--quiet": null, "x": "1"}`),
		field("workflow_url", "dir/sub/main.cwl#main"),
		file("dir/sub/main.cwl", files["dir/sub/main.cwl"]),
		file("dir/sub/tools/echo.cwl", files["dir/sub/tools/echo.cwl"]),
		file("inputs/reads/sample 1.fq", files["inputs/reads/sample 1.fq"]),
		file("data/nested/deep/blob.bin", files["data/nested/deep/blob.bin"]),
		formPart{
			disposition: `form-data; name="workflow_attachment[]"; filename="workflow_attachment[]-name"`,
			content:     files["workflow_attachment[]-name"],
		},
	)
	sub, sink, err := decode(t, b, testLimits(), false)
	require.NoError(t, err)

	require.Equal(t, models.RunRequest{
		WorkflowParams:           sub.req.WorkflowParams, // compared below as JSON
		WorkflowType:             "CWL",
		WorkflowTypeVersion:      "v1.0",
		Tags:                     map[string]string{"project": "wes", "owner": "ann"},
		WorkflowEngineParameters: map[string]*string{"--quiet": ptr(""), "x": ptr("1")},
		WorkflowEngine:           "cwltool",
		WorkflowEngineVersion:    "3.1",
		WorkflowURL:              "dir/sub/main.cwl#main",
	}, sub.req)
	require.JSONEq(t, `{"message": "hello", "n": 3}`, string(sub.req.WorkflowParams))

	wantOrder := []string{"dir/sub/main.cwl", "dir/sub/tools/echo.cwl", "inputs/reads/sample 1.fq", "data/nested/deep/blob.bin", "workflow_attachment[]-name"}
	require.Len(t, sub.attachments, len(wantOrder))
	for i, name := range wantOrder {
		require.Equal(t, models.Attachment{Name: name, Key: "key/" + name, Size: int64(len(files[name]))}, sub.attachments[i])
	}
	require.Len(t, sink.files, len(files))
	for name, content := range files {
		require.Equal(t, []byte(content), sink.files[name], "content of %s", name)
	}
}

func TestDecodeSubmissionWorkflowTypeCase(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ given, want string }{
		{"cwl", "CWL"},
		{"Cwl", "CWL"},
		{" CWL ", "CWL"},
		{"snakemake", "SMK"},
		{"SnakeMake", "SMK"},
		{"smk", "SMK"},
		{"nextflow", "NFL"},
		{"wdl", "WDL"},
	} {
		t.Run("json/"+tc.given, func(t *testing.T) {
			t.Parallel()
			sub, _, err := decode(t, jsonBody(`{"workflow_type": "`+tc.given+`", "workflow_type_version": "1.0", "workflow_url": "https://example.com/wf"}`), testLimits(), false)
			require.NoError(t, err)
			require.Equal(t, tc.want, sub.req.WorkflowType)
		})
		t.Run("multipart/"+tc.given, func(t *testing.T) {
			t.Parallel()
			sub, _, err := decode(t, form(
				field("workflow_type", tc.given),
				field("workflow_type_version", "1.0"),
				field("workflow_url", "https://example.com/wf"),
			), testLimits(), false)
			require.NoError(t, err)
			require.Equal(t, tc.want, sub.req.WorkflowType)
		})
	}
}

func TestDecodeSubmissionAccepted(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		body       body
		allowLocal bool
		check      func(t *testing.T, sub *submission)
	}{
		{
			name: "json engine parameters with string and null",
			body: jsonBody(`{"workflow_type": "CWL", "workflow_type_version": "1.0", "workflow_url": "https://example.com/wf.cwl",
				"workflow_engine_parameters": {"--quiet": null, "x": "1"}}`),
			check: func(t *testing.T, sub *submission) {
				require.Equal(t, map[string]*string{"--quiet": ptr(""), "x": ptr("1")}, sub.req.WorkflowEngineParameters)
			},
		},
		{
			name: "json engine parameters as a string holding JSON",
			body: jsonBody(`{"workflow_type": "CWL", "workflow_type_version": "1.0", "workflow_url": "https://example.com/wf.cwl",
				"workflow_engine_parameters": "{\"--quiet\": null, \"x\": \"1\"}"}`),
			check: func(t *testing.T, sub *submission) {
				require.Equal(t, map[string]*string{"--quiet": ptr(""), "x": ptr("1")}, sub.req.WorkflowEngineParameters)
			},
		},
		{
			name: "multipart engine parameters with string and null",
			body: cwlForm(field("workflow_engine_parameters", `{"--quiet": null, "x": "1"}`)),
			check: func(t *testing.T, sub *submission) {
				require.Equal(t, map[string]*string{"--quiet": ptr(""), "x": ptr("1")}, sub.req.WorkflowEngineParameters)
			},
		},
		{
			name: "json workflow_params and tags as strings holding JSON",
			body: jsonBody(`{"workflow_type": "CWL", "workflow_type_version": "1.0", "workflow_url": "https://example.com/wf.cwl",
				"workflow_params": "{\"a\": [1, 2]}", "tags": "{\"k\": \"v\"}"}`),
			check: func(t *testing.T, sub *submission) {
				require.JSONEq(t, `{"a": [1, 2]}`, string(sub.req.WorkflowParams))
				require.Equal(t, map[string]string{"k": "v"}, sub.req.Tags)
			},
		},
		{
			name: "json workflow_params as a string holding an object with surrounding whitespace",
			body: jsonBody(`{"workflow_type": "CWL", "workflow_type_version": "1.0", "workflow_url": "https://example.com/wf.cwl",
				"workflow_params": "\n  {\"a\": 1}\n"}`),
			check: func(t *testing.T, sub *submission) {
				require.JSONEq(t, `{"a": 1}`, string(sub.req.WorkflowParams))
			},
		},
		{
			name: "no workflow_params is an empty object",
			body: jsonBody(`{"workflow_type": "CWL", "workflow_type_version": "1.0", "workflow_url": "https://example.com/wf.cwl"}`),
			check: func(t *testing.T, sub *submission) {
				require.JSONEq(t, `{}`, string(sub.req.WorkflowParams))
			},
		},
		{
			name: "empty multipart JSON fields are absent",
			body: cwlForm(field("workflow_params", "  "), field("tags", ""), field("workflow_engine_parameters", "")),
			check: func(t *testing.T, sub *submission) {
				require.JSONEq(t, `{}`, string(sub.req.WorkflowParams))
				require.Empty(t, sub.req.Tags)
				require.Empty(t, sub.req.WorkflowEngineParameters)
			},
		},
		{
			name: "relative workflow_url with ./ and a fragment names an attachment",
			body: form(
				field("workflow_type", "CWL"),
				field("workflow_type_version", "v1.0"),
				field("workflow_url", "./dir/sub/main.cwl#main"),
				file("dir/sub/main.cwl", "cwlVersion: v1.0\n"),
			),
			check: func(t *testing.T, sub *submission) {
				require.Equal(t, "./dir/sub/main.cwl#main", sub.req.WorkflowURL)
				require.Len(t, sub.attachments, 1)
			},
		},
		{
			name:       "file:// workflow_url when local workflows are on",
			body:       jsonBody(`{"workflow_type": "CWL", "workflow_type_version": "1.0", "workflow_url": "file:///data/wf.cwl"}`),
			allowLocal: true,
			check: func(t *testing.T, sub *submission) {
				require.Equal(t, "file:///data/wf.cwl", sub.req.WorkflowURL)
			},
		},
		{
			name:       "absolute workflow_url when local workflows are on",
			body:       jsonBody(`{"workflow_type": "CWL", "workflow_type_version": "1.0", "workflow_url": "/data/wf.cwl"}`),
			allowLocal: true,
			check: func(t *testing.T, sub *submission) {
				require.Equal(t, "/data/wf.cwl", sub.req.WorkflowURL)
			},
		},
		{
			name: "http workflow_url",
			body: jsonBody(`{"workflow_type": "CWL", "workflow_type_version": "1.0", "workflow_url": "HTTP://example.com/wf.cwl"}`),
			check: func(t *testing.T, sub *submission) {
				require.Equal(t, "HTTP://example.com/wf.cwl", sub.req.WorkflowURL)
			},
		},
		{
			name: "as many tags as allowed",
			body: jsonBody(`{"workflow_type": "CWL", "workflow_type_version": "1.0", "workflow_url": "https://example.com/wf.cwl",
				"tags": {"a": "1", "b": "2", "c": "3"}}`),
			check: func(t *testing.T, sub *submission) {
				require.Len(t, sub.req.Tags, 3)
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sub, _, err := decode(t, tc.body, testLimits(), tc.allowLocal)
			require.NoError(t, err)
			tc.check(t, sub)
		})
	}
}

func TestDecodeSubmissionRefused(t *testing.T) {
	t.Parallel()
	const wf = `"workflow_type": "CWL", "workflow_type_version": "1.0", "workflow_url": "https://example.com/wf.cwl"`
	tests := []struct {
		name       string
		body       body
		limits     func(*Limits)
		allowLocal bool
		status     int
		msg        string // the message contains it
	}{
		// Required fields.
		{name: "json missing workflow_type", body: jsonBody(`{"workflow_type_version": "1.0", "workflow_url": "https://example.com/wf.cwl"}`),
			status: 400, msg: "workflow_type is required"},
		{name: "json blank workflow_type", body: jsonBody(`{"workflow_type": "  ", "workflow_type_version": "1.0", "workflow_url": "https://example.com/wf.cwl"}`),
			status: 400, msg: "workflow_type is required"},
		{name: "json missing workflow_type_version", body: jsonBody(`{"workflow_type": "CWL", "workflow_url": "https://example.com/wf.cwl"}`),
			status: 400, msg: "workflow_type_version is required"},
		{name: "json missing workflow_url", body: jsonBody(`{"workflow_type": "CWL", "workflow_type_version": "1.0"}`),
			status: 400, msg: "workflow_url is required"},
		{name: "json workflow_type not a string", body: jsonBody(`{"workflow_type": 1, "workflow_type_version": "1.0", "workflow_url": "https://example.com/wf.cwl"}`),
			status: 400, msg: "workflow_type must be a string"},
		{name: "multipart missing workflow_type", body: form(field("workflow_type_version", "1.0"), field("workflow_url", "https://example.com/wf.cwl")),
			status: 400, msg: "workflow_type is required"},
		{name: "multipart missing workflow_type_version", body: form(field("workflow_type", "CWL"), field("workflow_url", "https://example.com/wf.cwl")),
			status: 400, msg: "workflow_type_version is required"},
		{name: "multipart missing workflow_url", body: form(field("workflow_type", "CWL"), field("workflow_type_version", "1.0")),
			status: 400, msg: "workflow_url is required"},

		// Malformed JSON fields.
		{name: "multipart malformed workflow_params", body: cwlForm(field("workflow_params", `{"a": `)),
			status: 400, msg: `form field "workflow_params" is not valid JSON`},
		{name: "multipart malformed tags", body: cwlForm(field("tags", `{"a": "b"`)),
			status: 400, msg: `form field "tags" is not valid JSON`},
		{name: "multipart malformed workflow_engine_parameters", body: cwlForm(field("workflow_engine_parameters", `{--quiet: null}`)),
			status: 400, msg: `form field "workflow_engine_parameters" is not valid JSON`},
		{name: "json workflow_params string holding malformed JSON", body: jsonBody(`{` + wf + `, "workflow_params": "{\"a\": "}`),
			status: 400, msg: "workflow_params is not valid JSON"},
		{name: "json tags string holding malformed JSON", body: jsonBody(`{` + wf + `, "tags": "{oops"}`),
			status: 400, msg: "tags is not valid JSON"},
		{name: "json workflow_engine_parameters string holding malformed JSON", body: jsonBody(`{` + wf + `, "workflow_engine_parameters": "[1,"}`),
			status: 400, msg: "workflow_engine_parameters is not valid JSON"},
		{name: "json malformed body", body: jsonBody(`{"workflow_type": "CWL",`),
			status: 400, msg: "request body is not a valid RunRequest"},
		{name: "json data after the object", body: jsonBody(`{` + wf + `} {}`),
			status: 400, msg: "data after the RunRequest object"},
		{name: "json closing bracket after the object", body: jsonBody(`{` + wf + `}]`),
			status: 400, msg: "data after the RunRequest object"},
		{name: "json body not an object", body: jsonBody(`[]`),
			status: 400, msg: "request body is not a valid RunRequest"},

		// Wrong JSON types.
		{name: "json workflow_params an array", body: jsonBody(`{` + wf + `, "workflow_params": [1, 2]}`),
			status: 400, msg: "workflow_params must be a JSON object"},
		{name: "json workflow_params a number", body: jsonBody(`{` + wf + `, "workflow_params": 3}`),
			status: 400, msg: "workflow_params must be a JSON object"},
		{name: "json workflow_params a string holding an array", body: jsonBody(`{` + wf + `, "workflow_params": "[1]"}`),
			status: 400, msg: "workflow_params must be a JSON object"},
		{name: "multipart workflow_params an array", body: cwlForm(field("workflow_params", `["a"]`)),
			status: 400, msg: "workflow_params must be a JSON object"},
		{name: "json tags with a number value", body: jsonBody(`{` + wf + `, "tags": {"a": 1}}`),
			status: 400, msg: "tags must be a JSON object of strings"},
		{name: "json workflow_engine_parameters with a number value", body: jsonBody(`{` + wf + `, "workflow_engine_parameters": {"x": 1}}`),
			status: 400, msg: "workflow_engine_parameters must be a JSON object"},
		{name: "multipart workflow_engine_parameters an array", body: cwlForm(field("workflow_engine_parameters", `["--quiet"]`)),
			status: 400, msg: "workflow_engine_parameters must be a JSON object"},

		// Unknown fields.
		{name: "json unknown field", body: jsonBody(`{` + wf + `, "colour": "blue"}`),
			status: 400, msg: `unknown field "colour"`},
		{name: "json field in another case", body: jsonBody(`{` + wf + `, "WORKFLOW_TYPE": "WDL"}`),
			status: 400, msg: `unknown field "WORKFLOW_TYPE" (field names are exact, in lower case)`},
		{name: "json field given twice", body: jsonBody(`{` + wf + `, "workflow_type": "WDL"}`),
			status: 400, msg: `field "workflow_type" is given twice`},
		{name: "json body a string", body: jsonBody(`"{}"`),
			status: 400, msg: "it must be a JSON object"},
		{name: "json member without a value", body: jsonBody(`{"workflow_type"}`),
			status: 400, msg: "request body is not a valid RunRequest"},
		{name: "multipart unknown field", body: cwlForm(field("colour", "blue")),
			status: 400, msg: `unknown form field "colour"`},
		{name: "multipart field given twice", body: cwlForm(field("workflow_type", "WDL")),
			status: 400, msg: `form field "workflow_type" given more than once`},

		// Engine and tags.
		{name: "json workflow_engine_version without workflow_engine", body: jsonBody(`{` + wf + `, "workflow_engine_version": "3.1"}`),
			status: 400, msg: "workflow_engine is required when workflow_engine_version is given"},
		{name: "multipart workflow_engine_version without workflow_engine", body: cwlForm(field("workflow_engine_version", "3.1")),
			status: 400, msg: "workflow_engine is required when workflow_engine_version is given"},
		{name: "json too many tags", body: jsonBody(`{` + wf + `, "tags": {"a": "1", "b": "2", "c": "3", "d": "4"}}`),
			status: 400, msg: "4 tags given, at most 3 allowed"},
		{name: "multipart too many tags", body: cwlForm(field("tags", `{"a": "1", "b": "2", "c": "3", "d": "4"}`)),
			status: 400, msg: "4 tags given, at most 3 allowed"},
		{name: "json empty tag key", body: jsonBody(`{` + wf + `, "tags": {"": "1"}}`),
			status: 400, msg: `tag ""`},

		// Attachment names.
		{name: "absolute attachment name", body: cwlForm(file("/etc/wf.cwl", "x")),
			status: 400, msg: `attachment filename "/etc/wf.cwl" is absolute`},
		{name: "parent segment in attachment name", body: cwlForm(file("dir/../../wf.cwl", "x")),
			status: 400, msg: `attachment filename "dir/../../wf.cwl" refers to a parent directory`},
		{name: "leading parent segment in attachment name", body: cwlForm(file("../wf.cwl", "x")),
			status: 400, msg: `attachment filename "../wf.cwl" refers to a parent directory`},
		{name: "empty segment in attachment name", body: cwlForm(file("dir//wf.cwl", "x")),
			status: 400, msg: `attachment filename "dir//wf.cwl" has an empty or "." path segment`},
		{name: "trailing slash in attachment name", body: cwlForm(file("dir/", "x")),
			status: 400, msg: `attachment filename "dir/" has an empty or "." path segment`},
		{name: "dot segment in attachment name", body: cwlForm(file("./wf.cwl", "x")),
			status: 400, msg: `attachment filename "./wf.cwl" has an empty or "." path segment`},
		{name: "inner dot segment in attachment name", body: cwlForm(file("dir/./wf.cwl", "x")),
			status: 400, msg: `attachment filename "dir/./wf.cwl" has an empty or "." path segment`},
		{name: "tab in attachment name", body: cwlForm(file("dir/w\tf.cwl", "x")),
			status: 400, msg: "contains control characters"},
		{name: "control character in attachment name (RFC 2231)",
			body:   cwlForm(formPart{disposition: `form-data; name="workflow_attachment"; filename*=UTF-8''w%01f.cwl`, content: "x"}),
			status: 400, msg: "contains control characters"},
		{name: "newline in attachment name (RFC 2231)",
			body:   cwlForm(formPart{disposition: `form-data; name="workflow_attachment"; filename*=UTF-8''dir%0Awf.cwl`, content: "x"}),
			status: 400, msg: "contains control characters"},
		{name: "backslash in attachment name (RFC 2231)",
			body:   cwlForm(formPart{disposition: `form-data; name="workflow_attachment"; filename*=UTF-8''dir%5Cwf.cwl`, content: "x"}),
			status: 400, msg: "contains a backslash"},
		{name: "attachment without a filename",
			body:   cwlForm(formPart{disposition: `form-data; name="workflow_attachment"`, content: "x"}),
			status: 400, msg: "a workflow_attachment part has no filename"},
		{name: "duplicate attachment", body: cwlForm(file("main.cwl", "again")),
			status: 400, msg: `attachment "main.cwl" given more than once`},
		{name: "duplicate attachment in a sub-directory", body: cwlForm(file("dir/sub/a.cwl", "1"), file("dir/sub/a.cwl", "2")),
			status: 400, msg: `attachment "dir/sub/a.cwl" given more than once`},

		// workflow_url.
		{name: "relative workflow_url naming no attachment",
			body:   form(field("workflow_type", "CWL"), field("workflow_type_version", "1.0"), field("workflow_url", "other.cwl"), file("dir/main.cwl", "x")),
			status: 400, msg: `workflow_url "other.cwl" names no attachment; attached: dir/main.cwl`},
		{name: "relative workflow_url without attachments",
			body:   jsonBody(`{"workflow_type": "CWL", "workflow_type_version": "1.0", "workflow_url": "main.cwl"}`),
			status: 400, msg: `workflow_url "main.cwl" is a relative path but no workflow_attachment was sent`},
		{name: "relative workflow_url leaving the attachments",
			body:   form(field("workflow_type", "CWL"), field("workflow_type_version", "1.0"), field("workflow_url", "dir/../../main.cwl"), file("main.cwl", "x")),
			status: 400, msg: `workflow_url "dir/../../main.cwl" refers to a parent directory`},
		{name: "file workflow_url when local workflows are off",
			body:   jsonBody(`{"workflow_type": "CWL", "workflow_type_version": "1.0", "workflow_url": "file:///data/wf.cwl"}`),
			status: 400, msg: `workflow_url "file:///data/wf.cwl" is a local file, and local workflows are disabled`},
		{name: "absolute workflow_url when local workflows are off",
			body:   jsonBody(`{"workflow_type": "CWL", "workflow_type_version": "1.0", "workflow_url": "/data/wf.cwl"}`),
			status: 400, msg: `workflow_url "/data/wf.cwl" is an absolute local path, and local workflows are disabled`},
		{name: "unknown workflow_url scheme",
			body:   jsonBody(`{"workflow_type": "CWL", "workflow_type_version": "1.0", "workflow_url": "ftp://example.com/wf.cwl"}`),
			status: 400, msg: `workflow_url scheme "ftp" is not supported`},
		{name: "unknown workflow_url scheme even when local workflows are on",
			body:       jsonBody(`{"workflow_type": "CWL", "workflow_type_version": "1.0", "workflow_url": "s3://bucket/wf.cwl"}`),
			allowLocal: true,
			status:     400, msg: `workflow_url scheme "s3" is not supported`},
		{name: "http workflow_url without a host",
			body:   jsonBody(`{"workflow_type": "CWL", "workflow_type_version": "1.0", "workflow_url": "https:///wf.cwl"}`),
			status: 400, msg: `workflow_url "https:///wf.cwl" has no host`},

		// Sizes.
		{name: "json body over the request limit",
			body:   jsonBody(`{` + wf + `, "workflow_params": {"pad": "` + strings.Repeat("x", 300) + `"}}`),
			limits: func(l *Limits) { l.MaxRequestBytes = 200 },
			status: 413, msg: "request body is larger than the limit of 200 bytes"},
		{name: "json body over the field limit",
			body:   jsonBody(`{` + wf + `, "workflow_params": {"pad": "` + strings.Repeat("x", 300) + `"}}`),
			limits: func(l *Limits) { l.MaxFieldBytes = 200 },
			status: 413, msg: "JSON body is larger than the limit of 200 bytes"},
		{name: "multipart attachment over the request limit",
			body:   cwlForm(file("big.bin", strings.Repeat("x", 2048))),
			limits: func(l *Limits) { l.MaxRequestBytes = 1024 },
			status: 413, msg: "request body is larger than the limit of 1024 bytes"},
		{name: "multipart fields over the request limit",
			body:   cwlForm(field("tags", `{"pad": "`+strings.Repeat("x", 2048)+`"}`)),
			limits: func(l *Limits) { l.MaxRequestBytes = 1024 },
			status: 413, msg: "request body is larger than the limit of 1024 bytes"},
		{name: "multipart field over the field limit",
			body:   cwlForm(field("workflow_params", `{"pad": "`+strings.Repeat("x", 300)+`"}`)),
			limits: func(l *Limits) { l.MaxFieldBytes = 200 },
			status: 413, msg: `form field "workflow_params" is larger than the limit of 200 bytes`},
		{name: "multipart string field over the field limit",
			body:   form(field("workflow_type", "CWL"), field("workflow_type_version", "1.0"), field("workflow_url", "https://example.com/"+strings.Repeat("x", 300))),
			limits: func(l *Limits) { l.MaxFieldBytes = 200 },
			status: 413, msg: `form field "workflow_url" is larger than the limit of 200 bytes`},
		{name: "too many attachments",
			body:   cwlForm(file("a", "1"), file("b", "2"), file("c", "3"), file("d", "4"), file("e", "5")),
			status: 413, msg: "more than 5 attachments"},

		// Text no database stores, JSON in a string nested too deep,
		// attachments that would be a file and a directory at once.
		{name: "json NUL in a tag value", body: jsonBody(`{` + wf + `, "tags": {"a": "x\u0000y"}}`),
			status: 400, msg: `tag "a" contains a NUL character`},
		{name: "json NUL in workflow_type_version", body: jsonBody(`{"workflow_type": "CWL", "workflow_type_version": "1\u0000", "workflow_url": "https://example.com/wf.cwl"}`),
			status: 400, msg: "workflow_type_version contains a NUL character"},
		{name: "json NUL in an engine parameter", body: jsonBody(`{` + wf + `, "workflow_engine_parameters": {"x": "\u0000"}}`),
			status: 400, msg: `workflow_engine_parameters "x" contains a NUL character`},
		{name: "multipart invalid UTF-8 in workflow_url", body: form(field("workflow_type", "CWL"), field("workflow_type_version", "1.0"), field("workflow_url", "https://example.com/\xff.cwl")),
			status: 400, msg: `form field "workflow_url" is not valid UTF-8`},
		{name: "json body of invalid UTF-8", body: jsonBody(`{` + wf + `, "tags": {"a": "` + "\xff" + `"}}`),
			status: 400, msg: "request body is not valid UTF-8"},
		{name: "json workflow_params string nested too deep", body: jsonBody(`{` + wf + `, "workflow_params": "{\"a\": [[[[[[[[[[1]]]]]]]]]]}"}`),
			limits: func(l *Limits) { l.MaxJSONDepth = 8 },
			status: 400, msg: "deeper than 8"},
		{name: "attachment under an attached file", body: cwlForm(file("a", "1"), file("a/b", "2")),
			status: 400, msg: `attachments "a" and "a/b": one is a file and would be a directory of the other`},
		{name: "attachment over a directory of attachments", body: cwlForm(file("d/x", "1"), file("d", "2")),
			status: 400, msg: `attachments "d/x" and "d"`},

		// Content types.
		{name: "text/plain", body: body{contentType: "text/plain", data: []byte(seedJSON)},
			status: 415, msg: `Content-Type "text/plain" is not accepted`},
		{name: "urlencoded form", body: body{contentType: "application/x-www-form-urlencoded", data: []byte("workflow_type=CWL")},
			status: 415, msg: `Content-Type "application/x-www-form-urlencoded" is not accepted`},
		{name: "no Content-Type", body: body{data: []byte(seedJSON)},
			status: 415, msg: "Content-Type must be multipart/form-data or application/json"},
		{name: "multipart without a boundary", body: body{contentType: "multipart/form-data", data: cwlForm().data},
			status: 400, msg: "multipart/form-data without a boundary"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			lim := testLimits()
			if tc.limits != nil {
				tc.limits(&lim)
			}
			sub, _, err := decode(t, tc.body, lim, tc.allowLocal)
			require.Error(t, err)
			require.Nil(t, sub)
			status, msg := statusOf(err)
			require.Equal(t, tc.status, status, "error: %v", err)
			require.Contains(t, msg, tc.msg)
		})
	}
}

func TestCheckDepth(t *testing.T) {
	t.Parallel()
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	for _, tc := range []struct {
		data string
		max  int
		ok   bool
	}{
		{deep(3), 3, true},
		{deep(4), 3, false},
		{`{"a":{"b":[1,2,{"c":3}]}}`, 4, true},
		{`{"a":{"b":[1,2,{"c":3}]}}`, 3, false},
		{`{"s":"[[[[[[[[[[\"{{{{"}`, 2, true}, // brackets inside strings do not count
		{deep(1000), 0, true},                 // 0: no limit
	} {
		err := checkDepth("x", []byte(tc.data), tc.max)
		require.Equal(t, tc.ok, err == nil, "%s max %d: %v", tc.data, tc.max, err)
		if err != nil {
			status, msg := statusOf(err)
			require.Equal(t, 400, status)
			require.Contains(t, msg, "WES_MAX_JSON_DEPTH")
		}
	}
	lim := Limits{MaxRequestBytes: 1 << 20, MaxFieldBytes: 1 << 20, MaxAttachments: 4, MaxTags: 4, MaxJSONDepth: 8}
	body := `{"workflow_type":"CWL","workflow_type_version":"v1.0","workflow_url":"https://x/wf.cwl","workflow_params":{"a":` + deep(20) + `}}`
	r := httptest.NewRequest(http.MethodPost, "/runs", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	_, err := decodeSubmission(r, lim, false, nil)
	require.ErrorContains(t, err, "deeper than 8")
}

func TestPageSize(t *testing.T) {
	t.Parallel()
	h := &handlers{s: &Server{cfg: Config{DefaultPageSize: 50, MaxPageSize: 100}}}
	// More than the server gives gets what it gives (the spec lets a page
	// hold fewer items than asked for).
	for v, want := range map[string]int{"": 50, "1": 1, "100": 100, "101": 100, "1000000": 100} {
		n, err := h.pageSize(v)
		require.NoError(t, err, v)
		require.Equal(t, want, n, v)
	}
	for _, v := range []string{"0", "-1", "x", "99999999999999999999"} {
		_, err := h.pageSize(v)
		status, _ := statusOf(err)
		require.Equal(t, 400, status, v)
	}
}

func TestWorkflowName(t *testing.T) {
	t.Parallel()
	for url, want := range map[string]string{
		"hello.cwl":                        "hello.cwl",
		"workflows/hello.cwl#main":         "hello.cwl#main",
		"https://example.org/wf/main.nf":   "main.nf",
		"https://example.org/wf/x.wdl?v=2": "x.wdl",
		"https://example.org/":             "example.org",
		"file:///data/pipelines/Snakefile": "Snakefile",
		"%zz":                              "%zz",
	} {
		require.Equal(t, want, workflowName(url), url)
	}
}

package apiserver

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path"
	"strings"
	"testing"
)

// discardSink accepts attachments and keeps only their names.
type discardSink struct{ names []string }

func (d *discardSink) put(_ context.Context, name string, r io.Reader) (string, int64, error) {
	n, err := io.Copy(io.Discard, r)
	d.names = append(d.names, name)
	return "k/" + name, n, err
}

var fuzzLimits = Limits{MaxRequestBytes: 1 << 20, MaxFieldBytes: 64 << 10, MaxAttachments: 16, MaxTags: 8}

// FuzzDecodeSubmission: no body, JSON or multipart, makes the decoder panic,
// and every attachment name it accepts stays inside the run directory.
func FuzzDecodeSubmission(f *testing.F) {
	f.Add("application/json", []byte(`{"workflow_params": {"outputUri": "s3://my-bucket/outputs/"}, "workflow_type": "CWL", "workflow_type_version": "1.0", "workflow_url": "https://example.com/workflows/hello-world.cwl"}`))
	f.Add("application/json", []byte(`{"workflow_type":"cwl","workflow_type_version":"v1.2","workflow_url":"wf.cwl","workflow_engine_parameters":{"--quiet":null},"tags":"{\"a\":\"b\"}"}`))
	f.Add("multipart/form-data; boundary=X", []byte("--X\r\nContent-Disposition: form-data; name=\"workflow_type\"\r\n\r\nCWL\r\n--X\r\nContent-Disposition: form-data; name=\"workflow_type_version\"\r\n\r\nv1.0\r\n--X\r\nContent-Disposition: form-data; name=\"workflow_url\"\r\n\r\nsub/wf.cwl\r\n--X\r\nContent-Disposition: form-data; name=\"workflow_attachment\"; filename=\"sub/wf.cwl\"\r\n\r\ncwlVersion: v1.0\r\n--X--\r\n"))
	f.Add("multipart/form-data; boundary=X", []byte("--X\r\nContent-Disposition: form-data; name=\"workflow_attachment\"; filename=\"../../etc/passwd\"\r\n\r\nx\r\n--X--\r\n"))
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, "/ga4gh/wes/v1/runs", bytes.NewReader(body))
		r.Header.Set("Content-Type", contentType)
		r.Body = http.MaxBytesReader(w, r.Body, fuzzLimits.MaxRequestBytes)
		sink := &discardSink{}
		sub, err := decodeSubmission(r, fuzzLimits, false, sink)
		for _, name := range sink.names {
			if path.IsAbs(name) || path.Clean(name) != name || name == ".." || strings.HasPrefix(name, "../") {
				t.Fatalf("attachment name %q escapes the run directory", name)
			}
		}
		if err != nil {
			if status, _ := statusOf(err); status >= 500 {
				t.Fatalf("a bad request became %d: %v", status, err)
			}
			return
		}
		if sub.req.WorkflowType == "" || sub.req.WorkflowTypeVersion == "" || sub.req.WorkflowURL == "" {
			t.Fatalf("accepted a request without a required field: %+v", sub.req)
		}
	})
}

// FuzzCleanAttachmentName: an accepted name is relative, clean and free of
// control characters.
func FuzzCleanAttachmentName(f *testing.F) {
	for _, s := range []string{"wf.cwl", "dir/sub/wf.cwl", "../x", "/etc/passwd", "a//b", "./a", "a/./b", "a\x00b", `a\b`, "a/..", "…/ü.cwl"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		got, err := cleanAttachmentName(name)
		if err != nil {
			return
		}
		if got != name || path.IsAbs(got) || path.Clean(got) != got || got == ".." || strings.HasPrefix(got, "../") ||
			strings.ContainsAny(got, "\x00\\") {
			t.Fatalf("accepted %q as %q", name, got)
		}
	})
}

// FuzzPageToken: decoding never panics, and only tokens this key made for
// this scope decode.
func FuzzPageToken(f *testing.F) {
	p := pageTokens{key: []byte("fuzz-key")}
	f.Add(p.encode(42, "runs"), "runs")
	f.Add("AAAAAAAAAAIxxxxxxxxxxxxxxxxxxxxxx", "runs")
	f.Add("", "tasks")
	f.Fuzz(func(t *testing.T, token, scope string) {
		c, err := p.decode(token, scope)
		if err != nil {
			return
		}
		if token == "" {
			if c != 0 {
				t.Fatalf("empty token decoded to %d", c)
			}
			return
		}
		if c <= 0 || p.encode(c, scope) != token {
			t.Fatalf("token %q decoded to cursor %d, which encodes differently", token, c)
		}
	})
}

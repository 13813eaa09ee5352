package apiserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/wes-dev/wes/models"
)

// httpError is an error with the status it should be answered with and a
// message a user can act on.
type httpError struct {
	status int
	msg    string
	err    error
}

func (e *httpError) Error() string {
	if e.err != nil {
		return e.msg + ": " + e.err.Error()
	}
	return e.msg
}

func (e *httpError) Unwrap() error { return e.err }

func badRequest(format string, args ...any) error {
	return &httpError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

func withStatus(status int, err error, format string, args ...any) error {
	return &httpError{status: status, msg: fmt.Sprintf(format, args...), err: err}
}

var errBrokerUnavailable = errors.New("message broker unavailable")

// statusOf maps an error to an HTTP status and the message shown to the
// client: the one place where errors become responses.
func statusOf(err error) (int, string) {
	var (
		he     *httpError
		tooBig *http.MaxBytesError
	)
	switch {
	case errors.As(err, &he):
		return he.status, he.msg
	case errors.As(err, &tooBig):
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than the limit of %d bytes (WES_MAX_REQUEST_BYTES)", tooBig.Limit)
	case errors.Is(err, models.ErrNotFound):
		return http.StatusNotFound, err.Error()
	case errors.Is(err, models.ErrInvalid):
		return http.StatusBadRequest, err.Error()
	case errors.Is(err, models.ErrUnavailable):
		return http.StatusServiceUnavailable, "the database is unavailable; nothing was recorded, retry shortly"
	case errors.Is(err, models.ErrSchemaOutdated):
		return http.StatusServiceUnavailable, err.Error()
	case errors.Is(err, errBrokerUnavailable):
		return http.StatusServiceUnavailable, "the message broker is unavailable; nothing was changed, retry shortly"
	}
	return http.StatusInternalServerError, "internal server error"
}

// writeError answers with the WES ErrorResponse for err.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	status, msg := statusOf(err)
	if status >= 500 {
		log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	} else {
		log.DebugContext(r.Context(), "request refused", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	}
	writeJSON(w, status, errorResponse{Msg: msg, StatusCode: status})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

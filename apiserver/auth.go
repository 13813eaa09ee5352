package apiserver

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"

	"github.com/wes-dev/wes/models"
)

// Principal is who makes a request.
type Principal struct {
	User  string
	Admin bool
}

// Authenticator tells who sent a request. ErrUnauthenticated (wrapped)
// means "no or bad credentials".
type Authenticator interface {
	Authenticate(r *http.Request) (*Principal, error)
}

// ErrUnauthenticated: the request carries no valid credentials.
var ErrUnauthenticated = errors.New("unauthenticated")

// Anyone is the authenticator of WES_AUTH_MODE=none: every caller is an
// administrator who sees every run.
type Anyone struct{}

// Authenticate implements Authenticator.
func (Anyone) Authenticate(*http.Request) (*Principal, error) { return &Principal{Admin: true}, nil }

// TokenFile authenticates static bearer tokens listed in a file, one
// "TOKEN USER [ROLE…]" per line ('#' starts a comment; the role "admin"
// sees every run). The file is read again when it changes, at most once a
// second, so tokens can be added or revoked without a restart.
type TokenFile struct {
	path string

	mu      sync.Mutex
	checked time.Time
	modTime time.Time
	size    int64
	users   map[[32]byte]Principal // by SHA-256 of the token
}

// NewTokenFile reads path and returns its authenticator.
func NewTokenFile(path string) (*TokenFile, error) {
	t := &TokenFile{path: path}
	if err := t.reload(); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *TokenFile) reload() error {
	fi, err := os.Stat(t.path)
	if err != nil {
		return fmt.Errorf("tokens file: %w", err)
	}
	f, err := os.Open(t.path)
	if err != nil {
		return fmt.Errorf("tokens file: %w", err)
	}
	defer f.Close()
	users := map[[32]byte]Principal{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if len(fields) < 2 {
			return fmt.Errorf("tokens file %s line %d: want TOKEN USER [ROLE…]", t.path, n)
		}
		if len(fields[0]) < 16 {
			return fmt.Errorf("tokens file %s line %d: tokens must be at least 16 characters", t.path, n)
		}
		p := Principal{User: fields[1]}
		for _, role := range fields[2:] {
			p.Admin = p.Admin || role == "admin"
		}
		users[sha256.Sum256([]byte(fields[0]))] = p
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("tokens file: %w", err)
	}
	t.users, t.modTime, t.size = users, fi.ModTime(), fi.Size()
	return nil
}

// Authenticate implements Authenticator.
func (t *TokenFile) Authenticate(r *http.Request) (*Principal, error) {
	token, ok := bearer(r)
	if !ok {
		return nil, fmt.Errorf("%w: send Authorization: Bearer <token>", ErrUnauthenticated)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if now := time.Now(); now.Sub(t.checked) > time.Second {
		t.checked = now
		if fi, err := os.Stat(t.path); err == nil && (!fi.ModTime().Equal(t.modTime) || fi.Size() != t.size) {
			// A broken edit keeps the last good tokens.
			_ = t.reload()
		}
	}
	// Looking up the token's hash does not leak, through timing, how much
	// of a guess was right.
	p, ok := t.users[sha256.Sum256([]byte(token))]
	if !ok {
		return nil, fmt.Errorf("%w: unknown or revoked token", ErrUnauthenticated)
	}
	return &p, nil
}

func bearer(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return "", false
	}
	return strings.TrimSpace(token), true
}

type principalKey struct{}

func principalOf(ctx context.Context) *Principal {
	if p, ok := ctx.Value(principalKey{}).(*Principal); ok {
		return p
	}
	return &Principal{}
}

// authenticate requires credentials on every route but the public ones;
// on public routes it records the principal when credentials are given.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.auth.Authenticate(r)
		if err != nil {
			if public(r) {
				next.ServeHTTP(w, r)
				return
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="wes"`)
			writeError(w, r, s.log, withStatus(http.StatusUnauthorized, err, "%v", err))
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}

func public(r *http.Request) bool {
	route := mux.CurrentRoute(r)
	if route == nil {
		return true // 404 and 405 answers reveal nothing
	}
	tpl, _ := route.GetPathTemplate()
	return strings.HasSuffix(tpl, "/service-info") || tpl == "/healthz" || tpl == "/readyz" || tpl == "/metrics"
}

// owner is the owner filter for the caller: none for an administrator.
func owner(p *Principal) string {
	if p.Admin {
		return ""
	}
	return p.User
}

// run loads the run of the request's {run_id}; another user's run is "not
// found", so that its existence is not revealed.
func (h *handlers) run(r *http.Request) (*models.Run, error) {
	id := mux.Vars(r)["run_id"]
	if checkText("run id", id) != nil { // no run has it; the database would refuse to look
		return nil, fmt.Errorf("run %q: %w", id, models.ErrNotFound)
	}
	run, err := h.s.store.GetRun(r.Context(), id)
	if err != nil {
		return nil, err
	}
	if p := principalOf(r.Context()); !p.Admin && run.Owner != p.User {
		return nil, fmt.Errorf("run %q: %w", id, models.ErrNotFound)
	}
	return run, nil
}

package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
)

// OIDCConfig configures JWT bearer-token authentication.
type OIDCConfig struct {
	// Issuer is the OpenID provider's issuer URL (its discovery document
	// and keys are found from it).
	Issuer string
	// Audience is the value the tokens' aud claim must contain.
	Audience string
	// UserClaim names the user (default "sub").
	UserClaim string
	// RolesClaim holds a list of roles (default "roles").
	RolesClaim string
	// AdminRole is the role that sees every run (default "admin").
	AdminRole string
	// ClockSkew is tolerated on expiry (default 1 minute).
	ClockSkew time.Duration
	// KeyRefresh is the least time between two fetches of the provider's
	// keys (default 10 s): a token that names a key not held makes a
	// fetch, and forged ones must not make one each.
	KeyRefresh time.Duration
}

// OIDC authenticates JWT bearer tokens against an OpenID provider: the
// signature against its published keys (a key it rotates in is fetched when
// a token names it), the issuer, the audience and the expiry. go-oidc does
// the cryptography.
type OIDC struct {
	cfg      OIDCConfig
	verifier *oidc.IDTokenVerifier
}

// NewOIDC reads the provider's discovery document and returns the
// authenticator.
func NewOIDC(ctx context.Context, cfg OIDCConfig) (*OIDC, error) {
	if cfg.Issuer == "" || cfg.Audience == "" {
		return nil, fmt.Errorf("OIDC needs an issuer and an audience (WES_OIDC_ISSUER, WES_OIDC_AUDIENCE)")
	}
	if cfg.UserClaim == "" {
		cfg.UserClaim = "sub"
	}
	if cfg.RolesClaim == "" {
		cfg.RolesClaim = "roles"
	}
	if cfg.AdminRole == "" {
		cfg.AdminRole = "admin"
	}
	if cfg.ClockSkew == 0 {
		cfg.ClockSkew = time.Minute
	}
	if cfg.KeyRefresh == 0 {
		cfg.KeyRefresh = 10 * time.Second
	}
	// The provider's keys are fetched later, as tokens need them, with a
	// context that outlives this call.
	provider, err := oidc.NewProvider(oidc.ClientContext(ctx, http.DefaultClient), cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("OIDC discovery at %s: %w", cfg.Issuer, err)
	}
	var meta struct {
		JWKS string   `json:"jwks_uri"`
		Algs []string `json:"id_token_signing_alg_values_supported"`
	}
	if err := provider.Claims(&meta); err != nil || meta.JWKS == "" {
		return nil, fmt.Errorf("OIDC discovery at %s: no jwks_uri", cfg.Issuer)
	}
	keys := &keySet{uri: meta.JWKS, client: &http.Client{Timeout: 10 * time.Second}, every: cfg.KeyRefresh}
	skew := cfg.ClockSkew
	verifier := oidc.NewVerifier(cfg.Issuer, keys, &oidc.Config{
		ClientID: cfg.Audience,
		// The algorithms the provider announces that we verify (RS256 if
		// none, as go-oidc's own verifier does).
		SupportedSigningAlgs: supportedAlgs(meta.Algs),
		Now:                  func() time.Time { return time.Now().Add(-skew) },
	})
	return &OIDC{cfg: cfg, verifier: verifier}, nil
}

// keySet holds the provider's published keys, and fetches them again when
// a token names a key it does not hold (the provider rotated its keys), at
// most once every KeyRefresh. go-oidc's own key set fetches them for every
// such token, and a token's claims are checked only after its signature:
// anyone could make each request a fetch from the provider with made-up
// key ids.
type keySet struct {
	uri    string
	client *http.Client
	every  time.Duration

	keys atomic.Pointer[[]jose.JSONWebKey] // read without a lock
	// mu is held by one fetch at a time; the others wait for it and use
	// what it brought.
	mu      sync.Mutex
	fetched time.Time
}

// signingAlgs are the algorithms a token may be parsed with; the verifier
// has already refused any the provider does not announce.
var signingAlgs = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512, jose.EdDSA,
}

// supportedAlgs keeps of the announced algorithms those a token may be
// signed with (not "none", not a shared secret's), or RS256 if none is left.
func supportedAlgs(announced []string) []string {
	var out []string
	for _, a := range announced {
		if slices.Contains(signingAlgs, jose.SignatureAlgorithm(a)) {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return []string{string(jose.RS256)}
	}
	return out
}

// VerifySignature implements oidc.KeySet.
func (k *keySet) VerifySignature(ctx context.Context, raw string) ([]byte, error) {
	jws, err := jose.ParseSigned(raw, signingAlgs)
	if err != nil {
		return nil, fmt.Errorf("malformed token: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("a token must have one signature")
	}
	kid := jws.Signatures[0].Header.KeyID
	if payload, ok := k.verify(jws, kid); ok {
		return payload, nil
	}
	if err := k.refresh(ctx); err != nil {
		return nil, err
	}
	if payload, ok := k.verify(jws, kid); ok {
		return payload, nil
	}
	return nil, errors.New("the token's signature matches none of the provider's keys")
}

func (k *keySet) verify(jws *jose.JSONWebSignature, kid string) ([]byte, bool) {
	keys := k.keys.Load()
	if keys == nil {
		return nil, false
	}
	for _, key := range *keys {
		if kid == "" || key.KeyID == kid {
			if payload, err := jws.Verify(&key); err == nil {
				return payload, true
			}
		}
	}
	return nil, false
}

// refresh fetches the keys, unless they were fetched less than every ago.
// Requests with keys already held never wait for it (verify reads them
// without the lock); the fetch is not the request's, so that a client
// that hangs up does not cut it short.
func (k *keySet) refresh(context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.fetched.IsZero() && time.Since(k.fetched) < k.every {
		return nil
	}
	k.fetched = time.Now()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, k.uri, nil)
	if err != nil {
		return err
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return fmt.Errorf("fetch the provider's keys: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetch the provider's keys: %s", resp.Status)
	}
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&set); err != nil {
		return fmt.Errorf("the provider's keys: %w", err)
	}
	k.keys.Store(&set.Keys)
	return nil
}

// Authenticate implements Authenticator.
func (o *OIDC) Authenticate(r *http.Request) (*Principal, error) {
	raw, ok := bearer(r)
	if !ok {
		return nil, fmt.Errorf("%w: send Authorization: Bearer <JWT>", ErrUnauthenticated)
	}
	tok, err := o.verifier.Verify(r.Context(), raw)
	if err != nil {
		return nil, fmt.Errorf("%w: invalid token: %v", ErrUnauthenticated, err)
	}
	var claims map[string]any
	if err := tok.Claims(&claims); err != nil {
		return nil, fmt.Errorf("%w: unreadable claims", ErrUnauthenticated)
	}
	user, _ := claims[o.cfg.UserClaim].(string)
	if user == "" {
		return nil, fmt.Errorf("%w: the token has no %q claim", ErrUnauthenticated, o.cfg.UserClaim)
	}
	p := &Principal{User: user}
	if roles, ok := claims[o.cfg.RolesClaim].([]any); ok {
		p.Admin = slices.Contains(roles, any(o.cfg.AdminRole))
	}
	return p, nil
}

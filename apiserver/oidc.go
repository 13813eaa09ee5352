package apiserver

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
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
	// The provider's keys are fetched later, as tokens need them, with a
	// context that outlives this call.
	provider, err := oidc.NewProvider(oidc.ClientContext(ctx, http.DefaultClient), cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("OIDC discovery at %s: %w", cfg.Issuer, err)
	}
	skew := cfg.ClockSkew
	verifier := provider.Verifier(&oidc.Config{
		ClientID: cfg.Audience,
		Now:      func() time.Time { return time.Now().Add(-skew) },
	})
	return &OIDC{cfg: cfg, verifier: verifier}, nil
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

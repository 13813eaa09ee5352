package apiserver

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/stretchr/testify/require"
)

// issuer is an OpenID provider in miniature: a discovery document and a
// JWKS over real HTTP, real RSA keys, and the ability to rotate them.
type issuer struct {
	srv     *httptest.Server
	mu      sync.Mutex
	keys    []jose.JSONWebKey // private keys; the first signs
	fetches int               // of the JWKS
}

func newIssuer(t *testing.T) *issuer {
	iss := &issuer{}
	iss.rotate(t)
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer": iss.srv.URL, "jwks_uri": iss.srv.URL + "/keys",
			"id_token_signing_alg_values_supported": []string{"RS256"},
		})
	})
	mux.HandleFunc("/keys", func(w http.ResponseWriter, _ *http.Request) {
		iss.mu.Lock()
		defer iss.mu.Unlock()
		iss.fetches++
		var set jose.JSONWebKeySet
		for _, k := range iss.keys {
			set.Keys = append(set.Keys, k.Public())
		}
		_ = json.NewEncoder(w).Encode(set)
	})
	iss.srv = httptest.NewServer(mux)
	t.Cleanup(iss.srv.Close)
	return iss
}

// rotate makes a new signing key; the JWKS publishes only it from now on.
func (iss *issuer) rotate(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	iss.mu.Lock()
	defer iss.mu.Unlock()
	iss.keys = []jose.JSONWebKey{{Key: key, KeyID: randomKID(t), Algorithm: "RS256", Use: "sig"}}
}

func randomKID(t *testing.T) string {
	b := make([]byte, 6)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return hex.EncodeToString(b)
}

func (iss *issuer) token(t *testing.T, claims map[string]any) string {
	iss.mu.Lock()
	k := iss.keys[0]
	iss.mu.Unlock()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: k},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", k.KeyID))
	require.NoError(t, err)
	raw, err := jwt.Signed(signer).Claims(claims).Serialize()
	require.NoError(t, err)
	return raw
}

func TestOIDC(t *testing.T) {
	iss := newIssuer(t)
	o, err := NewOIDC(context.Background(), OIDCConfig{Issuer: iss.srv.URL, Audience: "wes", ClockSkew: time.Second, KeyRefresh: 300 * time.Millisecond})
	require.NoError(t, err)
	now := time.Now()
	claims := func(mod func(map[string]any)) map[string]any {
		c := map[string]any{"iss": iss.srv.URL, "aud": "wes", "sub": "alice", "exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}
		if mod != nil {
			mod(c)
		}
		return c
	}
	auth := func(token string) (*Principal, error) {
		r := httptest.NewRequest(http.MethodGet, "/ga4gh/wes/v1/runs", nil)
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		return o.Authenticate(r)
	}

	p, err := auth(iss.token(t, claims(nil)))
	require.NoError(t, err)
	require.Equal(t, &Principal{User: "alice"}, p)

	p, err = auth(iss.token(t, claims(func(c map[string]any) { c["roles"] = []string{"reader", "admin"} })))
	require.NoError(t, err)
	require.True(t, p.Admin)

	for name, tok := range map[string]string{
		"no token":       "",
		"not a JWT":      "abc.def.ghi",
		"wrong audience": iss.token(t, claims(func(c map[string]any) { c["aud"] = "other" })),
		"wrong issuer":   iss.token(t, claims(func(c map[string]any) { c["iss"] = "https://evil.example" })),
		"expired":        iss.token(t, claims(func(c map[string]any) { c["exp"] = now.Add(-time.Minute).Unix() })),
		"no subject":     iss.token(t, claims(func(c map[string]any) { delete(c, "sub") })),
	} {
		_, err := auth(tok)
		require.ErrorIs(t, err, ErrUnauthenticated, name)
	}

	// A token signed by a key the service never saw is refused…
	other := &issuer{srv: iss.srv}
	other.rotate(t)
	_, err = auth(other.token(t, claims(nil)))
	require.ErrorIs(t, err, ErrUnauthenticated)

	// Tokens that name keys the provider does not have, as many as one
	// likes, make one fetch of its keys per KeyRefresh, not one each.
	forged := &issuer{srv: iss.srv}
	forged.rotate(t)
	var tokens []string
	for range 50 {
		forged.keys[0].KeyID = randomKID(t)
		tokens = append(tokens, forged.token(t, claims(nil)))
	}
	iss.mu.Lock()
	before := iss.fetches
	iss.mu.Unlock()
	start := time.Now()
	for _, tok := range tokens {
		_, err = auth(tok)
		require.ErrorIs(t, err, ErrUnauthenticated)
	}
	periods := int(time.Since(start)/(300*time.Millisecond)) + 1
	iss.mu.Lock()
	require.LessOrEqual(t, iss.fetches-before, periods, "forged key ids made the service fetch the provider's keys each time")
	iss.mu.Unlock()

	// …but once the provider rotates to a new key, tokens it signs are
	// accepted: the verifier fetches the keys again for an unknown kid
	// (once KeyRefresh has passed since the last fetch).
	time.Sleep(350 * time.Millisecond)
	iss.rotate(t)
	p, err = auth(iss.token(t, claims(nil)))
	require.NoError(t, err, "key rotation")
	require.Equal(t, "alice", p.User)
	require.False(t, errors.Is(err, ErrUnauthenticated))
}

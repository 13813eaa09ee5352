package apiserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
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

// A provider that signs with ES256, and says so in its discovery document,
// has its tokens taken (go-oidc alone would take RS256 only).
func TestOIDCTakesTheProvidersAlgorithms(t *testing.T) {
	t.Parallel()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	jwk := jose.JSONWebKey{Key: key, KeyID: "k1", Algorithm: "ES256", Use: "sig"}
	var srv *httptest.Server
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": srv.URL, "jwks_uri": srv.URL + "/keys",
			"id_token_signing_alg_values_supported": []string{"ES256"}})
	})
	mux.HandleFunc("/keys", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{jwk.Public()}})
	})
	srv = httptest.NewServer(mux)
	defer srv.Close()
	o, err := NewOIDC(context.Background(), OIDCConfig{Issuer: srv.URL, Audience: "wes"})
	require.NoError(t, err)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jwk}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
	require.NoError(t, err)
	raw, err := jwt.Signed(signer).Claims(map[string]any{"iss": srv.URL, "aud": "wes", "sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}).Serialize()
	require.NoError(t, err)
	r := httptest.NewRequest(http.MethodGet, "/ga4gh/wes/v1/runs", nil)
	r.Header.Set("Authorization", "Bearer "+raw)
	_, err = o.Authenticate(r)
	require.NoError(t, err, "a valid ES256 token from a provider that announces ES256")
}

// A slow fetch of the provider's keys (for a token naming a key not held)
// holds up no request whose token's key is held.
func TestOIDCSlowKeyFetchHoldsNoOtherRequest(t *testing.T) {
	t.Parallel()
	iss := newIssuer(t)
	var slow atomic.Bool
	// wrap the JWKS handler with a delay
	inner := iss.srv.Config.Handler
	iss.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/keys" && slow.Load() {
			time.Sleep(3 * time.Second)
		}
		inner.ServeHTTP(w, r)
	})
	o, err := NewOIDC(context.Background(), OIDCConfig{Issuer: iss.srv.URL, Audience: "wes", KeyRefresh: 100 * time.Millisecond})
	require.NoError(t, err)
	claims := map[string]any{"iss": iss.srv.URL, "aud": "wes", "sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}
	auth := func(tok string) error {
		r := httptest.NewRequest(http.MethodGet, "/ga4gh/wes/v1/runs", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		_, err := o.Authenticate(r)
		return err
	}
	good := iss.token(t, claims)
	require.NoError(t, auth(good))
	time.Sleep(150 * time.Millisecond)
	slow.Store(true)
	forged := &issuer{srv: iss.srv}
	forged.rotate(t)
	go auth(forged.token(t, claims))
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	require.NoError(t, auth(good))
	require.Less(t, time.Since(start), time.Second, "a token of a key held, while one forged token's fetch is slow")
}

func TestSupportedAlgs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ announced, want []string }{
		{nil, []string{"RS256"}},
		{[]string{"ES256", "RS256"}, []string{"ES256", "RS256"}},
		{[]string{"HS256", "none"}, []string{"RS256"}},
		{[]string{"none", "PS256"}, []string{"PS256"}},
	} {
		require.Equal(t, tc.want, supportedAlgs(tc.announced), "%v", tc.announced)
	}
}

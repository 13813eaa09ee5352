package apiserver

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

const tokenScope = "runs?state=RUNNING"

func testTokens() pageTokens { return pageTokens{key: []byte("0123456789abcdef0123456789abcdef")} }

func TestPageTokenRoundTrip(t *testing.T) {
	t.Parallel()
	p := testTokens()
	for _, cursor := range []int64{1, 2, 255, 256, 1 << 31, 1<<53 + 1, math.MaxInt64} {
		tok := p.encode(cursor, tokenScope)
		require.NotEmpty(t, tok, "cursor %d", cursor)
		got, err := p.decode(tok, tokenScope)
		require.NoError(t, err, "cursor %d", cursor)
		require.Equal(t, cursor, got)
	}
}

func TestPageTokenNoCursorIsEmpty(t *testing.T) {
	t.Parallel()
	p := testTokens()
	for _, cursor := range []int64{0, -1, math.MinInt64} {
		require.Equal(t, "", p.encode(cursor, tokenScope), "cursor %d", cursor)
	}
	got, err := p.decode("", tokenScope)
	require.NoError(t, err)
	require.Equal(t, int64(0), got)
}

func TestPageTokenIsOpaque(t *testing.T) {
	t.Parallel()
	p := testTokens()
	// The same cursor in different scopes gives different tokens, and a
	// token is not the cursor spelled out.
	a, b := p.encode(42, "runs"), p.encode(42, "runs?state=COMPLETE")
	require.NotEqual(t, a, b)
	require.NotContains(t, a, "42")
}

func TestPageTokenRefused(t *testing.T) {
	t.Parallel()
	p := testTokens()
	const cursor = 1234
	good := p.encode(cursor, tokenScope)
	raw, err := base64.RawURLEncoding.DecodeString(good)
	require.NoError(t, err)
	require.Len(t, raw, 8+macLen)

	reencode := func(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
	withCursor := func(c uint64) string {
		b := append([]byte(nil), raw...)
		binary.BigEndian.PutUint64(b[:8], c)
		return reencode(b) // MAC kept
	}
	// A token with a valid MAC for a cursor encode never makes.
	forged := func(c uint64) string {
		buf := binary.BigEndian.AppendUint64(nil, c)
		return reencode(append(buf, p.mac(buf, tokenScope)...))
	}

	type refusal struct {
		name, token, scope string
		dec                *pageTokens // nil: p
	}
	tests := []refusal{
		{name: "other scope", token: good, scope: "runs?state=COMPLETE"},
		{name: "scope of another run's tasks", token: p.encode(cursor, "run/a/tasks"), scope: "run/b/tasks"},
		{name: "empty scope", token: good, scope: ""},
		{name: "longer scope", token: good, scope: tokenScope + "x"},
		{name: "cursor changed, MAC kept", token: withCursor(cursor + 1), scope: tokenScope},
		{name: "cursor zeroed, MAC kept", token: withCursor(0), scope: tokenScope},
		{name: "truncated by one character", token: good[:len(good)-1], scope: tokenScope},
		{name: "truncated to the cursor", token: reencode(raw[:8]), scope: tokenScope},
		{name: "one byte appended", token: reencode(append(append([]byte(nil), raw...), 0)), scope: tokenScope},
		{name: "standard base64 padding", token: base64.URLEncoding.EncodeToString(raw) + "=", scope: tokenScope},
		{name: "not base64", token: "!!!!" + good[4:], scope: tokenScope},
		{name: "whitespace", token: " " + good, scope: tokenScope},
		{name: "forged zero cursor", token: forged(0), scope: tokenScope},
		{name: "forged negative cursor", token: forged(1 << 63), scope: tokenScope},
		{name: "other key", token: good, scope: tokenScope, dec: &pageTokens{key: []byte("another key")}},
		{name: "no key", token: good, scope: tokenScope, dec: &pageTokens{}},
	}
	for i := range raw {
		b := append([]byte(nil), raw...)
		b[i] ^= 0x01
		tests = append(tests, refusal{name: fmt.Sprintf("bit flipped in byte %d", i), token: reencode(b), scope: tokenScope})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dec := p
			if tc.dec != nil {
				dec = *tc.dec
			}
			c, err := dec.decode(tc.token, tc.scope)
			require.ErrorIs(t, err, errBadToken)
			require.Equal(t, int64(0), c)
		})
	}
}

func TestPageTokenKeysDoNotMix(t *testing.T) {
	t.Parallel()
	a := pageTokens{key: []byte("key A")}
	b := pageTokens{key: []byte("key B")}
	ta, tb := a.encode(7, tokenScope), b.encode(7, tokenScope)
	require.NotEqual(t, ta, tb)

	_, err := b.decode(ta, tokenScope)
	require.ErrorIs(t, err, errBadToken)
	_, err = a.decode(tb, tokenScope)
	require.ErrorIs(t, err, errBadToken)

	// Each still accepts its own.
	c, err := a.decode(ta, tokenScope)
	require.NoError(t, err)
	require.Equal(t, int64(7), c)
	c, err = b.decode(tb, tokenScope)
	require.NoError(t, err)
	require.Equal(t, int64(7), c)
}

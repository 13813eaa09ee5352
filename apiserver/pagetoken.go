package apiserver

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
)

// pageTokens makes opaque page tokens: a cursor plus an HMAC over the cursor
// and the query it belongs to. A client can neither forge a cursor nor carry
// a token over to another query (other filters, another run's tasks).
type pageTokens struct {
	key []byte
}

const macLen = 16

var errBadToken = errors.New("page_token is invalid or belongs to a different query: start again without page_token")

func (p pageTokens) mac(cursor []byte, scope string) []byte {
	h := hmac.New(sha256.New, p.key)
	h.Write(cursor)
	h.Write([]byte(scope))
	return h.Sum(nil)[:macLen]
}

// encode returns the token for cursor within scope; 0 (no next page) is "".
func (p pageTokens) encode(cursor int64, scope string) string {
	if cursor <= 0 {
		return ""
	}
	buf := binary.BigEndian.AppendUint64(nil, uint64(cursor))
	return base64.RawURLEncoding.EncodeToString(append(buf, p.mac(buf, scope)...))
}

// decode returns the cursor of token within scope; "" is the first page (0).
func (p pageTokens) decode(token, scope string) (int64, error) {
	if token == "" {
		return 0, nil
	}
	// The length first: the decoder skips CR and LF, so without it a
	// token with line breaks in it would pass for the token without.
	if len(token) != base64.RawURLEncoding.EncodedLen(8+macLen) {
		return 0, errBadToken
	}
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(raw) != 8+macLen {
		return 0, errBadToken
	}
	if !hmac.Equal(raw[8:], p.mac(raw[:8], scope)) {
		return 0, errBadToken
	}
	c := int64(binary.BigEndian.Uint64(raw[:8]))
	if c <= 0 {
		return 0, errBadToken
	}
	return c, nil
}

package apiserver

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// ServeTLS answers HTTPS with the given certificate and shuts down when its
// context ends.
func TestServeTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600))

	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- ServeTLS(ctx, "127.0.0.1:0", TLSFiles{Cert: certFile, Key: keyFile},
			http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "secure") }),
			slog.New(slog.DiscardHandler), func(a net.Addr) { addr <- a })
	}()
	pool := x509.NewCertPool()
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool.AddCert(cert)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Get("https://" + (<-addr).String() + "/")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, "secure", string(body))
	cancel()
	require.NoError(t, <-done)

	err = ServeTLS(context.Background(), "127.0.0.1:0", TLSFiles{Cert: certFile}, http.NotFoundHandler(), slog.New(slog.DiscardHandler), nil)
	require.ErrorContains(t, err, "both a certificate and a key")
}

// A stream that would last as long as its run (a followed log) ends when
// the server shuts down, and the shutdown is clean.
func TestShutdownEndsStreams(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan net.Addr, 1)
	done := make(chan error, 1)
	streaming := make(chan struct{})
	go func() {
		done <- Serve(ctx, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "following")
			w.(http.Flusher).Flush()
			close(streaming)
			select {
			case <-r.Context().Done():
			case <-drainingOf(r.Context()):
			}
		}), slog.New(slog.DiscardHandler), func(a net.Addr) { addr <- a })
	}()
	resp, err := http.Get("http://" + (<-addr).String() + "/")
	require.NoError(t, err)
	defer resp.Body.Close()
	<-streaming
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
		require.Less(t, time.Since(start), 5*time.Second)
	case <-time.After(15 * time.Second):
		t.Fatal("the server did not shut down")
	}
}

// An object read that outlasts nats.go's default timeout (5 s from the
// start of the read, for a context without a deadline), as a slow client's
// download of a large output does, is not cut short.
func TestSlowObjectReadCompletes(t *testing.T) {
	t.Parallel()
	bus, _ := reconcilerBus(t) // an embedded NATS server and a namespace
	ctx := context.Background()
	obs := bus.Objects
	const size = 8 << 20
	_, err := obs.Put(ctx, jetstream.ObjectMeta{Name: "big"}, bytes.NewReader(make([]byte, size)))
	require.NoError(t, err)

	info, err := obs.GetInfo(ctx, "big")
	require.NoError(t, err)
	rs := &objectSeeker{ctx: ctx, bus: bus, info: info, size: size}
	defer rs.Close()
	buf := make([]byte, 1<<20)
	total := 0
	start := time.Now()
	for {
		n, err := io.ReadFull(rs, buf)
		total += n
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		require.NoError(t, err, "after %v and %d bytes", time.Since(start), total)
		time.Sleep(800 * time.Millisecond) // the client is slow
	}
	require.Equal(t, size, total)
	require.Greater(t, time.Since(start), 5*time.Second)
}

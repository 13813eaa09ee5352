// Package eventstest gives tests a NATS JetStream server of their own: an
// embedded one (a real nats-server, in process, on a free port of
// 127.0.0.1), with the streams and buckets of a namespace provisioned.
package eventstest

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wes-dev/wes/events"
)

// Bus starts an embedded NATS server for the test, stopped when it ends,
// provisions namespace ns on it with cfg and returns the bus and its
// connection.
func Bus(t testing.TB, ns string, cfg events.Config) (*events.Bus, *nats.Conn) {
	t.Helper()
	srv, err := events.StartEmbedded("127.0.0.1", 0, t.TempDir())
	if err != nil {
		t.Fatalf("start an embedded NATS server: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatalf("connect to the embedded NATS server: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	names, err := events.NewNames(ns)
	if err != nil {
		t.Fatal(err)
	}
	bus, err := events.Provision(context.Background(), js, names, cfg)
	if err != nil {
		t.Fatalf("provision namespace %s: %v", ns, err)
	}
	return bus, nc
}

package events

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// ReservedPort is the standard NATS port. An embedded server never takes it:
// it belongs to the machine's own NATS.
const ReservedPort = 4222

// Embedded is a NATS server with JetStream running inside this process.
type Embedded struct {
	srv *server.Server
}

// StartEmbedded starts a JetStream-enabled NATS server on host:port (port 0
// picks a free one) keeping its data in storeDir, and waits until it accepts
// connections.
func StartEmbedded(host string, port int, storeDir string) (*Embedded, error) {
	if port == ReservedPort {
		return nil, fmt.Errorf("the embedded NATS server may not listen on %d, the standard NATS port: choose another or 0 for any free port", ReservedPort)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: "wes-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   storeDir,
		NoSigs:     true,
		NoLog:      true,
		MaxPayload: 8 << 20,
	})
	if err != nil {
		return nil, fmt.Errorf("configure embedded NATS: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("embedded NATS did not become ready within 10s")
	}
	return &Embedded{srv: srv}, nil
}

// URL is the nats:// URL clients connect to.
func (e *Embedded) URL() string {
	addr := e.srv.Addr().(*net.TCPAddr)
	return "nats://" + net.JoinHostPort(addr.IP.String(), strconv.Itoa(addr.Port))
}

// Shutdown stops the server and waits until it has.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

package events

import (
	"fmt"

	"github.com/nats-io/nats.go"
)

// WatchStates calls fn with every run state change published from now on,
// through a plain (not JetStream) subscription: cheap, and it sees events
// as soon as they are published. Payloads it cannot decode and events
// without a state are skipped. fn runs on one goroutine, in arrival order.
func WatchStates(nc *nats.Conn, names Names, fn func(RunEvent)) (*nats.Subscription, error) {
	sub, err := nc.Subscribe(names.prefix+".events.*", func(m *nats.Msg) {
		ev, err := DecodeRunEvent(m.Data)
		if err != nil || ev.State == "" {
			return
		}
		fn(ev)
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to run events: %w", err)
	}
	// A burst of events must not make the server drop this subscriber.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	return sub, nil
}

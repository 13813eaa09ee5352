package events

import (
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/wes-dev/wes/models"
)

// StateChange is what WatchStates reports of a run event with a state.
type StateChange struct {
	RunID string       `json:"run_id"`
	State models.State `json:"state"`
}

// WatchStates calls fn with every run state change published from now on,
// through a plain (not JetStream) subscription: cheap, and it sees events
// as soon as they are published. It decodes only the run id and state (a
// watcher of every event must not spend its CPU on the rest). Payloads it
// cannot decode and events without a state are skipped. fn runs on one
// goroutine, in arrival order.
func WatchStates(nc *nats.Conn, names Names, fn func(StateChange)) (*nats.Subscription, error) {
	sub, err := nc.Subscribe(names.prefix+".events.*", func(m *nats.Msg) {
		var c StateChange
		if err := json.Unmarshal(m.Data, &c); err != nil || c.RunID == "" || c.State == "" {
			return
		}
		fn(c)
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

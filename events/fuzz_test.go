package events

import (
	"testing"

	"github.com/wes-dev/wes/models"
)

// FuzzDecodeRunEvent: the projector's decoder never panics, and whatever it
// accepts has a run id, this version, and a known state or none.
func FuzzDecodeRunEvent(f *testing.F) {
	f.Add([]byte(`{"v":1,"run_id":"r","attempt":1,"state":"RUNNING","time":"2026-01-01T00:00:00Z","source":"x","cmd":["a"]}`))
	f.Add([]byte(`{"v":2,"run_id":"r"}`))
	f.Add([]byte(`{"v":1,"run_id":"r","state":"DONE"}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := DecodeRunEvent(data)
		if err != nil {
			return
		}
		if ev.RunID == "" || ev.V != Version {
			t.Fatalf("accepted %q as %+v", data, ev)
		}
		if ev.State != "" {
			if _, err := models.ParseState(string(ev.State)); err != nil {
				t.Fatalf("accepted unknown state %q", ev.State)
			}
		}
	})
}

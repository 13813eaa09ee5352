package bench

import (
	"testing"
)

func TestTrackerRecordsFirstSightingsAndTheOrderRunsEnd(t *testing.T) {
	tr := &tracker{runs: map[string]*runTimes{}, changed: make(chan struct{}, 1)}
	for _, ev := range []struct{ run, state string }{
		{"a", "QUEUED"}, {"a", "INITIALIZING"}, {"b", "INITIALIZING"},
		{"b", "SYSTEM_ERROR"}, {"a", "INITIALIZING"}, {"a", "RUNNING"},
		{"b", "COMPLETE"}, // a second final state of b is not a second end
		{"a", "COMPLETE"}, {"c", "CANCELED"},
	} {
		tr.observe(ev.run, ev.state)
	}
	select {
	case <-tr.changed:
	default:
		t.Fatal("no signal after runs ended")
	}
	if got := tr.finishedSince(0); len(got) != 3 || got[0] != "b" || got[1] != "a" || got[2] != "c" {
		t.Fatalf("finished = %v, want [b a c]", got)
	}
	if got := tr.finishedSince(2); len(got) != 1 || got[0] != "c" {
		t.Fatalf("finishedSince(2) = %v, want [c]", got)
	}
	if st, _, ok := tr.final("b"); !ok || st != "SYSTEM_ERROR" {
		t.Fatalf("final(b) = %q %v, want the first final state, SYSTEM_ERROR", st, ok)
	}
	if _, ok := tr.initialized("c"); ok {
		t.Fatal("c was never INITIALIZING")
	}
	first, _ := tr.initialized("a")
	if _, at, _ := tr.final("a"); at.Before(first) {
		t.Fatal("a ended before it was initialized")
	}
	if _, _, ok := tr.final("unknown"); ok {
		t.Fatal("a run never seen has no final state")
	}
}

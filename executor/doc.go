// Package executor pulls submitted runs from JetStream and drives them
// through a provider: a fixed number of slots, one pull consumer per engine
// this host can run, InProgress heartbeats while a run is active, a watch on
// the run's cancel flag, and one function that maps each outcome to
// Ack / NakWithDelay / Term. It reports every state change as an event.
//
// Executors never touch the database: everything a run needs arrives in its
// run.submitted message and the object store.
package executor

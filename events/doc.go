// Package events is the wire contract between the API, the executors and the
// projector: subject and stream names, the stream, consumer, KV and
// object-store specifications (created idempotently), the versioned JSON
// payloads, a publisher that gives every message a Nats-Msg-Id, and a helper
// that runs an embedded NATS server.
//
// It knows NATS and the run types of models; it must not know HTTP, SQL or
// any workflow engine.
package events

// Package integration holds black-box tests of the whole service: the real
// `wes` binary as processes (api, executors, dev), real PostgreSQL and real
// NATS JetStream, driven over HTTP as a client would.
//
// Services come from WES_TEST_DATABASE_URL and WES_TEST_NATS_URL when set
// (CI sets both), from testcontainers when a Docker engine answers, and
// otherwise from SQLite and an embedded NATS server, which the tests log
// loudly.
package integration

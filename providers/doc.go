// Package providers declares the contract between the executor and the
// backends that run workflows: each sub-package (local, mock, …) implements
// Provider. The contract is declared here, by the producer, like
// database/sql/driver: many backends plug into one consumer.
//
// Providers know the run types of models and the standard library; they must
// not know NATS, HTTP or the database, and sibling providers never import
// each other.
package providers

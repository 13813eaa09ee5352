package models

// Classify exposes classify to the package's external tests.
var Classify = classify

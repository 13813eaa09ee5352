// Package apiserver serves the GA4GH WES 1.1.0 API: routes (gorilla/mux)
// under /ga4gh/wes/v1 and the seed's /api/ga4gh/wes/v1, request decoding
// (multipart per the specification and the seed's JSON body), the one
// function that maps errors to an ErrorResponse, the engine catalog that
// service-info reports, and the outbox relay that publishes what submit and
// cancel committed.
//
// It knows models, events and HTTP; it never runs a workflow.
package apiserver

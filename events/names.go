package events

import (
	"fmt"
	"regexp"
	"strings"
)

// Names derives every stream, subject, bucket and consumer name from one
// namespace, so that several installations (or test runs) can share a NATS
// server without seeing each other.
type Names struct {
	ns     string // upper case, for streams and buckets
	prefix string // lower case, for subjects
}

var validNamespace = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,31}$`)

// NewNames returns the names of namespace ns ("WES" by default).
func NewNames(ns string) (Names, error) {
	if !validNamespace.MatchString(ns) {
		return Names{}, fmt.Errorf("invalid NATS namespace %q: want a letter then up to 31 letters, digits or _", ns)
	}
	return Names{ns: strings.ToUpper(ns), prefix: strings.ToLower(ns)}, nil
}

// RunsStream is the work-queue stream of submitted runs.
func (n Names) RunsStream() string { return n.ns + "_RUNS" }

// EventsStream is the history of run events.
func (n Names) EventsStream() string { return n.ns + "_EVENTS" }

// SubmitSubject is where run runID is queued for engine: a subject per run,
// so that whether the queue still holds a run is one lookup
// (GetLastMsgForSubject).
func (n Names) SubmitSubject(engine, runID string) string {
	return n.prefix + ".runs.submitted." + engine + "." + runID
}

// SubmitFilter is what the executors of engine take runs from: every run
// queued for it.
func (n Names) SubmitFilter(engine string) string {
	return n.prefix + ".runs.submitted." + engine + ".>"
}

// EventSubject is where the events of one run are published.
func (n Names) EventSubject(runID string) string { return n.prefix + ".events." + runID }

// DeadLetterStream keeps messages no consumer could use, with the reason.
func (n Names) DeadLetterStream() string { return n.ns + "_DEADLETTER" }

// DeadLetterSubject is where poison messages from stream go.
func (n Names) DeadLetterSubject(stream string) string { return n.prefix + ".deadletter." + stream }

// CancelBucket is the KV bucket of cancel flags, keyed by run id.
func (n Names) CancelBucket() string { return n.ns + "_CANCEL" }

// ExecutorsBucket is the KV bucket where live executors announce themselves.
func (n Names) ExecutorsBucket() string { return n.ns + "_EXECUTORS" }

// LeasesBucket holds leases of jobs that one process at a time must run.
func (n Names) LeasesBucket() string { return n.ns + "_LEASES" }

// ObjectsBucket is the object store for attachments, logs and outputs.
func (n Names) ObjectsBucket() string { return n.ns + "_OBJECTS" }

// ExecutorConsumer is the durable consumer shared by every executor that can
// run engine.
func (n Names) ExecutorConsumer(engine string) string { return "executor_" + engine }

// ProjectorConsumer is the durable consumer projectors used before they
// kept their position in the database; they delete it.
func (n Names) ProjectorConsumer() string { return "projector" }

func (n Names) runsSubjects() string   { return n.prefix + ".runs.submitted.>" }
func (n Names) eventsSubjects() string { return n.prefix + ".events.>" }

// validEngine matches engine names, which become subject tokens.
var validEngine = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)

// ValidEngineName reports whether name can name an engine (and a subject).
func ValidEngineName(name string) bool { return validEngine.MatchString(name) }

// Object keys in the objects bucket.

// AttachmentKey is where attachment name of a run is kept.
func AttachmentKey(runID, name string) string { return "runs/" + runID + "/attachments/" + name }

// LogKey is where a run's stream ("stdout" or "stderr") is kept.
func LogKey(runID, stream string) string { return "runs/" + runID + "/logs/" + stream }

// OutputKey is where output file rel (slash-separated, below the run's
// output directory) is kept.
func OutputKey(runID, rel string) string { return "runs/" + runID + "/outputs/" + rel }

// OutputPrefix is the object-key prefix of a run's output files.
func OutputPrefix(runID string) string { return "runs/" + runID + "/outputs/" }

// OutputLocationScheme marks, in a stored outputs object, the location of a
// file kept in the object store: "wes-output:REL". The API turns it into an
// absolute URL of its own when it answers.
const OutputLocationScheme = "wes-output:"

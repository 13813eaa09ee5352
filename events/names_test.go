package events

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNewNames(t *testing.T) {
	t.Parallel()
	tests := []struct {
		ns     string
		wantOK bool
	}{
		{"WES", true},
		{"wes", true},
		{"a", true},
		{"Test_1", true},
		{"x" + strings.Repeat("9", 31), true}, // 32 characters, the most allowed
		{"", false},
		{"1wes", false},
		{"_wes", false},
		{"we-s", false},
		{"we.s", false},
		{"we s", false},
		{"wes>", false},
		{"wes*", false},
		{"wés", false},
		{"x" + strings.Repeat("9", 32), false}, // 33 characters
	}
	for _, tt := range tests {
		t.Run(tt.ns, func(t *testing.T) {
			t.Parallel()
			_, err := NewNames(tt.ns)
			if tt.wantOK {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
				require.Contains(t, err.Error(), "invalid NATS namespace")
			}
		})
	}
}

func TestNamesDerivedFromNamespace(t *testing.T) {
	t.Parallel()
	tests := []struct {
		ns                                                  string
		runs, evs, submit, filter, event, cancel, execs, ob string
		runsSubjects, eventsSubjects                        string
	}{
		{
			ns: "WES", runs: "WES_RUNS", evs: "WES_EVENTS",
			submit: "wes.runs.submitted.cwltool.run1", filter: "wes.runs.submitted.cwltool.>", event: "wes.events.run1",
			cancel: "WES_CANCEL", execs: "WES_EXECUTORS", ob: "WES_OBJECTS",
			runsSubjects: "wes.runs.submitted.>", eventsSubjects: "wes.events.>",
		},
		{
			ns: "Test_1", runs: "TEST_1_RUNS", evs: "TEST_1_EVENTS",
			submit: "test_1.runs.submitted.cwltool.run1", filter: "test_1.runs.submitted.cwltool.>", event: "test_1.events.run1",
			cancel: "TEST_1_CANCEL", execs: "TEST_1_EXECUTORS", ob: "TEST_1_OBJECTS",
			runsSubjects: "test_1.runs.submitted.>", eventsSubjects: "test_1.events.>",
		},
	}
	for _, tt := range tests {
		t.Run(tt.ns, func(t *testing.T) {
			t.Parallel()
			n, err := NewNames(tt.ns)
			require.NoError(t, err)
			require.Equal(t, tt.runs, n.RunsStream())
			require.Equal(t, tt.evs, n.EventsStream())
			require.Equal(t, tt.submit, n.SubmitSubject("cwltool", "run1"))
			require.Equal(t, tt.filter, n.SubmitFilter("cwltool"))
			require.Equal(t, tt.event, n.EventSubject("run1"))
			require.Equal(t, tt.cancel, n.CancelBucket())
			require.Equal(t, tt.execs, n.ExecutorsBucket())
			require.Equal(t, tt.ob, n.ObjectsBucket())
			require.Equal(t, tt.runsSubjects, n.runsSubjects())
			require.Equal(t, tt.eventsSubjects, n.eventsSubjects())
			require.Equal(t, "executor_cwltool", n.ExecutorConsumer("cwltool"))
			require.Equal(t, "projector", n.ProjectorConsumer())
		})
	}
}

// Two namespaces on one server must not see each other's streams, buckets
// or subjects.
func TestNamespacesDoNotOverlap(t *testing.T) {
	t.Parallel()
	a, err := NewNames("alpha")
	require.NoError(t, err)
	b, err := NewNames("beta")
	require.NoError(t, err)
	namesOf := func(n Names) []string {
		return []string{n.RunsStream(), n.EventsStream(), n.CancelBucket(), n.ExecutorsBucket(),
			n.ObjectsBucket(), n.SubmitSubject("mock", "r"), n.EventSubject("r")}
	}
	for _, x := range namesOf(a) {
		require.NotContains(t, namesOf(b), x)
	}
	require.False(t, strings.HasPrefix(b.SubmitSubject("mock", "r"), strings.TrimSuffix(a.runsSubjects(), ">")))
	require.False(t, strings.HasPrefix(b.EventSubject("r"), strings.TrimSuffix(a.eventsSubjects(), ">")))
}

func TestValidEngineName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		want bool
	}{
		{"mock", true},
		{"cwltool", true},
		{"toil-cwl", true},
		{"a", true},
		{"e2", true},
		{"a" + strings.Repeat("b", 31), true},
		{"", false},
		{"Mock", false},
		{"2mock", false},
		{"-mock", false},
		{"toil_cwl", false},
		{"toil.cwl", false},
		{"toil cwl", false},
		{"mock>", false},
		{"mock*", false},
		{"a" + strings.Repeat("b", 32), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, ValidEngineName(tt.name))
		})
	}
}

func TestObjectKeys(t *testing.T) {
	t.Parallel()
	require.Equal(t, "runs/r1/attachments/dir/a.cwl", AttachmentKey("r1", "dir/a.cwl"))
	require.Equal(t, "runs/r1/logs/stderr", LogKey("r1", "stderr"))
	require.Equal(t, "runs/r1/outputs/out/x.txt", OutputKey("r1", "out/x.txt"))
	require.True(t, strings.HasPrefix(OutputKey("r1", "x"), OutputPrefix("r1")))
	require.False(t, strings.HasPrefix(OutputKey("r10", "x"), OutputPrefix("r1")))
}

package apiserver

import (
	"cmp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wes-dev/wes/events"
)

var catalogNow = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

const catalogTTL = 30 * time.Second

var (
	cwltool = events.EngineInfo{Name: "cwltool", Version: "3.1.20240508",
		WorkflowTypes: map[string][]string{"CWL": {"v1.0", "v1.1", "v1.2"}}}
	cwltoolOld = events.EngineInfo{Name: "cwltool", Version: "3.1.20230101",
		WorkflowTypes: map[string][]string{"CWL": {"v1.0", "v1.1"}}}
	toil = events.EngineInfo{Name: "toil", Version: "6.1.0",
		WorkflowTypes: map[string][]string{"CWL": {"v1.0", "v1.1", "v1.2"}, "WDL": {"1.0"}}}
	// arvados-cwl-runner runs CWL, is named in no preference and sorts
	// before cwltool and toil.
	arvados = events.EngineInfo{Name: "arvados-cwl-runner", Version: "2.7.0",
		WorkflowTypes: map[string][]string{"CWL": {"v1.0", "v1.1", "v1.2"}}}
	snakemake = events.EngineInfo{Name: "snakemake", Version: "8.20.0",
		WorkflowTypes: map[string][]string{"SMK": {"8"}}}
)

// catalogWith returns a catalog at catalogNow holding one executor per
// slice of engines, each seen at catalogNow.
func catalogWith(engines ...[]events.EngineInfo) *Catalog {
	c := NewCatalog(catalogTTL)
	c.now = func() time.Time { return catalogNow }
	for i, e := range engines {
		c.put(events.ExecutorInfo{ID: "exec-" + string(rune('a'+i)), Engines: e}, catalogNow)
	}
	return c
}

func TestCatalogResolve(t *testing.T) {
	t.Parallel()
	both := [][]events.EngineInfo{{toil}, {cwltool, snakemake}}
	tests := []struct {
		name                                     string
		catalog                                  *Catalog
		wfType, wfVersion, engine, engineVersion string
		want                                     events.EngineInfo
		wantMsg                                  []string // error message contains each
		wantStatus                               int      // 400 if 0
	}{
		{name: "no engines at all", catalog: catalogWith(),
			wfType: "CWL", wfVersion: "v1.0",
			wantMsg: []string{"no workflow engine is available", "retry"}, wantStatus: 503},
		{name: "executor without engines", catalog: catalogWith([]events.EngineInfo{}),
			wfType: "CWL", wfVersion: "v1.0",
			wantMsg: []string{"no workflow engine is available"}, wantStatus: 503},
		{name: "unknown type lists the supported types", catalog: catalogWith(both...),
			wfType: "NFL", wfVersion: "23.10",
			wantMsg: []string{`workflow_type "NFL" is not supported`, "supported: CWL, SMK, WDL"}},
		{name: "unsupported version lists the versions", catalog: catalogWith(both...),
			wfType: "CWL", wfVersion: "v2.0",
			wantMsg: []string{`workflow_type_version "v2.0" of CWL is not supported`, "supported: v1.0, v1.1, v1.2"}},
		{name: "unsupported version lists only that type's versions", catalog: catalogWith(both...),
			wfType: "WDL", wfVersion: "draft-2",
			wantMsg: []string{"supported: 1.0"}},
		{name: `"1.0" matches "v1.0"`, catalog: catalogWith([]events.EngineInfo{toil}),
			wfType: "CWL", wfVersion: "1.0", want: toil},
		{name: `"v1.0" matches "1.0"`, catalog: catalogWith([]events.EngineInfo{toil}),
			wfType: "WDL", wfVersion: "v1.0", want: toil},
		{name: "cwltool preferred over toil for CWL", catalog: catalogWith(both...),
			wfType: "CWL", wfVersion: "v1.2", want: cwltool},
		{name: "cwltool preferred over an engine named in no preference", catalog: catalogWith([]events.EngineInfo{arvados, toil}, []events.EngineInfo{cwltool}),
			wfType: "CWL", wfVersion: "v1.0", want: cwltool},
		{name: "toil preferred over an engine named in no preference", catalog: catalogWith([]events.EngineInfo{arvados, toil}),
			wfType: "CWL", wfVersion: "v1.0", want: toil},
		{name: "an engine named in no preference when it alone runs the type", catalog: catalogWith([]events.EngineInfo{arvados, snakemake}),
			wfType: "CWL", wfVersion: "v1.0", want: arvados},
		{name: "explicit engine named in no preference", catalog: catalogWith([]events.EngineInfo{arvados, toil, cwltool}),
			wfType: "CWL", wfVersion: "v1.0", engine: "arvados-cwl-runner", want: arvados},
		{name: "toil chosen when it alone runs the version", catalog: catalogWith([]events.EngineInfo{toil, cwltoolOld}),
			wfType: "CWL", wfVersion: "v1.2", want: toil},
		{name: "explicit engine", catalog: catalogWith(both...),
			wfType: "CWL", wfVersion: "v1.2", engine: "toil", want: toil},
		{name: "explicit engine, case-insensitive", catalog: catalogWith(both...),
			wfType: "CWL", wfVersion: "v1.2", engine: "TOIL", want: toil},
		{name: "explicit engine that does not run the type", catalog: catalogWith(both...),
			wfType: "CWL", wfVersion: "v1.2", engine: "snakemake",
			wantMsg: []string{`workflow_engine "snakemake" does not run CWL v1.2`, "engines that do: cwltool, toil"}},
		{name: "explicit engine that does not run the version", catalog: catalogWith([]events.EngineInfo{cwltoolOld, toil}),
			wfType: "CWL", wfVersion: "v1.2", engine: "cwltool",
			wantMsg: []string{`workflow_engine "cwltool" does not run CWL v1.2`, "engines that do: toil"}},
		{name: "unknown explicit engine", catalog: catalogWith(both...),
			wfType: "CWL", wfVersion: "v1.0", engine: "cromwell",
			wantMsg: []string{`workflow_engine "cromwell"`}},
		{name: "engine version match", catalog: catalogWith([]events.EngineInfo{cwltool, cwltoolOld}),
			wfType: "CWL", wfVersion: "v1.0", engine: "cwltool", engineVersion: "3.1.20230101", want: cwltoolOld},
		{name: "engine version match ignores a leading v", catalog: catalogWith([]events.EngineInfo{cwltool, cwltoolOld}),
			wfType: "CWL", wfVersion: "v1.0", engine: "cwltool", engineVersion: "v3.1.20230101", want: cwltoolOld},
		{name: "engine version mismatch lists what is available", catalog: catalogWith([]events.EngineInfo{cwltool, cwltoolOld}),
			wfType: "CWL", wfVersion: "v1.0", engine: "cwltool", engineVersion: "2.0",
			wantMsg: []string{`workflow_engine_version "2.0" is not available`, "cwltool 3.1.20240508", "cwltool 3.1.20230101"}},
		{name: "newest version of the engine when none is named", catalog: catalogWith([]events.EngineInfo{cwltoolOld}, []events.EngineInfo{cwltool}),
			wfType: "CWL", wfVersion: "v1.0", want: cwltool},
		{name: "newest version compares numerically", catalog: catalogWith(
			[]events.EngineInfo{{Name: "toil", Version: "9.2.0", WorkflowTypes: map[string][]string{"WDL": {"1.0"}}}},
			[]events.EngineInfo{{Name: "toil", Version: "10.0.0", WorkflowTypes: map[string][]string{"WDL": {"1.0"}}}}),
			wfType: "WDL", wfVersion: "1.0",
			want: events.EngineInfo{Name: "toil", Version: "10.0.0", WorkflowTypes: map[string][]string{"WDL": {"1.0"}}}},
		{name: "engine of a type without preference", catalog: catalogWith(both...),
			wfType: "WDL", wfVersion: "1.0", want: toil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := tc.catalog.resolve(tc.wfType, tc.wfVersion, tc.engine, tc.engineVersion)
			if tc.wantMsg != nil {
				require.Error(t, err)
				status, msg := statusOf(err)
				require.Equal(t, cmp.Or(tc.wantStatus, 400), status)
				for _, m := range tc.wantMsg {
					require.Contains(t, msg, m)
				}
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestCatalogIgnoresExpiredExecutors(t *testing.T) {
	t.Parallel()
	c := catalogWith()
	c.put(events.ExecutorInfo{ID: "old", Engines: []events.EngineInfo{cwltool}}, catalogNow.Add(-catalogTTL-time.Second))
	c.put(events.ExecutorInfo{ID: "live", Engines: []events.EngineInfo{toil}}, catalogNow.Add(-catalogTTL+time.Second))

	require.Equal(t, []events.EngineInfo{toil}, c.engines())
	// cwltool would be preferred, but its executor is gone.
	got, err := c.resolve("CWL", "v1.0", "", "")
	require.NoError(t, err)
	require.Equal(t, toil, got)
	_, err = c.resolve("CWL", "v1.0", "cwltool", "")
	require.Error(t, err)

	// Only expired executors: nothing is available.
	c.remove("live")
	_, err = c.resolve("CWL", "v1.0", "", "")
	_, msg := statusOf(err)
	require.Contains(t, msg, "no workflow engine is available")

	// The executor announces itself again: it is back.
	c.put(events.ExecutorInfo{ID: "old", Engines: []events.EngineInfo{cwltool}}, catalogNow)
	got, err = c.resolve("CWL", "v1.0", "", "")
	require.NoError(t, err)
	require.Equal(t, cwltool, got)
}

func TestCatalogEnginesMerged(t *testing.T) {
	t.Parallel()
	c := catalogWith(
		[]events.EngineInfo{cwltool, toil},
		[]events.EngineInfo{snakemake, cwltool},
		[]events.EngineInfo{cwltoolOld, cwltool},
	)
	require.Equal(t, []events.EngineInfo{cwltoolOld, cwltool, snakemake, toil}, c.engines())
}

func TestCatalogPutReplacesAnExecutor(t *testing.T) {
	t.Parallel()
	c := catalogWith()
	c.put(events.ExecutorInfo{ID: "x", Engines: []events.EngineInfo{cwltoolOld}}, catalogNow)
	c.put(events.ExecutorInfo{ID: "x", Engines: []events.EngineInfo{cwltool}}, catalogNow)
	require.Equal(t, []events.EngineInfo{cwltool}, c.engines())
}

// A draining executor takes no new runs, so its engines are not offered,
// but it is live: the reconciler leaves its runs alone.
func TestCatalogDrainingExecutor(t *testing.T) {
	t.Parallel()
	c := catalogWith([]events.EngineInfo{toil})
	c.put(events.ExecutorInfo{ID: "leaving", Engines: []events.EngineInfo{cwltool}, Draining: true}, catalogNow)
	require.Equal(t, []events.EngineInfo{toil}, c.engines())
	require.True(t, c.live("leaving"))
}

// An engine whose name cannot be a token of a NATS subject is not offered:
// no queue could carry its runs.
func TestCatalogSkipsUnusableEngineNames(t *testing.T) {
	t.Parallel()
	bad := events.EngineInfo{Name: "cwl.tool", Version: "1", WorkflowTypes: map[string][]string{"CWL": {"v1.2"}}}
	c := catalogWith([]events.EngineInfo{bad, toil})
	require.Equal(t, []events.EngineInfo{toil}, c.engines())
}

// During a rolling upgrade executors of one engine announce its parameters
// differently: a key is offered only if every one of them takes it, with
// every definition of it, whatever order the executors are met in.
func TestCatalogMergesParameters(t *testing.T) {
	t.Parallel()
	enum := events.EngineParameter{Name: "outcome", Type: "enum", Values: []string{"COMPLETE", "SYSTEM_ERROR"}}
	str := events.EngineParameter{Name: "outcome", Type: "string"}
	flag := events.EngineParameter{Name: "--stats", Type: "flag"}
	dur := events.EngineParameter{Name: "duration", Type: "duration", Default: "1s"}
	mock := func(ps ...events.EngineParameter) []events.EngineInfo {
		return []events.EngineInfo{{Name: "mock", Version: "1.0.0", WorkflowTypes: map[string][]string{"CWL": {"v1.2"}}, Parameters: ps}}
	}
	old, upgraded := mock(dur, str, flag), mock(dur, enum)
	want := []events.EngineParameter{dur, enum, str}
	for range 20 { // map order
		require.Equal(t, want, catalogWith(old, upgraded).engines()[0].Parameters)
		require.Equal(t, want, catalogWith(upgraded, old, old).engines()[0].Parameters)
	}
	require.Equal(t, []events.EngineParameter{flag, dur, str}, catalogWith(old, old).engines()[0].Parameters)
}

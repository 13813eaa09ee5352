package apiserver

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wes-dev/wes/events"
)

// service-info's parameters say which values they take and which engines
// take them (the spec's DefaultWorkflowEngineParameter has no engine); one
// an engine's executors announce twice is listed once.
func TestEngineParamsSayWhichEngine(t *testing.T) {
	t.Parallel()
	var ps engineParams
	onError := events.EngineParameter{Name: "--on-error", Type: "enum", Default: "stop", Values: []string{"stop", "continue"}}
	parallel := events.EngineParameter{Name: "--parallel", Type: "flag"}
	ps.add("cwltool", onError)
	ps.add("cwltool", parallel)
	ps.add("toil", parallel)
	ps.add("cwltool", onError) // another executor of cwltool
	ps.add("snakemake", events.EngineParameter{Name: "--cores", Type: "int", Default: "1"})
	require.Equal(t, []defaultWorkflowEngineParameter{
		{Name: "--on-error", Type: "enum stop|continue (cwltool)", DefaultValue: "stop"},
		{Name: "--parallel", Type: "flag (cwltool, toil)"},
		{Name: "--cores", Type: "int (snakemake)", DefaultValue: "1"},
	}, ps.list())
	js, err := json.Marshal(ps.list()[1])
	require.NoError(t, err)
	require.JSONEq(t, `{"name":"--parallel","type":"flag (cwltool, toil)"}`, string(js), "no default is no default_value, not \"\"")
	var none engineParams
	require.NotNil(t, none.list(), "an empty list is [], as the spec requires the field")
}

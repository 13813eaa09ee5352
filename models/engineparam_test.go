package models

import (
	"errors"
	"testing"
)

func TestCheckEngineParameter(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		kind   string
		values []string
		v      string
		ok     bool
	}{
		{ParamFlag, nil, "", true},
		{ParamFlag, nil, "true", true},
		{ParamFlag, nil, "yes", false},
		{ParamInt, nil, "3", true},
		{ParamInt, nil, "0", true},
		{ParamInt, nil, "-1", false},
		{ParamInt, nil, "1048577", false},
		{ParamInt, nil, "", false},
		{ParamInt, nil, "3x", false},
		{ParamEnum, []string{"stop", "continue"}, "stop", true},
		{ParamEnum, []string{"stop", "continue"}, "abort", false},
		{ParamEnum, []string{"stop", "continue"}, "", false},
		{ParamEnum, nil, "anything", true}, // an older executor announced no values
		{ParamDuration, nil, "250ms", true},
		{ParamDuration, nil, "0s", true},
		{ParamDuration, nil, "-1s", false},
		{ParamDuration, nil, "banana", false},
		{ParamString, nil, "anything at all", true},
		{"future-kind", nil, "x", true},
	} {
		err := CheckEngineParameter("p", tc.kind, tc.values, tc.v)
		if (err == nil) != tc.ok {
			t.Errorf("%s %v %q: err = %v, want ok %v", tc.kind, tc.values, tc.v, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("%s %q: %v does not wrap ErrInvalid", tc.kind, tc.v, err)
		}
	}
}

package models

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The kinds of a workflow_engine_parameters key: what its value must be.
// Executors announce each parameter's kind (and an enum's values); the API
// checks a submission's values against them, and the executor again before
// it renders them for its engine.
const (
	ParamFlag     = "flag"     // "" or "true" (a JSON null is read as "")
	ParamInt      = "int"      // a non-negative integer, at most 2^20
	ParamEnum     = "enum"     // one of the parameter's values
	ParamDuration = "duration" // a non-negative duration such as "2s"
	ParamString   = "string"   // any text
)

// CheckEngineParameter returns nil when v is a value of the parameter name
// of that kind, and an error wrapping ErrInvalid that says what is wanted
// otherwise. A kind it does not know, or an enum that lists no values (an
// older executor's announcement), accepts anything: the executor decides.
func CheckEngineParameter(name, kind string, values []string, v string) error {
	switch kind {
	case ParamFlag:
		if v != "" && v != "true" {
			return fmt.Errorf("%w: engine parameter %s is a flag: give null, \"\" or \"true\", not %q", ErrInvalid, name, v)
		}
	case ParamInt:
		if n, err := strconv.Atoi(v); err != nil || n < 0 || n > 1<<20 {
			return fmt.Errorf("%w: engine parameter %s must be a non-negative integer, not %q", ErrInvalid, name, v)
		}
	case ParamEnum:
		if len(values) > 0 && !slices.Contains(values, v) {
			return fmt.Errorf("%w: engine parameter %s must be one of %s, not %q", ErrInvalid, name, strings.Join(values, ", "), v)
		}
	case ParamDuration:
		if d, err := time.ParseDuration(v); err != nil || d < 0 {
			return fmt.Errorf("%w: engine parameter %s must be a non-negative duration such as \"2s\", not %q", ErrInvalid, name, v)
		}
	}
	return nil
}

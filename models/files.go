package models

// VisitObjects calls fn for every JSON object in v (a value decoded by
// encoding/json into any), depth first. Workflow params and outputs carry
// CWL-style File and Directory objects anywhere inside them; the API, the
// executor, the providers and the client all walk them this way.
func VisitObjects(v any, fn func(map[string]any)) {
	switch t := v.(type) {
	case map[string]any:
		fn(t)
		for _, c := range t {
			VisitObjects(c, fn)
		}
	case []any:
		for _, c := range t {
			VisitObjects(c, fn)
		}
	}
}

// MapStrings replaces every string in v (a value decoded by encoding/json
// into any; object keys excepted) by what fn returns for it, in place where
// v holds it in an object or array, and returns v. WDL and Nextflow name
// files by plain strings, which the client, the providers and the outputs
// they report rename this way.
func MapStrings(v any, fn func(string) any) any {
	switch t := v.(type) {
	case string:
		return fn(t)
	case map[string]any:
		for k, c := range t {
			t[k] = MapStrings(c, fn)
		}
	case []any:
		for i, c := range t {
			t[i] = MapStrings(c, fn)
		}
	}
	return v
}

// IsFileObject reports whether obj is a CWL File or Directory object.
func IsFileObject(obj map[string]any) bool {
	class, _ := obj["class"].(string)
	return class == "File" || class == "Directory"
}

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

// IsFileObject reports whether obj is a CWL File or Directory object.
func IsFileObject(obj map[string]any) bool {
	class, _ := obj["class"].(string)
	return class == "File" || class == "Directory"
}

package local

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCheckCWLDocuments(t *testing.T) {
	t.Parallel()
	tool := func(inputs string) string {
		return "cwlVersion: v1.2\nclass: CommandLineTool\nbaseCommand: cat\ninputs:\n" + inputs + "outputs: []\n"
	}
	for _, tc := range []struct {
		name     string
		workflow string // default: the only file
		files    map[string]string
		errHas   string
		missing  bool // refused for a missing document, not for local paths
	}{
		{name: "relative defaults, steps and imports", workflow: "wf.cwl", files: map[string]string{
			"wf.cwl":        "cwlVersion: v1.2\nclass: Workflow\nsteps:\n  a:\n    run: tools/cat.cwl\n  b:\n    run: {$import: tools/cat.cwl}\n",
			"tools/cat.cwl": tool("  f:\n    type: File\n    default: {class: File, location: ../data/x.txt}\n"),
			"data/x.txt":    "x",
			"job.json":      `{"f": {"class": "File", "path": "data/x.txt"}, "g": {"class": "File", "location": "https://example.org/g.txt"}, "h": {"class": "File", "location": "_:b0", "contents": "x"}}`,
		}},
		{name: "a default naming a host file", files: map[string]string{
			"tool.cwl": tool("  f:\n    type: File\n    default: {class: File, location: \"file:///etc/hostname\"}\n"),
		}, errHas: `location "file:///etc/hostname" reads a file of the executor's host`},
		{name: "a default's absolute path", files: map[string]string{
			"tool.cwl": tool("  f:\n    type: File\n    default:\n      class: File\n      path: /etc/hostname\n"),
		}, errHas: `path "/etc/hostname"`},
		{name: "a step run from the host", files: map[string]string{
			"wf.cwl": "cwlVersion: v1.2\nclass: Workflow\nsteps:\n  a:\n    run: /opt/tools/cat.cwl\n",
		}, errHas: `run "/opt/tools/cat.cwl"`},
		{name: "an import out of the attachments", files: map[string]string{
			"sub/wf.cwl": "cwlVersion: v1.2\nclass: Workflow\nrequirements:\n  - $import: ../../../../etc/req.yml\n",
		}, errHas: `$import "../../../../etc/req.yml"`},
		{name: "a workflow in JSON", files: map[string]string{
			"wf.json": `{"cwlVersion": "v1.2", "class": "Workflow", "inputs": {"ref": {"type": "Directory", "default": {"class": "Directory", "location": "file:///data/ref"}}}}`,
		}, errHas: `location "file:///data/ref"`},
		{name: "a step's tool, whatever its name", workflow: "wf.cwl", files: map[string]string{
			"wf.cwl":   "cwlVersion: v1.2\nclass: Workflow\nsteps:\n  a:\n    run: tool.txt#main\n",
			"tool.txt": tool("  f:\n    type: File\n    default: {class: File, location: \"file:///etc/hostname\"}\n"),
		}, errHas: `attachment tool.txt: location "file:///etc/hostname"`},
		{name: "an imported document's import", workflow: "wf.cwl", files: map[string]string{
			"wf.cwl":     "cwlVersion: v1.2\nclass: Workflow\nrequirements:\n  - $import: reqs/a.yml\n",
			"reqs/a.yml": "$mixin: b.yml\n",
			"reqs/b.yml": "class: SchemaDefRequirement\ntypes:\n  - $import: /etc/types.yml\n",
			"unused.cwl": tool("  f:\n    type: File\n    default: {class: File, path: /etc/hostname}\n"),
		}, errHas: `attachment reqs/b.yml: $import "/etc/types.yml"`},
		{name: "an attachment the workflow does not load is not read", workflow: "wf.cwl", files: map[string]string{
			"wf.cwl":     tool(""),
			"unused.cwl": tool("  f:\n    type: File\n    default: {class: File, path: /etc/hostname}\n"),
		}},
		{name: "a step's tool that is not attached", workflow: "wf.cwl", files: map[string]string{
			"wf.cwl": "cwlVersion: v1.2\nclass: Workflow\nsteps:\n  a:\n    run: tools/missing.cwl\n",
		}, errHas: "the workflow loads tools/missing.cwl, which is not attached", missing: true},
		{name: "a document that does not parse", files: map[string]string{
			"broken.cwl": "class: [unclosed\n",
		}, errHas: "is not a CWL document"},
		{name: "a document too large to check", files: map[string]string{
			"big.cwl": tool("") + "# " + strings.Repeat("x", maxCWLDocument) + "\n",
		}, errHas: "more than a CWL document may be here"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			inputs := filepath.Join(t.TempDir(), "inputs")
			workflow := tc.workflow
			for name, content := range tc.files {
				p := filepath.Join(inputs, filepath.FromSlash(name))
				require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o750))
				require.NoError(t, os.WriteFile(p, []byte(content), 0o640))
				if workflow == "" {
					workflow = name
				}
			}
			err := checkCWLDocuments(inputs, filepath.Join(inputs, workflow)+"#main")
			if tc.errHas == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.errHas)
			if !tc.missing {
				require.ErrorContains(t, err, "local paths are disabled")
			}
		})
	}
}

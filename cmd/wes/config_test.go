package main

import (
	"flag"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestSecondsDecode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{in: "5", want: 5 * time.Second},
		{in: " 5 ", want: 5 * time.Second},
		{in: "1.5", want: 1500 * time.Millisecond},
		{in: "0.25", want: 250 * time.Millisecond},
		{in: "500ms", want: 500 * time.Millisecond},
		{in: "2m", want: 2 * time.Minute},
		{in: "1h30m", want: 90 * time.Minute},
		{in: "0", wantErr: true},
		{in: "0s", wantErr: true},
		{in: "-1", wantErr: true},
		{in: "-5s", wantErr: true},
		{in: "abc", wantErr: true},
		{in: "5 s", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			var s Seconds
			err := s.Decode(tt.in)
			if tt.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, s.D())
		})
	}
}

var updateReadme = flag.Bool("update-readme", false, "rewrite the README's configuration table from Config")

// The README's configuration table is Config's tags, row for row:
// go test ./cmd/wes -run READMEConfig -update-readme rewrites it.
func TestREADMEConfigTable(t *testing.T) {
	var b strings.Builder
	b.WriteString("| variable | default | meaning |\n|---|---|---|\n")
	typ := reflect.TypeFor[Config]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		def := f.Tag.Get("default")
		if def != "" {
			def = "`" + def + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", f.Tag.Get("envconfig"), def, strings.ReplaceAll(f.Tag.Get("desc"), "|", `\|`))
	}
	want := b.String()
	data, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	readme := string(data)
	start := strings.Index(readme, "| variable | default | meaning |")
	require.GreaterOrEqual(t, start, 0, "README has a configuration table")
	end := start + strings.Index(readme[start:], "\n\n")
	if end < start {
		end = len(readme)
	} else {
		end++
	}
	if *updateReadme {
		require.NoError(t, os.WriteFile("../../README.md", []byte(readme[:start]+want+readme[end:]), 0o644))
		return
	}
	require.Equal(t, want, readme[start:end], "README's configuration table is stale: go test ./cmd/wes -run READMEConfig -update-readme")
}

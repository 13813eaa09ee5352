package main

import (
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

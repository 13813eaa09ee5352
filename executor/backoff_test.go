package executor

import (
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wes-dev/wes/events"
)

func TestBackoff(t *testing.T) {
	t.Parallel()
	tests := []struct {
		n    int
		want time.Duration
	}{
		{n: 0, want: time.Second},
		{n: 1, want: 2 * time.Second}, // after the first delivery
		{n: 2, want: 4 * time.Second},
		{n: 3, want: 8 * time.Second},
		{n: 4, want: 16 * time.Second},
		{n: 7, want: 128 * time.Second},
		{n: 8, want: 256 * time.Second},
		{n: 9, want: 5 * time.Minute}, // 512s, capped
		{n: 20, want: 5 * time.Minute},
		{n: 21, want: 5 * time.Minute},
		{n: 63, want: 5 * time.Minute}, // a shift this wide would overflow
		{n: 64, want: 5 * time.Minute},
		{n: 1 << 30, want: 5 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.n), func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, backoff(tt.n))
		})
	}
}

func TestBackoffGrowsToItsCap(t *testing.T) {
	t.Parallel()
	prev := time.Duration(0)
	for n := 0; n <= 100; n++ {
		d := backoff(n)
		require.Positive(t, d, "n=%d", n)
		require.LessOrEqual(t, d, 5*time.Minute, "n=%d", n)
		require.GreaterOrEqual(t, d, prev, "n=%d", n)
		prev = d
	}
	require.Equal(t, 5*time.Minute, prev)
}

func TestWatchBackoff(t *testing.T) {
	t.Parallel()
	tests := []struct {
		n    int
		want time.Duration
	}{
		{n: 1, want: 500 * time.Millisecond},
		{n: 2, want: time.Second},
		{n: 5, want: 8 * time.Second},
		{n: 6, want: 10 * time.Second},
		{n: 1 << 30, want: 10 * time.Second},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.n), func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, watchBackoff(tt.n))
		})
	}
}

// A run's wes.retry_failures tag, when it has one, decides whether its
// workflow failures are retried (only "true" asks for it); without the tag
// the operator's WES_RETRY_FAILURES does.
func TestRetryFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		operator bool
		tag      string // "" for no tag
		want     bool
	}{
		{operator: false, want: false},
		{operator: true, want: true},
		{operator: false, tag: "true", want: true},
		{operator: true, tag: "false", want: false},
		{operator: true, tag: "true", want: true},
		{operator: false, tag: "false", want: false},
		{operator: true, tag: "yes", want: false}, // only "true" asks for retries
	}
	for _, tt := range tests {
		t.Run(strconv.FormatBool(tt.operator)+"/"+tt.tag, func(t *testing.T) {
			a := &attempt{e: &Executor{cfg: Config{RetryFailures: tt.operator}}}
			if tt.tag != "" {
				a.sub.Request.Tags = map[string]string{events.RetryTag: tt.tag}
			}
			require.Equal(t, tt.want, a.retryFailures())
		})
	}
}

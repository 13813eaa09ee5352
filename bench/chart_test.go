package bench

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestChartLatencyAxisIsLogarithmic: milliseconds and tens of seconds both
// show, every point lies within its panel, and the latency ticks are
// decades.
func TestChartLatencyAxisIsLogarithmic(t *testing.T) {
	results := []*Result{
		{Concurrency: 1, SubmitPerSec: 497, E2EPerSec: 497, SubmitP50: 1.8, SubmitP99: 5.1, DispatchP50: 1.3, DispatchP99: 8.6, E2EP99: 19},
		{Concurrency: 64, SubmitPerSec: 3397, E2EPerSec: 1763, SubmitP50: 16.4, SubmitP99: 56.1, DispatchP50: 10869, DispatchP99: 18373, E2EP99: 18411},
		{Concurrency: 128, SubmitPerSec: 0, E2EPerSec: 0}, // a level that failed: zeros sit on the axes
	}
	var b bytes.Buffer
	if err := Chart(&b, "t", results); err != nil {
		t.Fatal(err)
	}
	svg := b.String()
	for _, tick := range []string{">1<", ">10<", ">100<", ">1000<", ">10000<", ">100000<"} {
		if !strings.Contains(svg, `text-anchor="end"`+tick) {
			t.Errorf("no latency tick %s", tick)
		}
	}
	// Panels: throughput y in [60, 360], latency y in [430, 730].
	circles := regexp.MustCompile(`<circle cx="[0-9.]+" cy="([0-9.]+)" r="3" fill="([^"]+)"/>`).FindAllStringSubmatch(svg, -1)
	if want := 2*3 + 5*3; len(circles) != want {
		t.Fatalf("%d points, want %d", len(circles), want)
	}
	for i, c := range circles {
		y, _ := strconv.ParseFloat(c[1], 64)
		lo, hi := 60.0, 360.0
		if i >= 6 {
			lo, hi = 430, 730
		}
		if y < lo || y > hi {
			t.Errorf("point %d (%s) at y=%v, outside its panel [%v, %v]", i, c[2], y, lo, hi)
		}
	}
}

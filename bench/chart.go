package bench

import (
	"fmt"
	"io"
	"math"
	"strings"
)

// series is one line of a chart.
type series struct {
	name  string
	color string
	value func(*Result) float64
}

// Chart writes an SVG with two panels — throughput and latency against
// client concurrency — of results, one point per result, in order. The
// latency axis is logarithmic: submissions take milliseconds while runs
// queued behind busy executors wait seconds.
func Chart(w io.Writer, title string, results []*Result) error {
	if len(results) == 0 {
		return fmt.Errorf("no results to chart")
	}
	const width, height, panelH, left, right, top = 940, 780, 300, 80, 240, 60
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/><text x="%d" y="28" font-size="16" font-weight="bold">%s</text>`+"\n", left, escape(title))
	panels := []struct {
		title, unit string
		log         bool
		series      []series
	}{
		{"Throughput", "runs/s", false, []series{
			{"submissions/s", "#1f77b4", func(r *Result) float64 { return r.SubmitPerSec }},
			{"completed runs/s (end to end)", "#2ca02c", func(r *Result) float64 { return r.E2EPerSec }},
		}},
		{"Latency", "ms, log scale", true, []series{
			{"submit p50", "#9ecae1", func(r *Result) float64 { return r.SubmitP50 }},
			{"submit p99", "#1f77b4", func(r *Result) float64 { return r.SubmitP99 }},
			{"dispatch p50", "#fdae6b", func(r *Result) float64 { return r.DispatchP50 }},
			{"dispatch p99", "#e6550d", func(r *Result) float64 { return r.DispatchP99 }},
			{"end-to-end p99", "#2ca02c", func(r *Result) float64 { return r.E2EP99 }},
		}},
	}
	plotW := float64(width - left - right)
	x := func(i int) float64 {
		if len(results) == 1 {
			return left + plotW/2
		}
		return left + plotW*float64(i)/float64(len(results)-1)
	}
	for p, panel := range panels {
		y0 := float64(top + p*(panelH+70))
		minV, maxV := math.Inf(1), 0.0
		for _, s := range panel.series {
			for _, r := range results {
				v := s.value(r)
				maxV = math.Max(maxV, v)
				if v > 0 {
					minV = math.Min(minV, v)
				}
			}
		}
		var (
			y     func(float64) float64
			ticks []float64
		)
		if panel.log {
			lo := math.Floor(math.Log10(math.Min(minV, math.Max(maxV, 1))))
			if math.IsInf(lo, 0) || math.IsNaN(lo) {
				lo = 0
			}
			hi := max(math.Ceil(math.Log10(math.Max(maxV, 1))), lo+1)
			y = func(v float64) float64 {
				l := lo // a zero sits on the axis
				if v > 0 {
					l = math.Max(math.Log10(v), lo)
				}
				return y0 + panelH - (l-lo)/(hi-lo)*panelH
			}
			for e := lo; e <= hi; e++ {
				ticks = append(ticks, math.Pow(10, e))
			}
		} else {
			maxV = niceCeil(maxV)
			y = func(v float64) float64 { return y0 + panelH - v/maxV*panelH }
			for t := 0; t <= 4; t++ {
				ticks = append(ticks, maxV*float64(t)/4)
			}
		}
		fmt.Fprintf(&b, `<text x="%d" y="%.0f" font-weight="bold">%s (%s)</text>`+"\n", left, y0-10, panel.title, panel.unit)
		for _, v := range ticks {
			fmt.Fprintf(&b, `<line x1="%d" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n",
				left, left+plotW, y(v), y(v), left-6, y(v)+4, trimFloat(v))
		}
		for i, r := range results {
			fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%d</text>`+"\n", x(i), y0+panelH+18, r.Concurrency)
		}
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle">concurrent clients</text>`+"\n", left+plotW/2, y0+panelH+36)
		for k, s := range panel.series {
			pts := make([]string, len(results))
			for i, r := range results {
				pts[i] = fmt.Sprintf("%.1f,%.1f", x(i), y(s.value(r)))
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", x(i), y(s.value(r)), s.color)
			}
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", s.color, strings.Join(pts, " "))
			ly := y0 + 10 + float64(k)*18
			fmt.Fprintf(&b, `<line x1="%.0f" x2="%.0f" y1="%.0f" y2="%.0f" stroke="%s" stroke-width="3"/><text x="%.0f" y="%.0f">%s</text>`+"\n",
				left+plotW+12, left+plotW+32, ly, ly, s.color, left+plotW+38, ly+4, escape(s.name))
		}
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func trimFloat(v float64) string {
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.2g", v)
}

func escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

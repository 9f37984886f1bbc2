package dashboard

import (
	"fmt"
	"html"
	"html/template"
	"strings"
	"time"

	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/protocol"
)

// The charts are inline SVG written here, on the server: no chart library
// and no script. Colours come from classes in app.css.

// chartSeries is one stacked series of a bar chart.
type chartSeries struct {
	outcome protocol.AttemptOutcome
	label   string
	class   string
}

const (
	chartW, chartH = 600, 150
	padL, padR     = 36, 8
	padT, padB     = 8, 22
)

// barChart draws a per-minute stacked bar chart of s's series, with a
// shaded band over the minutes no sample covers.
func barChart(title string, s *series, ss []chartSeries) template.HTML {
	n := s.Buckets
	totals := make([]int, n)
	peak := 0
	for i := range n {
		for _, c := range ss {
			totals[i] += s.Counts[c.outcome][i]
		}
		peak = max(peak, totals[i])
	}
	top := niceCeil(peak)
	plotW, plotH := float64(chartW-padL-padR), float64(chartH-padT-padB)
	bw := plotW / float64(n)
	y := func(v int) float64 { return float64(padT) + plotH - plotH*float64(v)/float64(top) }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %d %d" role="img" aria-label="%s" xmlns="http://www.w3.org/2000/svg">`,
		chartW, chartH, html.EscapeString(title))
	fmt.Fprintf(&b, `<title>%s</title>`, html.EscapeString(title))
	// No data before the first sample.
	for i := 0; i < n && !s.Covered[i]; i++ {
		if i == n-1 || s.Covered[i+1] {
			fmt.Fprintf(&b, `<rect class="nodata" x="%d" y="%d" width="%.1f" height="%.1f"><title>no samples yet: this process started sampling %s</title></rect>`,
				padL, padT, bw*float64(i+1), plotH, html.EscapeString(sinceText(s.Since)))
			if bw*float64(i+1) > 90 {
				fmt.Fprintf(&b, `<text class="nodata-label" x="%.1f" y="%.1f">no data yet</text>`, float64(padL)+bw*float64(i+1)/2, float64(padT)+plotH/2)
			}
		}
	}
	// Grid and y labels: 0, half, top.
	for _, v := range []int{0, top / 2, top} {
		if v == top/2 && (top%2 != 0 || top < 2) {
			continue
		}
		fmt.Fprintf(&b, `<line class="grid" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/>`, padL, chartW-padR, y(v), y(v))
		fmt.Fprintf(&b, `<text class="axis" x="%d" y="%.1f" text-anchor="end">%d</text>`, padL-4, y(v)+4, v)
	}
	// Bars, stacked in series order from the bottom.
	for i := range n {
		base := 0
		for _, c := range ss {
			v := s.Counts[c.outcome][i]
			if v == 0 {
				continue
			}
			x := float64(padL) + bw*float64(i) + 1
			fmt.Fprintf(&b, `<rect class="bar %s" x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>%s: %d %s</title></rect>`,
				c.class, x, y(base+v), bw-2, y(base)-y(base+v), minuteLabel(s.End, n-i), v, c.label)
			base += v
		}
	}
	// X labels.
	for _, m := range []int{60, 45, 30, 15, 0} {
		x := float64(padL) + bw*float64(n-m)
		label := fmt.Sprintf("−%dm", m)
		anchor := "middle"
		if m == 0 {
			label, anchor = "now", "end"
		}
		fmt.Fprintf(&b, `<text class="axis" x="%.1f" y="%d" text-anchor="%s">%s</text>`, x, chartH-6, anchor, label)
	}
	// Legend.
	lx := float64(chartW - padR)
	for i := len(ss) - 1; i >= 0; i-- {
		c := ss[i]
		label := fmt.Sprintf("%s %d", c.label, s.Totals[c.outcome])
		lx -= float64(len(label))*6.5 + 22
		fmt.Fprintf(&b, `<rect class="bar %s" x="%.1f" y="%d" width="10" height="10"/><text class="legend" x="%.1f" y="%d">%s</text>`,
			c.class, lx, padT, lx+14, padT+9, html.EscapeString(label))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) // built from numbers and escaped text only
}

// niceCeil rounds a chart's peak up to 1, 2 or 5 times a power of ten
// (at least 2, so that the half line is an integer).
func niceCeil(v int) int {
	if v <= 2 {
		return 2
	}
	for p := 1; ; p *= 10 {
		for _, m := range []int{1, 2, 5} {
			if m*p >= v {
				return m * p
			}
		}
	}
}

func minuteLabel(end time.Time, minutesAgo int) string {
	t := end.Add(-time.Duration(minutesAgo) * time.Minute).UTC()
	return t.Format("15:04") + "–" + t.Add(time.Minute).Format("15:04") + "Z"
}

func sinceText(t time.Time) string {
	if t.IsZero() {
		return "not yet"
	}
	return "at " + t.UTC().Format("15:04:05Z")
}

// timeline draws a job's attempts as bars on one time axis, coloured by
// outcome, from the first attempt's start to the last one's end (or now).
func timeline(attempts []*store.Attempt, now time.Time) template.HTML {
	if len(attempts) == 0 {
		return ""
	}
	const rowH, labelW, w = 26, 170, 1200
	start := attempts[0].StartedAt
	end := now
	if last := attempts[len(attempts)-1]; last.EndedAt != nil {
		end = *last.EndedAt
	}
	span := end.Sub(start)
	if span <= 0 {
		span = time.Second
	}
	plotW := float64(w - labelW - 10)
	x := func(t time.Time) float64 { return float64(labelW) + plotW*float64(t.Sub(start))/float64(span) }
	h := rowH*len(attempts) + 20
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="timeline" viewBox="0 0 %d %d" role="img" aria-label="attempt timeline" xmlns="http://www.w3.org/2000/svg">`, w, h)
	for i, a := range attempts {
		yy := i * rowH
		e := now
		if a.EndedAt != nil {
			e = *a.EndedAt
		}
		x0, x1 := x(a.StartedAt), x(e)
		fmt.Fprintf(&b, `<text class="legend" x="0" y="%d">#%d %s</text>`, yy+17, a.Number, html.EscapeString(short(a.WorkerID)))
		fmt.Fprintf(&b, `<rect class="bar outcome-%s" x="%.1f" y="%d" width="%.1f" height="%d" rx="3"><title>attempt %d on %s: %s after %s%s</title></rect>`,
			html.EscapeString(string(a.Outcome)), x0, yy+4, max(x1-x0, 3), rowH-8, a.Number, html.EscapeString(a.WorkerID),
			a.Outcome, age(e.Sub(a.StartedAt)), html.EscapeString(reasonSuffix(a.Error)))
	}
	fmt.Fprintf(&b, `<text class="axis" x="%d" y="%d">%s</text>`, labelW, h-4, start.UTC().Format("15:04:05Z"))
	fmt.Fprintf(&b, `<text class="axis" x="%d" y="%d" text-anchor="end">%s (%s)</text>`, w-10, h-4, end.UTC().Format("15:04:05Z"), age(span))
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) // built from numbers and escaped text only
}

func reasonSuffix(err string) string {
	if err == "" {
		return ""
	}
	if len(err) > 200 {
		err = err[:200] + "…"
	}
	return ": " + err
}

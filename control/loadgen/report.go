package loadgen

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteText writes the result as a table of the kinds of call, the cycle
// rate, the exactly-once check and the errors seen.
func (r *Result) WriteText(w io.Writer) error {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "call\tanswered\tper s\tp50\tp99\tmax\terrors\tstale\t")
	for _, k := range r.Kinds {
		if k.Calls == 0 && k.Errors == 0 && k.Stale == 0 {
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%s\t%s\t%s\t%d\t%d\t\n", k.Kind, k.Calls, k.Rate,
			ms(k.P50), ms(k.P99), ms(k.Max), k.Errors, k.Stale)
	}
	tw.Flush()
	fmt.Fprintf(&b, "%d workers for %.1f s", r.Config.Workers, r.Elapsed.Seconds())
	if r.Config.HeartbeatInterval > 0 {
		fmt.Fprintf(&b, ", a heartbeat every %v each", r.Config.HeartbeatInterval)
	} else {
		b.WriteString(", heartbeats back to back")
	}
	b.WriteString("\n")
	if r.Config.Cycles {
		fmt.Fprintf(&b, "%d jobs submitted before the clock started, in %.1f s (not in the table)\n", r.Prefilled, r.PrefillTime.Seconds())
		fmt.Fprintf(&b, "claim → upload → complete: %d cycles, %.0f per s\n", r.Cycles, r.CycleRate)
	}
	l := r.Ledger
	fmt.Fprintf(&b, "exactly-once: %d jobs claimed (%d claims, %d claimed again after a lapsed lease), %d completed, %d cancel orders; %d violations\n",
		l.Jobs, l.Claims, l.Reclaimed, l.Completes, r.CancelOrders, l.Violations)
	for _, d := range l.Details {
		fmt.Fprintf(&b, "  VIOLATION: %s\n", d)
	}
	if len(r.Errors) > 0 {
		b.WriteString("errors:\n")
		for _, e := range r.Errors {
			fmt.Fprintf(&b, "  %s ×%d: %s\n", e.Kind, e.Count, e.Msg)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// ms formats a duration in milliseconds with a precision that suits it.
func ms(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	switch {
	case v < 10:
		return fmt.Sprintf("%.2f ms", v)
	case v < 100:
		return fmt.Sprintf("%.1f ms", v)
	}
	return fmt.Sprintf("%.0f ms", v)
}

// Line is a one-line summary of the snapshot: the calls per second of
// each kind since prev (a zero prev: since the start), errors and
// violations so far.
func (s Snapshot) Line(prev Snapshot) string {
	secs := max((s.Elapsed - prev.Elapsed).Seconds(), 1e-9)
	var b strings.Builder
	fmt.Fprintf(&b, "%4.0fs", s.Elapsed.Seconds())
	for k, n := range s.Calls {
		if n == 0 {
			continue
		}
		fmt.Fprintf(&b, "  %s %.0f/s", Kind(k), float64(n-prev.Calls[k])/secs)
	}
	fmt.Fprintf(&b, "  errors %d  violations %d", s.Errors, s.Violations)
	return b.String()
}

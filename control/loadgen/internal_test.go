package loadgen

import (
	"strings"
	"testing"
	"time"
)

func TestLedger(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

	l := newLedger()
	l.claimed("j1", 1, "w1", at(0))
	l.accepted("heartbeat", "j1", 1, at(10))
	// The lease lapsed; attempt 2 went to w2 at 100 ms.
	l.claimed("j1", 2, "w2", at(100))
	// A heartbeat of attempt 1 sent before that claim was answered may
	// still be accepted: the calls overlapped.
	l.accepted("heartbeat", "j1", 1, at(90))
	l.completed("j1", 2, at(150))
	if s := l.summary(); s.Violations != 0 || s.Jobs != 1 || s.Claims != 2 || s.Completes != 1 || s.Reclaimed != 1 {
		t.Fatalf("clean history: %+v", s)
	}

	for _, c := range []struct {
		name, want string
		run        func(l *ledger)
	}{
		{"same attempt twice", "double claim", func(l *ledger) {
			l.claimed("j1", 1, "w1", at(0))
			l.claimed("j1", 1, "w2", at(5))
		}},
		{"old attempt accepted after a newer claim", "concurrent holders", func(l *ledger) {
			l.claimed("j1", 1, "w1", at(0))
			l.claimed("j1", 2, "w2", at(100))
			l.accepted("upload", "j1", 1, at(101))
		}},
		{"completed twice", "double completion", func(l *ledger) {
			l.claimed("j1", 1, "w1", at(0))
			l.completed("j1", 1, at(10))
			l.completed("j1", 1, at(20))
		}},
		{"claimed after completion", "claim after completion", func(l *ledger) {
			l.claimed("j1", 1, "w1", at(0))
			l.completed("j1", 1, at(10))
			l.claimed("j1", 2, "w2", at(20))
		}},
		{"call of an unclaimed job", "no claim", func(l *ledger) {
			l.accepted("heartbeat", "j9", 1, at(0))
		}},
	} {
		l := newLedger()
		c.run(l)
		s := l.summary()
		if s.Violations == 0 || !strings.Contains(strings.Join(s.Details, "\n"), c.want) {
			t.Errorf("%s: violations %d %q; want one naming %q", c.name, s.Violations, s.Details, c.want)
		}
	}
}

func TestHistogram(t *testing.T) {
	var h Histogram
	if h.Quantile(0.5) != 0 || h.Max() != 0 || h.Mean() != 0 {
		t.Fatal("empty histogram reports values")
	}
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.99, 990 * time.Microsecond}, {1, 1000 * time.Microsecond}} {
		got := h.Quantile(c.q)
		if d := float64(got-c.want) / float64(c.want); d < -0.02 || d > 0.02 {
			t.Errorf("Quantile(%v) = %v, want %v ± 2%%", c.q, got, c.want)
		}
	}
	if h.Max() != time.Millisecond || h.Count() != 1000 {
		t.Errorf("max %v count %d", h.Max(), h.Count())
	}
	if m := h.Mean(); m < 500*time.Microsecond || m > 501*time.Microsecond {
		t.Errorf("mean %v", m)
	}
	// Every bucket's middle maps back to the bucket.
	for i := range numBuckets {
		if b := bucketOf(bucketMid(i)); b != i {
			t.Fatalf("bucketOf(bucketMid(%d)) = %d", i, b)
		}
	}
}

package dashboard

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/protocol"
)

var t0 = time.Date(2026, 3, 14, 8, 0, 0, 0, time.UTC)

func counts(succeeded, interrupted int) map[protocol.AttemptOutcome]int {
	return map[protocol.AttemptOutcome]int{protocol.OutcomeSucceeded: succeeded, protocol.OutcomeInterrupted: interrupted}
}

func TestHistoryPerMinute(t *testing.T) {
	h := newHistory()
	// Samples every 20 s from 10:00 to 10:05: 3 successes a minute, one
	// interruption at 10:02:20.
	n := 0
	for i := 0; i <= 15; i++ {
		at := t0.Add(2*time.Hour + time.Duration(i)*20*time.Second)
		if i > 0 {
			n++
		}
		inter := 0
		if i >= 7 {
			inter = 1
		}
		h.add(at, counts(100+n, inter))
	}
	now := t0.Add(2*time.Hour + 5*time.Minute)
	s := h.perMinute(now)
	if s.Buckets != 60 || len(s.Covered) != 60 {
		t.Fatalf("buckets %d", s.Buckets)
	}
	// The last five minutes are covered, the rest is not.
	for i, c := range s.Covered {
		if want := i >= 55; c != want {
			t.Fatalf("bucket %d covered = %v, want %v", i, c, want)
		}
	}
	if got := s.Totals[protocol.OutcomeSucceeded]; got != 15 {
		t.Errorf("succeeded total %d, want 15", got)
	}
	if got := s.Counts[protocol.OutcomeInterrupted]; got[57] != 1 || s.Totals[protocol.OutcomeInterrupted] != 1 {
		t.Errorf("interrupted per minute %v", got[55:])
	}
	// A count that went down (it cannot, but a restored database could)
	// adds nothing.
	h.add(now.Add(time.Second), counts(0, 0))
	if got := h.perMinute(now.Add(time.Second)).Totals[protocol.OutcomeSucceeded]; got != 15 {
		t.Errorf("after a drop: total %d, want 15", got)
	}
	// A late sample does not reorder the series; old samples go, but for
	// the last one before the span (its first minute's difference).
	h.add(now.Add(-time.Hour), counts(1, 1))
	h.add(now.Add(3*time.Hour), counts(500, 1))
	if len(h.samples) != 2 || !h.samples[1].at.Equal(now.Add(3*time.Hour)) {
		t.Errorf("after 3 h, %d samples kept, want 2", len(h.samples))
	}
}

func TestRates(t *testing.T) {
	r := newRates()
	job := func(stage string, done int, at time.Time) *store.Job {
		return &store.Job{ID: "j1", Attempt: 2, State: protocol.JobRunning,
			Progress: &protocol.Progress{Stage: stage, FramesDone: done, FramesTotal: 500}, ProgressAt: &at}
	}
	r.observe([]*store.Job{job("generate", 100, t0)}, t0)
	if _, ok := r.rate("j1", 2); ok {
		t.Fatal("a rate from one observation")
	}
	// The same progress seen again changes nothing.
	r.observe([]*store.Job{job("generate", 100, t0)}, t0.Add(time.Second))
	r.observe([]*store.Job{job("generate", 150, t0.Add(5*time.Second))}, t0.Add(6*time.Second))
	if got, ok := r.rate("j1", 2); !ok || got != 10 {
		t.Fatalf("rate %v %v, want 10 frames/s", got, ok)
	}
	// The window keeps the last minute.
	r.observe([]*store.Job{job("generate", 200, t0.Add(65*time.Second))}, t0.Add(66*time.Second))
	r.observe([]*store.Job{job("generate", 260, t0.Add(70*time.Second))}, t0.Add(71*time.Second))
	if got, _ := r.rate("j1", 2); got != 110.0/65 {
		t.Fatalf("rate over the window %v, want %v", got, 110.0/65)
	}
	// A new stage starts over; another attempt is another track.
	r.observe([]*store.Job{job("encode", 10, t0.Add(75*time.Second))}, t0.Add(76*time.Second))
	if _, ok := r.rate("j1", 2); ok {
		t.Fatal("a rate across stages")
	}
	if _, ok := r.rate("j1", 3); ok {
		t.Fatal("a rate for an attempt never seen")
	}
	// Tracks nobody has seen for 10 minutes go.
	r.observe(nil, t0.Add(20*time.Minute))
	if len(r.tracks) != 0 {
		t.Fatalf("%d tracks kept", len(r.tracks))
	}
}

func TestNiceCeil(t *testing.T) {
	for in, want := range map[int]int{0: 2, 1: 2, 2: 2, 3: 5, 6: 10, 11: 20, 21: 50, 99: 100, 101: 200} {
		if got := niceCeil(in); got != want {
			t.Errorf("niceCeil(%d) = %d, want %d", in, got, want)
		}
	}
}

func TestTraceID(t *testing.T) {
	for tp, want := range map[string]string{
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01":       "4bf92f3577b34da6a3ce929d0e0e4736",
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01":       "",
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01":       "",
		"00-<script>alert(1)</script>0000000000000-00f067aa0ba902b7-01": "",
		"": "",
	} {
		if got := traceID(map[string]string{"traceparent": tp}); got != want {
			t.Errorf("traceID(%q) = %q, want %q", tp, got, want)
		}
	}
}

func TestStages(t *testing.T) {
	states := func(rows []stageRow) string {
		var b []string
		for _, r := range rows {
			b = append(b, r.Name+":"+r.State)
		}
		return strings.Join(b, " ")
	}
	p := &protocol.Progress{Stage: "features", FramesDone: 10, FramesTotal: 40}
	for _, tc := range []struct {
		engine string
		job    store.Job
		want   string
	}{
		{"musetalk", store.Job{State: protocol.JobQueued}, "load:pending prepare:pending features:pending generate:pending encode:pending"},
		{"musetalk", store.Job{State: protocol.JobRunning, Progress: p}, "load:done prepare:done features:current generate:pending encode:pending"},
		{"musetalk", store.Job{State: protocol.JobFailed, Progress: p}, "load:done prepare:done features:stopped generate:pending encode:pending"},
		{"musetalk", store.Job{State: protocol.JobSucceeded, Progress: p}, "load:done prepare:done features:done generate:done encode:done"},
		{"preview", store.Job{State: protocol.JobRunning, Progress: &protocol.Progress{Stage: "render"}}, "probe:done render:current"},
		{"musetalk", store.Job{State: protocol.JobRunning, Progress: &protocol.Progress{Stage: "warmup"}}, "warmup:current"},
	} {
		if got := states(stages(tc.engine, &tc.job)); got != tc.want {
			t.Errorf("%s %s: %s, want %s", tc.engine, tc.job.State, got, tc.want)
		}
	}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"/dashboard/jobs/j1":         "/dashboard/jobs/j1",
		"/dashboard/queue?x=1":       "/dashboard/queue?x=1",
		"https://evil.example/":      "/dashboard/fleet",
		"//evil.example/dashboard/":  "/dashboard/fleet",
		"/dashboard/\\evil":          "/dashboard/fleet",
		"/v1/jobs":                   "/dashboard/fleet",
		"":                           "/dashboard/fleet",
		"/dashboard/x\r\nSet-Cookie": "/dashboard/fleet",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSessions(t *testing.T) {
	now := t0
	clock := func() time.Time { return now }
	s, err := newSessions([]string{"k-one", "k-two"}, time.Hour, clock)
	if err != nil {
		t.Fatal(err)
	}
	if s.keyIndex("k-two") != 1 || s.keyIndex("k-one") != 0 || s.keyIndex("k-three") != -1 || s.keyIndex("") != -1 {
		t.Fatal("keyIndex")
	}
	ss, value, err := s.issue(1)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(value, "k-two") {
		t.Fatal("the cookie holds the key")
	}
	got := s.verify(value)
	if got == nil || got.csrf != ss.csrf || !reflect.DeepEqual(got.secret, s.secrets[1]) {
		t.Fatalf("verify: %+v", got)
	}
	// Every part is checked.
	parts := strings.Split(value, ".")
	for i, bad := range []string{
		"v2." + strings.Join(parts[1:], "."),
		parts[0] + ".other." + parts[2] + "." + parts[3],
		strings.Join(parts[:2], ".") + ".99999999999." + parts[3],
		strings.Join(parts[:3], ".") + ".AAAA",
		value + ".x",
	} {
		if s.verify(bad) != nil {
			t.Errorf("altered cookie %d accepted", i)
		}
	}
	// Another control plane with other keys refuses it; CSRF tokens differ
	// per session.
	other, _ := newSessions([]string{"k-one"}, time.Hour, clock)
	if other.verify(value) != nil {
		t.Fatal("a session of a key no longer configured was accepted")
	}
	ss2, _, _ := s.issue(1)
	if ss2.csrf == ss.csrf {
		t.Fatal("two sessions share a CSRF token")
	}
	// Expiry and logout.
	now = t0.Add(time.Hour)
	if s.verify(value) != nil {
		t.Fatal("an expired session was accepted")
	}
	now = t0
	s.revoke(got)
	if s.verify(value) != nil {
		t.Fatal("a logged-out session was accepted")
	}
	now = t0.Add(2 * time.Hour)
	s.revoke(ss2) // prunes the first revocation, long expired
	if len(s.revoked) != 1 {
		t.Fatalf("%d revocations kept", len(s.revoked))
	}
}

package storetest

import (
	"testing"
	"time"

	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/protocol"
)

// textTests check that free text a worker sends is stored the same way by
// every store: PostgreSQL's text cannot hold NUL or invalid UTF-8 (it
// answers "invalid byte sequence for encoding UTF8: 0x00") while SQLite
// keeps any bytes, so the store replaces each NUL and each invalid byte
// (a run of them) with U+FFFD and the call succeeds on both.
func textTests() map[string]func(t *testing.T, h *harness) {
	const (
		nul  = "before\x00after"
		want = "before\uFFFDafter"
		bad  = "bad \xff\xfe byte"
		fix  = "bad \uFFFD byte" // a run of invalid bytes is one U+FFFD
	)
	return map[string]func(t *testing.T, h *harness){
		"HeartbeatNUL": func(t *testing.T, h *harness) {
			check := &protocol.SelfCheck{Engine: "musetalk\x00", Device: "cuda:\x000", Error: nul}
			r := h.heartbeat(&store.WorkerHeartbeatParams{ID: "w1", Provider: "salad\x00", GPUClass: nul,
				Version: bad, SelfCheck: check, Now: base()})
			wantCheck := &protocol.SelfCheck{Engine: "musetalk\uFFFD", Device: "cuda:\uFFFD0", Error: want}
			for what, w := range map[string]*store.Worker{"answer": r.Worker, "stored": h.worker("w1")} {
				eq(t, what+" provider", w.Provider, "salad\uFFFD")
				eq(t, what+" gpu class", w.GPUClass, want)
				eq(t, what+" version", w.Version, fix)
				eq(t, what+" self-check", w.SelfCheck, wantCheck)
			}
		},
		"ClaimRegistersNUL": func(t *testing.T, h *harness) {
			// A claim from an unknown worker registers it through the
			// heartbeat path; the same fields, the same rule.
			r := h.heartbeat(&store.WorkerHeartbeatParams{ID: "w1", Provider: "\x00", GPUClass: "\x00\x00", Version: "v\x00", Now: base()})
			eq(t, "provider", r.Worker.Provider, "\uFFFD")
			eq(t, "gpu class", r.Worker.GPUClass, "\uFFFD\uFFFD")
			eq(t, "version", r.Worker.Version, "v\uFFFD")
		},
		"FailErrorNUL": func(t *testing.T, h *harness) {
			h.insert("job-1")
			j := h.claim("w1", at(time.Second))
			got := h.fail(j, at(2*time.Second), nul, true)
			eq(t, "job error", got.Error, want)
			eq(t, "failures", got.Failures, 1)
			eq(t, "stored", h.job("job-1"), got)
			eq(t, "attempt error", h.attempts("job-1")[0].Error, want)

			j = h.claim("w1", at(5*time.Minute))
			got = h.fail(j, at(6*time.Minute), bad, false)
			eq(t, "permanent job error", got.Error, "permanent failure: "+fix)
			eq(t, "second attempt error", h.attempts("job-1")[1].Error, fix)
		},
		"ReleaseReasonNUL": func(t *testing.T, h *harness) {
			h.insert("job-1")
			j := h.claim("w1", at(time.Second))
			got, err := h.s.JobRelease(h.ctx, &store.JobReleaseParams{AttemptParams: ref(j, at(2*time.Second)), Reason: nul, Backoff: linear})
			if err != nil {
				t.Fatalf("JobRelease: %v", err)
			}
			eq(t, "state", got.State, protocol.JobQueued)
			eq(t, "job error", got.Error, want)
			eq(t, "stored", h.job("job-1"), got)
			eq(t, "attempt", h.attempts("job-1")[0].Error, want)
			eq(t, "outcome", h.attempts("job-1")[0].Outcome, protocol.OutcomeReleased)
		},
	}
}

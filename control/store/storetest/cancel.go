package storetest

import (
	"testing"
	"time"

	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/protocol"
)

func cancelTests() map[string]func(t *testing.T, h *harness) {
	return map[string]func(t *testing.T, h *harness){
		"Queued": func(t *testing.T, h *harness) {
			h.insert("job-1")
			now := at(time.Minute)
			got, err := h.s.JobCancel(h.ctx, "job-1", now)
			if err != nil {
				t.Fatal(err)
			}
			eq(t, "state", got.State, protocol.JobCancelled)
			eq(t, "finished", got.FinishedAt, ptr(now))
			eq(t, "stored", h.job("job-1"), got)
			h.noClaim("w1", at(time.Hour))
			// Cancelling again returns the job unchanged.
			again, err := h.s.JobCancel(h.ctx, "job-1", at(2*time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			eq(t, "cancelled again", again, got)
		},
		"Running": func(t *testing.T, h *harness) {
			h.insert("job-1")
			h.register("w1", base())
			j := h.claim("w1", at(time.Minute))
			now := at(2 * time.Minute)
			got, err := h.s.JobCancel(h.ctx, "job-1", now)
			if err != nil {
				t.Fatal(err)
			}
			eq(t, "state", got.State, protocol.JobCancelled)
			eq(t, "token", got.Token, "")
			eq(t, "lease", got.LeaseExpiresAt, nil)
			eq(t, "finished", got.FinishedAt, ptr(now))
			eq(t, "attempts", h.attempts("job-1"), []*store.Attempt{{
				JobID: "job-1", Number: 1, WorkerID: "w1", Outcome: protocol.OutcomeCancelled,
				Error: "job cancelled", StartedAt: at(time.Minute), EndedAt: ptr(now),
			}})
			eq(t, "worker job cleared", h.worker("w1").JobID, "")
			// The worker learns from its next heartbeat, and its token is dead.
			r := h.heartbeat(&store.WorkerHeartbeatParams{ID: "w1", Status: protocol.WorkerBusy, JobID: "job-1", Attempt: 1, Now: now})
			eq(t, "cancel order", r.Cancel, &protocol.CancelOrder{JobID: "job-1", Attempt: 1, Reason: "job cancelled"})
			_, err = h.s.JobComplete(h.ctx, &store.JobCompleteParams{AttemptParams: ref(j, now), OutputKey: outputKey(j)})
			isErr(t, "complete after cancel", err, store.ErrStaleAttempt)
		},
		"Final": func(t *testing.T, h *harness) {
			h.insert("ok")
			h.insert("bad", func(p *store.JobInsertParams) { p.Now = at(time.Second) })
			h.complete(h.claim("w1", at(time.Minute)), at(2*time.Minute))
			h.fail(h.claim("w1", at(3*time.Minute)), at(4*time.Minute), "broken input", false)
			for _, id := range []string{"ok", "bad"} {
				before := h.snapshot(id, "")
				_, err := h.s.JobCancel(h.ctx, id, at(time.Hour))
				isErr(t, "cancel "+id, err, store.ErrFinal)
				h.unchanged("cancel "+id, before)
			}
		},
		"NotFound": func(t *testing.T, h *harness) {
			_, err := h.s.JobCancel(h.ctx, "nope", base())
			isErr(t, "cancel", err, store.ErrNotFound)
		},
	}
}

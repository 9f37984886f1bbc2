package storetest

import (
	"testing"
	"time"

	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/protocol"
)

func retryTests() map[string]func(t *testing.T, h *harness) {
	return map[string]func(t *testing.T, h *harness){
		"Failed": func(t *testing.T, h *harness) {
			h.insert("job-1")
			h.register("w1", base())
			h.fail(h.claim("w1", at(time.Minute)), at(2*time.Minute), "broken input", false)
			before := h.job("job-1")
			eq(t, "state before", before.State, protocol.JobFailed)
			now := at(time.Hour)
			got, err := h.s.JobRetry(h.ctx, "job-1", now)
			if err != nil {
				t.Fatal(err)
			}
			want := *before
			want.State = protocol.JobQueued
			want.Failures, want.Interruptions = 0, 0
			want.Error = ""
			want.Progress, want.ProgressAt, want.FinishedAt = nil, nil, nil
			want.RunAfter, want.UpdatedAt = now, now
			eq(t, "retried", got, &want)
			eq(t, "stored", h.job("job-1"), got)
			// The history stays; the next claim is attempt 2, with fresh budgets.
			eq(t, "attempts kept", len(h.attempts("job-1")), 1)
			j := h.claim("w1", now)
			eq(t, "next attempt", j.Attempt, 2)
			eq(t, "failures", j.Failures, 0)
			h.complete(j, now.Add(time.Minute))
			eq(t, "final state", h.job("job-1").State, protocol.JobSucceeded)
		},
		"BudgetSpent": func(t *testing.T, h *harness) {
			// A job failed by its interruption budget gets a whole budget back.
			h.insert("job-1")
			h.register("w1", base())
			now := base()
			for range maxAttempts {
				now = now.Add(time.Hour)
				h.claim("w1", now)
				h.sweep(&store.SweepParams{OfflineAfter: 24 * time.Hour, Backoff: linear, Now: now.Add(lease + time.Second)})
			}
			eq(t, "state before", h.job("job-1").State, protocol.JobFailed)
			now = now.Add(time.Hour)
			got, err := h.s.JobRetry(h.ctx, "job-1", now)
			if err != nil {
				t.Fatal(err)
			}
			eq(t, "state", got.State, protocol.JobQueued)
			eq(t, "interruptions", got.Interruptions, 0)
			j := h.claim("w1", now)
			eq(t, "next attempt", j.Attempt, maxAttempts+1)
		},
		"NotFailed": func(t *testing.T, h *harness) {
			h.register("w1", base())
			h.register("w2", base())
			h.insert("ok")
			h.complete(h.claim("w1", at(time.Minute)), at(2*time.Minute))
			h.insert("cancelled", func(p *store.JobInsertParams) { p.Now = at(3 * time.Minute) })
			if _, err := h.s.JobCancel(h.ctx, "cancelled", at(4*time.Minute)); err != nil {
				t.Fatal(err)
			}
			h.insert("running", func(p *store.JobInsertParams) { p.Now = at(5 * time.Minute) })
			eq(t, "claimed", h.claim("w2", at(6*time.Minute)).ID, "running")
			h.insert("queued", func(p *store.JobInsertParams) { p.Now = at(7 * time.Minute) })
			for _, id := range []string{"queued", "running", "ok", "cancelled"} {
				before := h.snapshot(id, "")
				_, err := h.s.JobRetry(h.ctx, id, at(time.Hour))
				isErr(t, "retry "+id, err, store.ErrNotFailed)
				h.unchanged("retry "+id, before)
			}
		},
		"NotFound": func(t *testing.T, h *harness) {
			_, err := h.s.JobRetry(h.ctx, "nope", base())
			isErr(t, "retry", err, store.ErrNotFound)
		},
	}
}

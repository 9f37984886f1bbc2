package storetest

import (
	"sync"
	"testing"
	"time"

	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/protocol"
)

func sweepTests() map[string]func(t *testing.T, h *harness) {
	return map[string]func(t *testing.T, h *harness){
		"Offline": func(t *testing.T, h *harness) {
			h.register("old", base())
			h.register("recent", at(50*time.Second))
			h.register("gone", base())
			h.sweep(&store.SweepParams{OfflineAfter: time.Minute, Now: at(time.Minute)}) // "not seen since" is strict
			eq(t, "status at the limit", h.worker("old").Status, protocol.WorkerIdle)
			res := h.sweep(&store.SweepParams{OfflineAfter: time.Minute, Now: at(time.Minute + time.Microsecond)})
			eq(t, "offline", res.WorkersOffline, []string{"gone", "old"})
			eq(t, "status", h.worker("old").Status, protocol.WorkerOffline)
			eq(t, "recent", h.worker("recent").Status, protocol.WorkerIdle)
			// Offline workers are not reported again.
			res = h.sweep(&store.SweepParams{OfflineAfter: time.Minute, Now: at(time.Hour)})
			eq(t, "offline later", res.WorkersOffline, []string{"recent"})
		},
		"Healthy": func(t *testing.T, h *harness) {
			h.insert("job-1")
			h.register("w1", base())
			j := h.claim("w1", at(time.Second))
			before := h.snapshot(j.ID, "w1")
			res := h.sweep(&store.SweepParams{OfflineAfter: time.Minute, StallTimeout: time.Minute, Backoff: linear, Now: at(20 * time.Second)})
			eq(t, "result", res, &store.SweepResult{})
			h.unchanged("healthy sweep", before)
		},
		"LeaseExpired": func(t *testing.T, h *harness) {
			h.insert("job-1")
			h.register("w1", base())
			j := h.claim("w1", at(time.Minute)) // lease until 1m30s
			h.sweep(&store.SweepParams{Backoff: linear, Now: *j.LeaseExpiresAt})
			eq(t, "state at the lease's end", h.job("job-1").State, protocol.JobRunning)
			now := j.LeaseExpiresAt.Add(time.Second)
			res := h.sweep(&store.SweepParams{Backoff: linear, Now: now})
			// The reason says how long the worker had been silent: since
			// the claim (at 1m).
			reason := "lease expired 1s ago; worker last heard from 31s ago"
			eq(t, "interrupted", res.Interrupted, []store.Interruption{{JobID: "job-1", Attempt: 1, WorkerID: "w1", Reason: reason}})
			got := h.job("job-1")
			eq(t, "state", got.State, protocol.JobQueued)
			eq(t, "interruptions", got.Interruptions, 1)
			eq(t, "error", got.Error, reason)
			eq(t, "run after", got.RunAfter, now.Add(linear(1)))
			eq(t, "attempts", h.attempts("job-1"), []*store.Attempt{{
				JobID: "job-1", Number: 1, WorkerID: "w1", Outcome: protocol.OutcomeInterrupted,
				Error: reason, StartedAt: at(time.Minute), EndedAt: ptr(now),
			}})
			eq(t, "worker job cleared", h.worker("w1").JobID, "")
			// The worker's token is dead and its next heartbeat says so.
			_, err := h.s.JobComplete(h.ctx, &store.JobCompleteParams{AttemptParams: ref(j, now), OutputKey: outputKey(j)})
			isErr(t, "complete after the lease expired", err, store.ErrStaleAttempt)
			r := h.heartbeat(&store.WorkerHeartbeatParams{ID: "w1", Status: protocol.WorkerBusy, JobID: "job-1", Attempt: 1, Now: now})
			eq(t, "cancel order", r.Cancel, &protocol.CancelOrder{JobID: "job-1", Attempt: 1,
				Reason: "attempt 1 is no longer current (job is queued, attempt 1)"})
			// Claimable again after the backoff.
			eq(t, "re-claim", h.claim("w2", got.RunAfter).Attempt, 2)
		},
		"HeartbeatKeepsLease": func(t *testing.T, h *harness) {
			h.insert("job-1")
			j := h.claim("w1", base())
			for i := 1; i <= 10; i++ {
				now := at(time.Duration(i) * 20 * time.Second)
				h.heartbeat(&store.WorkerHeartbeatParams{ID: "w1", Status: protocol.WorkerBusy, JobID: j.ID, Attempt: 1, Now: now})
				res := h.sweep(&store.SweepParams{OfflineAfter: time.Minute, Now: now.Add(time.Second)})
				eq(t, "interrupted while heartbeating", len(res.Interrupted), 0)
			}
		},
		"WorkerOffline": func(t *testing.T, h *harness) {
			h.insert("job-1")
			h.register("w1", base())
			j := h.claim("w1", base())
			// The lease is still good (a long one), but the worker went silent.
			h.heartbeat(&store.WorkerHeartbeatParams{ID: "w1", Status: protocol.WorkerBusy, JobID: j.ID, Attempt: 1,
				LeaseDuration: time.Hour, Now: at(time.Second)})
			now := at(2 * time.Minute)
			res := h.sweep(&store.SweepParams{OfflineAfter: time.Minute, Backoff: linear, Now: now})
			eq(t, "offline", res.WorkersOffline, []string{"w1"})
			reason := "worker offline; worker last heard from 1m59s ago"
			eq(t, "interrupted", res.Interrupted, []store.Interruption{{JobID: "job-1", Attempt: 1, WorkerID: "w1", Reason: reason}})
			got := h.job("job-1")
			eq(t, "state", got.State, protocol.JobQueued)
			eq(t, "error", got.Error, reason)
			w := h.worker("w1")
			eq(t, "worker", [3]any{w.Status, w.JobID, w.Attempt}, [3]any{protocol.WorkerOffline, "", 0})
		},
		"Stalled": func(t *testing.T, h *harness) {
			h.insert("job-1")
			h.register("w1", base())
			j := h.claim("w1", base())
			pr := protocol.Progress{Stage: "generate", FramesDone: 1, FramesTotal: 100}
			// Heartbeats keep worker and lease alive but progress stops at 1m.
			for i := 1; i <= 12; i++ {
				now := at(time.Duration(i) * 10 * time.Second)
				if i > 6 {
					pr.FramesDone = 6
				} else {
					pr.FramesDone = i
				}
				h.heartbeat(&store.WorkerHeartbeatParams{ID: "w1", Status: protocol.WorkerBusy, JobID: j.ID, Attempt: 1, Progress: &pr, Now: now})
			}
			params := &store.SweepParams{OfflineAfter: time.Minute, StallTimeout: time.Minute, Backoff: linear}
			params.Now = at(2 * time.Minute)
			eq(t, "at the stall timeout", len(h.sweep(params).Interrupted), 0)
			params.Now = at(2*time.Minute + time.Second)
			res := h.sweep(params)
			eq(t, "interrupted", res.Interrupted, []store.Interruption{{JobID: "job-1", Attempt: 1, WorkerID: "w1",
				Reason: "no progress for 1m1s (stall timeout 1m0s)"}})
			eq(t, "attempt error", h.attempts("job-1")[0].Error, "no progress for 1m1s (stall timeout 1m0s)")
			// Without a stall timeout, stalls are not looked for.
			h.insert("job-2")
			h.claim("w2", at(3*time.Minute))
			h.heartbeat(&store.WorkerHeartbeatParams{ID: "w2", Status: protocol.WorkerBusy, JobID: "job-2", LeaseDuration: time.Hour, Now: at(3 * time.Minute)})
			res = h.sweep(&store.SweepParams{Now: at(50 * time.Minute)})
			eq(t, "interrupted without a stall timeout", len(res.Interrupted), 0)
		},
		"BudgetExhausted": func(t *testing.T, h *harness) {
			h.insert("job-1", func(p *store.JobInsertParams) { p.MaxInterruptions = 2 })
			now := base()
			var res *store.SweepResult
			for i := 1; i <= 2; i++ {
				h.claim("w1", now)
				now = now.Add(lease + time.Second)
				res = h.sweep(&store.SweepParams{Now: now}) // nil backoff: claimable at once
				eq(t, "interrupted", len(res.Interrupted), 1)
			}
			// w1 claims without a heartbeat: the registry has no entry.
			eq(t, "last interruption", res.Interrupted[0], store.Interruption{JobID: "job-1", Attempt: 2, WorkerID: "w1",
				Reason: "lease expired 1s ago; worker unknown", Final: true})
			got := h.job("job-1")
			eq(t, "state", got.State, protocol.JobFailed)
			eq(t, "interruptions", got.Interruptions, 2)
			eq(t, "error", got.Error, "interrupted 2 times (budget exhausted); last: lease expired 1s ago; worker unknown")
			eq(t, "finished", got.FinishedAt, ptr(now))
			as := h.attempts("job-1")
			eq(t, "attempts kept", len(as), 2)
			for _, a := range as {
				eq(t, "attempt", [2]any{a.Outcome, a.Error}, [2]any{protocol.OutcomeInterrupted, "lease expired 1s ago; worker unknown"})
			}
			h.noClaim("w1", now.Add(time.Hour))
		},
		"ConcurrentIdempotent": func(t *testing.T, h *harness) {
			const n = 20
			for i := range n {
				h.insert(idOf("job", i))
				h.claim(idOf("w", i), base())
			}
			now := base().Add(lease + time.Second)
			var wg sync.WaitGroup
			results := make([]*store.SweepResult, 2)
			errs := make([]error, 2)
			for i := range results {
				wg.Go(func() {
					results[i], errs[i] = h.s.Sweep(h.ctx, &store.SweepParams{OfflineAfter: time.Minute, Backoff: linear, Now: now})
				})
			}
			wg.Wait()
			seen := map[string]int{}
			for i, r := range results {
				if errs[i] != nil {
					t.Fatalf("sweep %d: %v", i, errs[i])
				}
				for _, in := range r.Interrupted {
					seen[in.JobID]++
				}
			}
			for i := range n {
				id := idOf("job", i)
				if seen[id] != 1 {
					t.Errorf("job %s reported interrupted %d times by two sweeps, want 1", id, seen[id])
				}
				j := h.job(id)
				eq(t, id+" interruptions", j.Interruptions, 1)
				eq(t, id+" state", j.State, protocol.JobQueued)
				eq(t, id+" run after", j.RunAfter, now.Add(linear(1)))
				as := h.attempts(id)
				eq(t, id+" attempts", len(as), 1)
				eq(t, id+" outcome", as[0].Outcome, protocol.OutcomeInterrupted)
			}
			// A third sweep finds nothing.
			eq(t, "third sweep", len(h.sweep(&store.SweepParams{Backoff: linear, Now: now}).Interrupted), 0)
		},
	}
}

package storetest

import (
	"testing"
	"time"

	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/protocol"
)

func attemptTests() map[string]func(t *testing.T, h *harness) {
	return map[string]func(t *testing.T, h *harness){
		"Progress": func(t *testing.T, h *harness) {
			h.insert("job-1")
			claimed := at(time.Minute)
			j := h.claim("w1", claimed)
			progress := func(now time.Time, pr protocol.Progress) *store.Job {
				t.Helper()
				out, err := h.s.JobProgress(h.ctx, &store.JobProgressParams{AttemptParams: ref(j, now), Progress: pr, LeaseDuration: lease})
				if err != nil {
					t.Fatalf("JobProgress: %v", err)
				}
				return out
			}
			p1 := protocol.Progress{Stage: "generate", FramesDone: 10, FramesTotal: 100}
			t1 := claimed.Add(10 * time.Second)
			got := progress(t1, p1)
			eq(t, "progress", got.Progress, &p1)
			eq(t, "progress at", got.ProgressAt, ptr(t1))
			eq(t, "lease", got.LeaseExpiresAt, ptr(t1.Add(lease)))
			// The same progress again extends the lease but not ProgressAt.
			t2 := t1.Add(10 * time.Second)
			got = progress(t2, p1)
			eq(t, "progress at after a repeat", got.ProgressAt, ptr(t1))
			eq(t, "lease after a repeat", got.LeaseExpiresAt, ptr(t2.Add(lease)))
			// A change of stage alone is progress.
			p2 := protocol.Progress{Stage: "blend", FramesDone: 10, FramesTotal: 100}
			t3 := t2.Add(10 * time.Second)
			got = progress(t3, p2)
			eq(t, "progress at after a change", got.ProgressAt, ptr(t3))
			eq(t, "stored", h.job("job-1"), got)
			eq(t, "state", got.State, protocol.JobRunning)
		},
		"Complete": func(t *testing.T, h *harness) {
			h.insert("job-1")
			h.register("w1", base())
			j := h.claim("w1", at(time.Minute))
			h.heartbeat(&store.WorkerHeartbeatParams{ID: "w1", Status: protocol.WorkerBusy, JobID: j.ID, Attempt: 1, Now: at(time.Minute)})
			done := at(2 * time.Minute)
			got := h.complete(j, done)
			eq(t, "state", got.State, protocol.JobSucceeded)
			eq(t, "output", got.OutputKey, outputKey(j))
			eq(t, "token", got.Token, "")
			eq(t, "lease", got.LeaseExpiresAt, nil)
			eq(t, "finished", got.FinishedAt, ptr(done))
			eq(t, "error", got.Error, "")
			eq(t, "stored", h.job("job-1"), got)
			eq(t, "attempts", h.attempts("job-1"), []*store.Attempt{{
				JobID: "job-1", Number: 1, WorkerID: "w1", Outcome: protocol.OutcomeSucceeded,
				OutputKey: outputKey(j), StartedAt: at(time.Minute), EndedAt: ptr(done),
			}})
			w := h.worker("w1")
			eq(t, "worker job cleared", [2]any{w.JobID, w.Attempt}, [2]any{"", 0})
			eq(t, "worker status", w.Status, protocol.WorkerIdle)
			h.noClaim("w2", at(time.Hour))
		},
		"CompleteRetried": func(t *testing.T, h *harness) {
			h.insert("job-1")
			j := h.claim("w1", at(time.Minute))
			first := h.complete(j, at(2*time.Minute))
			// The same request again (a lost answer) changes nothing.
			again := h.complete(j, at(3*time.Minute))
			eq(t, "retried complete", again, first)
			// Another token or output key is refused.
			other := *j
			other.Token = "forged"
			_, err := h.s.JobComplete(h.ctx, &store.JobCompleteParams{AttemptParams: ref(&other, at(4*time.Minute)), OutputKey: outputKey(j)})
			isErr(t, "complete with another token", err, store.ErrStaleAttempt)
			_, err = h.s.JobComplete(h.ctx, &store.JobCompleteParams{AttemptParams: ref(j, at(4*time.Minute)), OutputKey: "outputs/other.mp4"})
			isErr(t, "complete with another output", err, store.ErrStaleAttempt)
			eq(t, "stored", h.job("job-1"), first)
		},
		"CompleteNeedsOutput": func(t *testing.T, h *harness) {
			h.insert("job-1")
			j := h.claim("w1", at(time.Minute))
			before := h.snapshot("job-1", "")
			_, err := h.s.JobComplete(h.ctx, &store.JobCompleteParams{AttemptParams: ref(j, at(2*time.Minute))})
			isSomeErr(t, "complete without output key", err)
			h.unchanged("complete without output key", before)
		},
		"StaleAttempt": func(t *testing.T, h *harness) {
			h.insert("job-1")
			h.register("w1", base())
			j := h.claim("w1", at(time.Minute))
			now := at(2 * time.Minute)
			wrongToken, wrongAttempt := ref(j, now), ref(j, now)
			wrongToken.Token = "not-the-token"
			wrongAttempt.Attempt = 2
			for name, a := range map[string]store.AttemptParams{"wrong token": wrongToken, "wrong attempt": wrongAttempt} {
				before := h.snapshot("job-1", "w1")
				_, err := h.s.JobProgress(h.ctx, &store.JobProgressParams{AttemptParams: a, Progress: protocol.Progress{FramesDone: 1}, LeaseDuration: lease})
				isErr(t, "progress, "+name, err, store.ErrStaleAttempt)
				_, err = h.s.JobComplete(h.ctx, &store.JobCompleteParams{AttemptParams: a, OutputKey: "outputs/x.mp4"})
				isErr(t, "complete, "+name, err, store.ErrStaleAttempt)
				_, err = h.s.JobFail(h.ctx, &store.JobFailParams{AttemptParams: a, Error: "boom", Retryable: true})
				isErr(t, "fail, "+name, err, store.ErrStaleAttempt)
				_, err = h.s.JobRelease(h.ctx, &store.JobReleaseParams{AttemptParams: a, Reason: "draining"})
				isErr(t, "release, "+name, err, store.ErrStaleAttempt)
				h.unchanged(name, before)
			}
			// Once the attempt has ended, its own token is stale too.
			h.fail(j, now, "boom", true)
			before := h.snapshot("job-1", "w1")
			_, err := h.s.JobProgress(h.ctx, &store.JobProgressParams{AttemptParams: ref(j, now), LeaseDuration: lease})
			isErr(t, "progress after fail", err, store.ErrStaleAttempt)
			_, err = h.s.JobComplete(h.ctx, &store.JobCompleteParams{AttemptParams: ref(j, now), OutputKey: outputKey(j)})
			isErr(t, "complete after fail", err, store.ErrStaleAttempt)
			_, err = h.s.JobFail(h.ctx, &store.JobFailParams{AttemptParams: ref(j, now), Error: "boom", Retryable: true})
			isErr(t, "fail after fail", err, store.ErrStaleAttempt)
			_, err = h.s.JobRelease(h.ctx, &store.JobReleaseParams{AttemptParams: ref(j, now)})
			isErr(t, "release after fail", err, store.ErrStaleAttempt)
			h.unchanged("calls after the attempt ended", before)
		},
		"UnknownJob": func(t *testing.T, h *harness) {
			a := store.AttemptParams{JobID: "nope", Attempt: 1, Token: "t", Now: base()}
			_, err := h.s.JobProgress(h.ctx, &store.JobProgressParams{AttemptParams: a, LeaseDuration: lease})
			isErr(t, "progress", err, store.ErrNotFound)
			_, err = h.s.JobComplete(h.ctx, &store.JobCompleteParams{AttemptParams: a, OutputKey: "o"})
			isErr(t, "complete", err, store.ErrNotFound)
			_, err = h.s.JobFail(h.ctx, &store.JobFailParams{AttemptParams: a, Error: "e"})
			isErr(t, "fail", err, store.ErrNotFound)
			_, err = h.s.JobRelease(h.ctx, &store.JobReleaseParams{AttemptParams: a})
			isErr(t, "release", err, store.ErrNotFound)
		},
		"FailRetryableWithBackoff": func(t *testing.T, h *harness) {
			h.insert("job-1")
			h.register("w1", base())
			j := h.claim("w1", at(time.Minute))
			now := at(2 * time.Minute)
			got := h.fail(j, now, "cuda out of memory", true)
			eq(t, "state", got.State, protocol.JobQueued)
			eq(t, "failures", got.Failures, 1)
			eq(t, "interruptions", got.Interruptions, 0)
			eq(t, "error", got.Error, "cuda out of memory")
			eq(t, "run after", got.RunAfter, now.Add(linear(1)))
			eq(t, "token", got.Token, "")
			eq(t, "finished", got.FinishedAt, nil)
			eq(t, "attempt", got.Attempt, 1)
			eq(t, "attempts", h.attempts("job-1"), []*store.Attempt{{
				JobID: "job-1", Number: 1, WorkerID: "w1", Outcome: protocol.OutcomeFailed,
				Error: "cuda out of memory", StartedAt: at(time.Minute), EndedAt: ptr(now),
			}})
			w := h.worker("w1")
			eq(t, "worker job cleared", [3]any{w.JobID, w.Attempt, w.Status}, [3]any{"", 0, protocol.WorkerIdle})
			// The second failure waits Backoff(2).
			j2 := h.claim("w1", got.RunAfter)
			eq(t, "second attempt", j2.Attempt, 2)
			got = h.fail(j2, got.RunAfter.Add(time.Second), "again", true)
			eq(t, "second run after", got.RunAfter, got.UpdatedAt.Add(linear(2)))
		},
		"FailBudget": func(t *testing.T, h *harness) {
			h.insert("job-1") // MaxFailures 3
			now := at(time.Minute)
			var got *store.Job
			for i := 1; i <= maxAttempts; i++ {
				j := h.claim("w1", now)
				eq(t, "attempt", j.Attempt, i)
				now = now.Add(time.Second)
				got = h.fail(j, now, "bad frame "+string(rune('0'+i)), true)
				now = got.RunAfter
			}
			eq(t, "state", got.State, protocol.JobFailed)
			eq(t, "failures", got.Failures, 3)
			eq(t, "error", got.Error, "failure budget exhausted after 3 failures: bad frame 3")
			eq(t, "finished", got.FinishedAt, ptr(got.UpdatedAt))
			as := h.attempts("job-1")
			eq(t, "attempt count", len(as), 3)
			for i, a := range as {
				eq(t, "attempt outcome", a.Outcome, protocol.OutcomeFailed)
				eq(t, "attempt error", a.Error, "bad frame "+string(rune('1'+i)))
			}
			h.noClaim("w1", now.Add(time.Hour))
		},
		"FailPermanent": func(t *testing.T, h *harness) {
			h.insert("job-1")
			j := h.claim("w1", at(time.Minute))
			got := h.fail(j, at(2*time.Minute), "no face found", false)
			eq(t, "state", got.State, protocol.JobFailed)
			eq(t, "failures", got.Failures, 1)
			eq(t, "error", got.Error, "permanent failure: no face found")
			eq(t, "finished", got.FinishedAt, ptr(at(2*time.Minute)))
			eq(t, "attempt error", h.attempts("job-1")[0].Error, "no face found")
		},
		"Release": func(t *testing.T, h *harness) {
			h.insert("job-1")
			h.register("w1", base())
			j := h.claim("w1", at(time.Minute))
			now := at(2 * time.Minute)
			got, err := h.s.JobRelease(h.ctx, &store.JobReleaseParams{AttemptParams: ref(j, now), Reason: "worker draining", Backoff: linear})
			if err != nil {
				t.Fatal(err)
			}
			eq(t, "state", got.State, protocol.JobQueued)
			eq(t, "interruptions", got.Interruptions, 1)
			eq(t, "failures", got.Failures, 0)
			eq(t, "error", got.Error, "worker draining")
			eq(t, "run after", got.RunAfter, now.Add(linear(1)))
			eq(t, "attempts", h.attempts("job-1"), []*store.Attempt{{
				JobID: "job-1", Number: 1, WorkerID: "w1", Outcome: protocol.OutcomeReleased,
				Error: "worker draining", StartedAt: at(time.Minute), EndedAt: ptr(now),
			}})
			eq(t, "worker job cleared", h.worker("w1").JobID, "")
		},
		"ReleaseBudget": func(t *testing.T, h *harness) {
			h.insert("job-1", func(p *store.JobInsertParams) { p.MaxInterruptions = 2 })
			now := at(time.Minute)
			var got *store.Job
			for range 2 {
				j := h.claim("w1", now)
				var err error
				got, err = h.s.JobRelease(h.ctx, &store.JobReleaseParams{AttemptParams: ref(j, now)})
				if err != nil {
					t.Fatal(err)
				}
			}
			eq(t, "state", got.State, protocol.JobFailed)
			eq(t, "error", got.Error, "interrupted 2 times (budget exhausted); last: released")
			eq(t, "finished", got.FinishedAt, ptr(now))
			as := h.attempts("job-1")
			eq(t, "outcomes", []protocol.AttemptOutcome{as[0].Outcome, as[1].Outcome},
				[]protocol.AttemptOutcome{protocol.OutcomeReleased, protocol.OutcomeReleased})
		},
	}
}

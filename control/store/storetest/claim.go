package storetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/protocol"
)

func claimTests() map[string]func(t *testing.T, h *harness) {
	return map[string]func(t *testing.T, h *harness){
		"Effects": func(t *testing.T, h *harness) {
			h.insert("job-1")
			h.register("w1", at(time.Second))
			now := at(time.Minute)
			p := claimParams("w1", now)
			j, err := h.s.JobClaim(h.ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			eq(t, "state", j.State, protocol.JobRunning)
			eq(t, "attempt", j.Attempt, 1)
			eq(t, "token", j.Token, p.Token)
			eq(t, "worker", j.WorkerID, "w1")
			eq(t, "lease", j.LeaseExpiresAt, ptr(now.Add(lease)))
			eq(t, "progress", j.Progress, nil)
			eq(t, "progress at", j.ProgressAt, ptr(now))
			eq(t, "updated at", j.UpdatedAt, now)
			eq(t, "stored job", h.job("job-1"), j)
			eq(t, "attempts", h.attempts("job-1"), []*store.Attempt{{
				JobID: "job-1", Number: 1, WorkerID: "w1", Outcome: protocol.OutcomeRunning, StartedAt: now,
			}})
			w := h.worker("w1")
			eq(t, "worker job", w.JobID, "job-1")
			eq(t, "worker attempt", w.Attempt, 1)
			eq(t, "worker status", w.Status, protocol.WorkerBusy)
		},
		"WithoutRegistryEntry": func(t *testing.T, h *harness) {
			h.insert("job-1")
			j := h.claim("ghost", at(time.Minute))
			eq(t, "worker", j.WorkerID, "ghost")
			if _, err := h.s.WorkerGet(h.ctx, "ghost"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("a claim created a registry entry: %v", err)
			}
		},
		"NoJob": func(t *testing.T, h *harness) {
			h.noClaim("w1", base())
			j := h.insert("job-1")
			h.claim("w1", base())
			h.noClaim("w2", base())
			eq(t, "job after", h.job(j.ID).WorkerID, "w1")
		},
		"OrderPriority": func(t *testing.T, h *harness) {
			h.insert("low", func(p *store.JobInsertParams) { p.Priority = -5 })
			h.insert("mid", func(p *store.JobInsertParams) { p.Priority = 0; p.Now = at(time.Second) })
			h.insert("high", func(p *store.JobInsertParams) { p.Priority = 10; p.Now = at(2 * time.Second) })
			now := at(time.Minute)
			eq(t, "1st", h.claim("w1", now).ID, "high")
			eq(t, "2nd", h.claim("w2", now).ID, "mid")
			eq(t, "3rd", h.claim("w3", now).ID, "low")
		},
		"OrderAge": func(t *testing.T, h *harness) {
			h.insert("b-old")
			h.insert("a-new", func(p *store.JobInsertParams) { p.Now = at(time.Second) })
			h.insert("c-old") // same time as b-old: id breaks the tie
			now := at(time.Minute)
			eq(t, "1st", h.claim("w1", now).ID, "b-old")
			eq(t, "2nd", h.claim("w2", now).ID, "c-old")
			eq(t, "3rd", h.claim("w3", now).ID, "a-new")
		},
		"OrderCachedAvatar": func(t *testing.T, h *harness) {
			h.insert("old", func(p *store.JobInsertParams) { p.AvatarID = "alice" })
			h.insert("cached", func(p *store.JobInsertParams) { p.AvatarID = "bob"; p.Now = at(time.Second) })
			h.insert("urgent", func(p *store.JobInsertParams) { p.AvatarID = "carol"; p.Priority = 1; p.Now = at(2 * time.Second) })
			cache := func(p *store.JobClaimParams) { p.CachedAvatars = []string{"dave", "bob"} }
			now := at(time.Minute)
			// Priority first, then the cached avatar, then age.
			eq(t, "1st", h.claim("w1", now, cache).ID, "urgent")
			eq(t, "2nd", h.claim("w2", now, cache).ID, "cached")
			eq(t, "3rd", h.claim("w3", now, cache).ID, "old")
		},
		"OrderCachedAvatarLookahead": func(t *testing.T, h *harness) {
			// The preference looks at the top priority's first
			// CachedAvatarLookahead claimable jobs: bob's job, right
			// behind them, is not preferred until one of them is taken.
			n := store.CachedAvatarLookahead
			for i := range n {
				h.insert(fmt.Sprintf("alice-%04d", i), func(p *store.JobInsertParams) {
					p.AvatarID = "alice"
					p.Now = at(time.Duration(i) * time.Millisecond)
				})
			}
			h.insert("bob", func(p *store.JobInsertParams) { p.AvatarID = "bob"; p.Now = at(time.Second) })
			h.insert("bob-low", func(p *store.JobInsertParams) { p.AvatarID = "bob"; p.Priority = -1 })
			cache := func(p *store.JobClaimParams) { p.CachedAvatars = []string{"bob"} }
			now := at(time.Minute)
			eq(t, "1st", h.claim("w1", now, cache).ID, "alice-0000")
			eq(t, "2nd", h.claim("w2", now, cache).ID, "bob")
			eq(t, "3rd", h.claim("w3", now, cache).ID, "alice-0001")
		},
		"OrderCachedAvatarOtherWorker": func(t *testing.T, h *harness) {
			h.insert("old", func(p *store.JobInsertParams) { p.AvatarID = "alice" })
			h.insert("new", func(p *store.JobInsertParams) { p.AvatarID = "bob"; p.Now = at(time.Second) })
			// A worker without bob cached takes the oldest.
			eq(t, "claim", h.claim("w1", at(time.Minute)).ID, "old")
		},
		"RunAfter": func(t *testing.T, h *harness) {
			j := h.insert("job-1")
			j = h.claim("w1", at(time.Second))
			j = h.fail(j, at(2*time.Second), "gpu fell off the bus", true) // backoff linear(1) = 1m
			eq(t, "run after", j.RunAfter, at(2*time.Second+time.Minute))
			h.noClaim("w2", at(time.Minute))
			h.noClaim("w2", at(time.Minute+2*time.Second-time.Microsecond))
			eq(t, "claimable at run after", h.claim("w2", at(time.Minute+2*time.Second)).ID, "job-1")
		},
		"WorkerTypePinning": func(t *testing.T, h *harness) {
			h.insert("transient-job", func(p *store.JobInsertParams) { p.WorkerType = protocol.WorkerTransient })
			h.insert("main-job", func(p *store.JobInsertParams) { p.WorkerType = protocol.WorkerMain; p.Now = at(time.Second) })
			h.insert("any-job", func(p *store.JobInsertParams) { p.Now = at(2 * time.Second) })
			now := at(time.Minute)
			mainW := func(p *store.JobClaimParams) { p.WorkerType = protocol.WorkerMain }
			transientW := func(p *store.JobClaimParams) { p.WorkerType = protocol.WorkerTransient }
			untyped := func(p *store.JobClaimParams) { p.WorkerType = "" }
			eq(t, "main worker", h.claim("m1", now, mainW).ID, "main-job")
			eq(t, "untyped worker", h.claim("u1", now, untyped).ID, "any-job")
			h.noClaim("m2", now, mainW)
			h.noClaim("u2", now, untyped)
			eq(t, "transient worker", h.claim("t1", now, transientW).ID, "transient-job")
		},
		"ReclaimInterruptsHeldAttempt": func(t *testing.T, h *harness) {
			h.insert("job-1")
			h.insert("job-2", func(p *store.JobInsertParams) { p.Now = at(time.Second) })
			h.register("w1", at(time.Second))
			first := h.claim("w1", at(time.Minute))
			eq(t, "first claim", first.ID, "job-1")
			// w1 restarted and claims again: job-1's attempt is taken away
			// and job-1 waits out its backoff, so w1 gets job-2.
			now := at(2 * time.Minute)
			second := h.claim("w1", now)
			eq(t, "second claim", second.ID, "job-2")
			old := h.job("job-1")
			eq(t, "old state", old.State, protocol.JobQueued)
			eq(t, "old interruptions", old.Interruptions, 1)
			eq(t, "old error", old.Error, "worker claimed again")
			eq(t, "old token", old.Token, "")
			eq(t, "old lease", old.LeaseExpiresAt, nil)
			eq(t, "old run after", old.RunAfter, now.Add(linear(1)))
			eq(t, "old attempts", h.attempts("job-1"), []*store.Attempt{{
				JobID: "job-1", Number: 1, WorkerID: "w1", Outcome: protocol.OutcomeInterrupted,
				Error: "worker claimed again", StartedAt: at(time.Minute), EndedAt: ptr(now),
			}})
			w := h.worker("w1")
			eq(t, "worker points at", [2]any{w.JobID, w.Attempt}, [2]any{"job-2", 1})
			// The old token is dead.
			_, err := h.s.JobProgress(h.ctx, &store.JobProgressParams{AttemptParams: ref(first, now), LeaseDuration: lease})
			isErr(t, "progress with the old attempt", err, store.ErrStaleAttempt)
		},
		"ReclaimWithNothingLeft": func(t *testing.T, h *harness) {
			h.insert("job-1", func(p *store.JobInsertParams) { p.MaxInterruptions = 1 })
			h.claim("w1", at(time.Minute))
			// The claim finds no job, but the interruption stands, and with
			// a budget of 1 it ends the job.
			h.noClaim("w1", at(2*time.Minute))
			j := h.job("job-1")
			eq(t, "state", j.State, protocol.JobFailed)
			eq(t, "error", j.Error, "interrupted 1 times (budget exhausted); last: worker claimed again")
			eq(t, "finished at", j.FinishedAt, ptr(at(2*time.Minute)))
		},
		"Invalid": func(t *testing.T, h *harness) {
			h.insert("job-1")
			for name, mutate := range map[string]func(p *store.JobClaimParams){
				"no worker":   func(p *store.JobClaimParams) { p.WorkerID = "" },
				"no token":    func(p *store.JobClaimParams) { p.Token = "" },
				"no lease":    func(p *store.JobClaimParams) { p.LeaseDuration = 0 },
				"worker type": func(p *store.JobClaimParams) { p.WorkerType = "gpu" },
			} {
				p := claimParams("w1", base())
				mutate(p)
				_, err := h.s.JobClaim(h.ctx, p)
				isSomeErr(t, name, err)
				if errors.Is(err, store.ErrNoJob) {
					t.Errorf("%s: got ErrNoJob, want a validation error", name)
				}
			}
			eq(t, "job untouched", h.job("job-1").State, protocol.JobQueued)
		},
	}
}

package storetest

import (
	"testing"
	"time"

	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/protocol"
)

func heartbeatTests() map[string]func(t *testing.T, h *harness) {
	return map[string]func(t *testing.T, h *harness){
		"Registers": func(t *testing.T, h *harness) {
			check := &protocol.SelfCheck{Engine: "musetalk", Device: "cuda:0", FreeDiskBytes: 1 << 30, WeightsPresent: true}
			r := h.heartbeat(&store.WorkerHeartbeatParams{
				ID: "w1", WorkerType: protocol.WorkerTransient, Provider: "vast", GPUClass: "rtx3090",
				Status: protocol.WorkerIdle, Version: "1.2.3", CachedAvatars: []string{"a1", "a2"}, SelfCheck: check, Now: base(),
			})
			want := &store.Worker{
				ID: "w1", WorkerType: protocol.WorkerTransient, Provider: "vast", GPUClass: "rtx3090",
				Status: protocol.WorkerIdle, Version: "1.2.3", FirstSeen: base(), LastSeen: base(),
				CachedAvatars: []string{"a1", "a2"}, SelfCheck: check,
			}
			eq(t, "worker", r.Worker, want)
			eq(t, "cancel", r.Cancel, nil)
			eq(t, "lease", r.LeaseExpiresAt, nil)
			eq(t, "WorkerGet", h.worker("w1"), want)
		},
		"Updates": func(t *testing.T, h *harness) {
			check := &protocol.SelfCheck{Engine: "musetalk", Device: "cpu"}
			h.heartbeat(&store.WorkerHeartbeatParams{ID: "w1", Provider: "salad", GPUClass: "rtx4090", SelfCheck: check,
				CachedAvatars: []string{"a1"}, Now: base()})
			now := at(10 * time.Second)
			r := h.heartbeat(&store.WorkerHeartbeatParams{ID: "w1", Provider: "salad", GPUClass: "rtx4090",
				Status: protocol.WorkerDraining, Version: "2", Now: now})
			w := r.Worker
			eq(t, "first seen kept", w.FirstSeen, base())
			eq(t, "last seen", w.LastSeen, now)
			eq(t, "status", w.Status, protocol.WorkerDraining)
			eq(t, "version", w.Version, "2")
			eq(t, "cached avatars as reported", w.CachedAvatars, nil)
			eq(t, "self-check kept when not sent", w.SelfCheck, check)
		},
		"OfflineComesBack": func(t *testing.T, h *harness) {
			h.register("w1", base())
			res := h.sweep(&store.SweepParams{OfflineAfter: time.Minute, Now: at(2 * time.Minute)})
			eq(t, "offline", res.WorkersOffline, []string{"w1"})
			eq(t, "status", h.worker("w1").Status, protocol.WorkerOffline)
			r := h.heartbeat(&store.WorkerHeartbeatParams{ID: "w1", Status: protocol.WorkerBusy, Now: at(3 * time.Minute)})
			eq(t, "status after heartbeat", r.Worker.Status, protocol.WorkerBusy)
		},
		// A heartbeat built before a claim may arrive after it, saying idle
		// with no job: the worker holds an attempt, so it stays busy until
		// the attempt ends.
		"IdleHeartbeatKeepsHolderBusy": func(t *testing.T, h *harness) {
			h.insert("job-1")
			h.register("w1", base())
			j := h.claim("w1", at(time.Second))
			r := h.heartbeat(&store.WorkerHeartbeatParams{ID: "w1", Status: protocol.WorkerIdle, Now: at(2 * time.Second)})
			eq(t, "status while holding", r.Worker.Status, protocol.WorkerBusy)
			eq(t, "still points at", [2]any{r.Worker.JobID, r.Worker.Attempt}, [2]any{"job-1", 1})
			r = h.heartbeat(&store.WorkerHeartbeatParams{ID: "w1", Status: protocol.WorkerDraining, Now: at(3 * time.Second)})
			eq(t, "draining is kept", r.Worker.Status, protocol.WorkerDraining)
			h.complete(j, at(4*time.Second))
			r = h.heartbeat(&store.WorkerHeartbeatParams{ID: "w1", Status: protocol.WorkerIdle, Now: at(5 * time.Second)})
			eq(t, "status after the attempt ended", r.Worker.Status, protocol.WorkerIdle)
		},
		"ExtendsLease": func(t *testing.T, h *harness) {
			h.insert("job-1")
			h.register("w1", base())
			j := h.claim("w1", at(time.Minute))
			now := at(time.Minute + 20*time.Second)
			r := h.heartbeat(&store.WorkerHeartbeatParams{ID: "w1", Status: protocol.WorkerBusy, JobID: j.ID, Attempt: 1,
				LeaseDuration: time.Minute, Now: now})
			eq(t, "cancel", r.Cancel, nil)
			eq(t, "lease", r.LeaseExpiresAt, ptr(now.Add(time.Minute)))
			got := h.job("job-1")
			eq(t, "stored lease", got.LeaseExpiresAt, ptr(now.Add(time.Minute)))
			eq(t, "progress at (no progress sent)", got.ProgressAt, ptr(at(time.Minute)))
			eq(t, "worker points at", [2]any{r.Worker.JobID, r.Worker.Attempt}, [2]any{"job-1", 1})
		},
		// A heartbeat built before a progress post may arrive after it: within
		// a stage, fewer frames done is a late report and changes nothing.
		"LateProgressIgnored": func(t *testing.T, h *harness) {
			h.insert("job-1")
			j := h.claim("w1", at(time.Minute))
			hb := func(now time.Time, pr protocol.Progress) {
				h.heartbeat(&store.WorkerHeartbeatParams{ID: "w1", Status: protocol.WorkerBusy, JobID: j.ID, Attempt: j.Attempt,
					Progress: &pr, LeaseDuration: time.Minute, Now: now})
			}
			done := protocol.Progress{Stage: "generate", FramesDone: 10, FramesTotal: 10}
			hb(at(time.Minute+time.Second), done)
			hb(at(time.Minute+2*time.Second), protocol.Progress{Stage: "generate", FramesDone: 3, FramesTotal: 10})
			got := h.job("job-1")
			eq(t, "progress kept", got.Progress, &done)
			eq(t, "progress at kept", got.ProgressAt, ptr(at(time.Minute+time.Second)))
			eq(t, "lease still extended", got.LeaseExpiresAt, ptr(at(2*time.Minute+2*time.Second)))
			// A new stage starts its own count.
			next := protocol.Progress{Stage: "encode", FramesDone: 1, FramesTotal: 10}
			hb(at(time.Minute+3*time.Second), next)
			eq(t, "next stage", h.job("job-1").Progress, &next)
		},
		"RecordsProgress": func(t *testing.T, h *harness) {
			h.insert("job-1")
			j := h.claim("w1", at(time.Minute))
			pr := protocol.Progress{Stage: "generate", FramesDone: 5, FramesTotal: 50}
			t1 := at(time.Minute + 5*time.Second)
			hb := func(now time.Time, pr protocol.Progress) {
				h.heartbeat(&store.WorkerHeartbeatParams{ID: "w1", Status: protocol.WorkerBusy, JobID: j.ID, Attempt: j.Attempt, Progress: &pr, Now: now})
			}
			hb(t1, pr)
			got := h.job("job-1")
			eq(t, "progress", got.Progress, &pr)
			eq(t, "progress at", got.ProgressAt, ptr(t1))
			// Unchanged progress: ProgressAt stays, the lease moves.
			t2 := t1.Add(5 * time.Second)
			hb(t2, pr)
			got = h.job("job-1")
			eq(t, "progress at after the same progress", got.ProgressAt, ptr(t1))
			eq(t, "lease", got.LeaseExpiresAt, ptr(t2.Add(lease)))
			pr.FramesDone++
			t3 := t2.Add(5 * time.Second)
			hb(t3, pr)
			eq(t, "progress at after a change", h.job("job-1").ProgressAt, ptr(t3))
		},
		"RegistersWorkerThatClaimedFirst": func(t *testing.T, h *harness) {
			h.insert("job-1")
			j := h.claim("w1", at(time.Minute))
			r := h.heartbeat(&store.WorkerHeartbeatParams{ID: "w1", Status: protocol.WorkerBusy, JobID: j.ID, Now: at(time.Minute)})
			eq(t, "cancel (attempt 0 means the current one)", r.Cancel, nil)
			eq(t, "worker points at", [2]any{r.Worker.JobID, r.Worker.Attempt}, [2]any{"job-1", 1})
		},
		"CancelOrders": func(t *testing.T, h *harness) {
			h.insert("queued")
			h.insert("taken", func(p *store.JobInsertParams) { p.Now = at(time.Second) })
			h.insert("done", func(p *store.JobInsertParams) { p.Now = at(2 * time.Second) })
			h.insert("failed", func(p *store.JobInsertParams) { p.Now = at(3 * time.Second) })
			h.register("w2", base())
			now := at(time.Minute)
			// "queued": w1 held attempt 1, which was released.
			q := h.claim("w1", now, func(p *store.JobClaimParams) { p.Backoff = func(int) time.Duration { return time.Hour } })
			if _, err := h.s.JobRelease(h.ctx, &store.JobReleaseParams{AttemptParams: ref(q, now), Backoff: func(int) time.Duration { return time.Hour }}); err != nil {
				t.Fatal(err)
			}
			// "taken": w2 holds it.
			eq(t, "w2 claims", h.claim("w2", now).ID, "taken")
			h.complete(h.claim("w3", now), now)               // done
			h.fail(h.claim("w3", now), now, "no face", false) // failed
			cases := []struct {
				jobID   string
				attempt int
				want    string
			}{
				{"nope", 1, "job not found"},
				{"queued", 1, "attempt 1 is no longer current (job is queued, attempt 1)"},
				{"taken", 1, "attempt 1 belongs to worker w2"},
				{"taken", 2, "attempt 2 is no longer current (job is running, attempt 1)"},
				{"done", 1, "job already succeeded"},
				{"failed", 1, "job already failed"},
			}
			for _, c := range cases {
				before := h.snapshot("taken", "w2")
				r := h.heartbeat(&store.WorkerHeartbeatParams{ID: "w9", Status: protocol.WorkerBusy, JobID: c.jobID, Attempt: c.attempt, Now: now})
				eq(t, "cancel order for "+c.jobID, r.Cancel, &protocol.CancelOrder{JobID: c.jobID, Attempt: c.attempt, Reason: c.want})
				eq(t, "lease for "+c.jobID, r.LeaseExpiresAt, nil)
				h.unchanged("heartbeat about "+c.jobID, before)
			}
			eq(t, "worker w9 registered anyway", h.worker("w9").Status, protocol.WorkerBusy)
		},
		"Invalid": func(t *testing.T, h *harness) {
			for name, p := range map[string]*store.WorkerHeartbeatParams{
				"empty id":       {Status: protocol.WorkerIdle, Now: base()},
				"offline status": {ID: "w1", Status: protocol.WorkerOffline, Now: base()},
				"unknown status": {ID: "w1", Status: "sleeping", Now: base()},
				"worker type":    {ID: "w1", Status: protocol.WorkerIdle, WorkerType: "gpu", Now: base()},
				"job, no lease":  {ID: "w1", Status: protocol.WorkerIdle, JobID: "j", Now: base()},
				"zero now":       {ID: "w1", Status: protocol.WorkerIdle},
			} {
				_, err := h.s.WorkerHeartbeat(h.ctx, p)
				isSomeErr(t, name, err)
			}
			ws, err := h.s.WorkerList(h.ctx, &store.WorkerListParams{})
			if err != nil {
				t.Fatal(err)
			}
			eq(t, "workers after invalid heartbeats", len(ws), 0)
		},
	}
}

package storetest

import (
	"testing"
	"time"

	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/protocol"
)

func workerTests() map[string]func(t *testing.T, h *harness) {
	return map[string]func(t *testing.T, h *harness){
		"GetNotFound": func(t *testing.T, h *harness) {
			_, err := h.s.WorkerGet(h.ctx, "nope")
			isErr(t, "WorkerGet", err, store.ErrNotFound)
			_, err = h.s.WorkerSetDrain(h.ctx, "nope", true)
			isErr(t, "WorkerSetDrain", err, store.ErrNotFound)
		},
		"Drain": func(t *testing.T, h *harness) {
			h.register("w1", base())
			w, err := h.s.WorkerSetDrain(h.ctx, "w1", true)
			if err != nil {
				t.Fatal(err)
			}
			eq(t, "drain", w.DrainRequested, true)
			// Heartbeats keep the operator's request.
			r := h.heartbeat(&store.WorkerHeartbeatParams{ID: "w1", Status: protocol.WorkerIdle, Now: at(time.Second)})
			eq(t, "drain after a heartbeat", r.Worker.DrainRequested, true)
			eq(t, "stored", h.worker("w1").DrainRequested, true)
			w, err = h.s.WorkerSetDrain(h.ctx, "w1", false)
			if err != nil {
				t.Fatal(err)
			}
			eq(t, "cleared", w.DrainRequested, false)
			eq(t, "stored after clear", h.worker("w1").DrainRequested, false)
		},
		"List": func(t *testing.T, h *harness) {
			hb := func(id string, wt protocol.WorkerType, st protocol.WorkerStatus) {
				h.heartbeat(&store.WorkerHeartbeatParams{ID: id, WorkerType: wt, Status: st, Now: base()})
			}
			hb("w-c", protocol.WorkerMain, protocol.WorkerBusy)
			hb("w-a", protocol.WorkerTransient, protocol.WorkerIdle)
			hb("w-b", protocol.WorkerMain, protocol.WorkerIdle)
			hb("W-d", protocol.WorkerMain, protocol.WorkerDraining) // byte order: upper case first
			ids := func(p *store.WorkerListParams) []string {
				t.Helper()
				ws, err := h.s.WorkerList(h.ctx, p)
				if err != nil {
					t.Fatal(err)
				}
				var out []string
				for _, w := range ws {
					out = append(out, w.ID)
				}
				return out
			}
			eq(t, "all", ids(&store.WorkerListParams{}), []string{"W-d", "w-a", "w-b", "w-c"})
			eq(t, "idle", ids(&store.WorkerListParams{Status: protocol.WorkerIdle}), []string{"w-a", "w-b"})
			eq(t, "main", ids(&store.WorkerListParams{WorkerType: protocol.WorkerMain}), []string{"W-d", "w-b", "w-c"})
			eq(t, "idle main", ids(&store.WorkerListParams{Status: protocol.WorkerIdle, WorkerType: protocol.WorkerMain}), []string{"w-b"})
			eq(t, "offline", ids(&store.WorkerListParams{Status: protocol.WorkerOffline}), []string(nil))
		},
	}
}

func countTests() map[string]func(t *testing.T, h *harness) {
	return map[string]func(t *testing.T, h *harness){
		"Empty": func(t *testing.T, h *harness) {
			jobs, err := h.s.JobCountByState(h.ctx)
			if err != nil {
				t.Fatal(err)
			}
			eq(t, "jobs", jobs, map[protocol.JobState]int{
				protocol.JobQueued: 0, protocol.JobRunning: 0, protocol.JobSucceeded: 0, protocol.JobFailed: 0, protocol.JobCancelled: 0,
			})
			attempts, err := h.s.AttemptCountByOutcome(h.ctx)
			if err != nil {
				t.Fatal(err)
			}
			eq(t, "attempts", attempts, map[protocol.AttemptOutcome]int{
				protocol.OutcomeRunning: 0, protocol.OutcomeSucceeded: 0, protocol.OutcomeFailed: 0,
				protocol.OutcomeInterrupted: 0, protocol.OutcomeReleased: 0, protocol.OutcomeCancelled: 0,
			})
			workers, err := h.s.WorkerCountByStatus(h.ctx)
			if err != nil {
				t.Fatal(err)
			}
			eq(t, "workers", workers, map[protocol.WorkerStatus]int{
				protocol.WorkerIdle: 0, protocol.WorkerBusy: 0, protocol.WorkerDraining: 0, protocol.WorkerOffline: 0,
			})
		},
		"Mixed": func(t *testing.T, h *harness) {
			for i, id := range []string{"a", "b", "c", "d", "e", "f"} {
				h.insert(id, func(p *store.JobInsertParams) { p.Now = at(time.Duration(i) * time.Second) })
			}
			now := at(time.Minute)
			h.register("w1", now)
			h.register("w2", now)
			h.register("w3", now)
			h.complete(h.claim("x1", now), now)            // a: succeeded
			h.fail(h.claim("x1", now), now, "boom", false) // b: failed
			j := h.claim("x1", now)                        // c: released, queued again
			if _, err := h.s.JobRelease(h.ctx, &store.JobReleaseParams{AttemptParams: ref(j, now), Backoff: linear}); err != nil {
				t.Fatal(err)
			}
			h.claim("w1", now)                                        // d: running
			h.claim("w2", now)                                        // e: running
			h.claim("w2", now)                                        // f running; e interrupted, queued
			if _, err := h.s.JobCancel(h.ctx, "f", now); err != nil { // f: cancelled
				t.Fatal(err)
			}
			if _, err := h.s.WorkerSetDrain(h.ctx, "w3", true); err != nil {
				t.Fatal(err)
			}
			h.heartbeat(&store.WorkerHeartbeatParams{ID: "w3", Status: protocol.WorkerDraining, Now: now})
			jobs, err := h.s.JobCountByState(h.ctx)
			if err != nil {
				t.Fatal(err)
			}
			eq(t, "jobs", jobs, map[protocol.JobState]int{
				protocol.JobQueued: 2, protocol.JobRunning: 1, protocol.JobSucceeded: 1, protocol.JobFailed: 1, protocol.JobCancelled: 1,
			})
			attempts, err := h.s.AttemptCountByOutcome(h.ctx)
			if err != nil {
				t.Fatal(err)
			}
			eq(t, "attempts", attempts, map[protocol.AttemptOutcome]int{
				protocol.OutcomeRunning: 1, protocol.OutcomeSucceeded: 1, protocol.OutcomeFailed: 1,
				protocol.OutcomeInterrupted: 1, protocol.OutcomeReleased: 1, protocol.OutcomeCancelled: 1,
			})
			workers, err := h.s.WorkerCountByStatus(h.ctx)
			if err != nil {
				t.Fatal(err)
			}
			// w2's job was cancelled: it is idle again until it says otherwise.
			eq(t, "workers", workers, map[protocol.WorkerStatus]int{
				protocol.WorkerIdle: 1, protocol.WorkerBusy: 1, protocol.WorkerDraining: 1, protocol.WorkerOffline: 0,
			})
		},
	}
}

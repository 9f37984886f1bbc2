package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/protocol"
)

// Sizes of the exactly-once proof.
const (
	ProofJobs     = 1000
	ProofClaimers = 50
)

func concurrencyTests() map[string]func(t *testing.T, h *harness) {
	return map[string]func(t *testing.T, h *harness){
		"ClaimExactlyOnce": func(t *testing.T, h *harness) {
			InsertJobs(t, h.s, ProofJobs)
			ClaimAll(t, []store.Store{h.s}, ProofJobs, ProofClaimers)
		},
		"IdempotentInsertRace": func(t *testing.T, h *harness) {
			// Ten submitters send the same request at once: one job.
			var wg sync.WaitGroup
			jobs := make([]*store.Job, 10)
			errs := make([]error, 10)
			for i := range jobs {
				wg.Go(func() {
					jobs[i], _, errs[i] = h.s.JobInsert(h.ctx, &store.JobInsertParams{
						ID: idOf("job", i), IdempotencyKey: "same", AvatarKey: "a", AudioKey: "b",
						MaxInterruptions: 1, MaxFailures: 1, Now: base(),
					})
				})
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("insert %d: %v", i, err)
				}
				eq(t, "job of insert", jobs[i].ID, jobs[0].ID)
			}
			eq(t, "jobs stored", len(list(t, h, &store.JobListParams{})), 1)
		},
		"HeartbeatsAtOnce": heartbeatsAtOnce,
		"ClaimsAtOnce":     claimsAtOnce,
		"CompletesAtOnce":  completesAtOnce,
		"ProgressRacesSweep": func(t *testing.T, h *harness) {
			// Progress and sweeps at once neither fail nor take away an
			// attempt whose lease is good.
			h.insert("job-1")
			j := h.claim("w1", base(), func(p *store.JobClaimParams) { p.LeaseDuration = time.Hour })
			var wg sync.WaitGroup
			wg.Go(func() {
				for i := 1; i <= 50; i++ {
					now := at(time.Duration(i) * time.Second)
					_, err := h.s.JobProgress(h.ctx, &store.JobProgressParams{AttemptParams: ref(j, now),
						Progress: protocol.Progress{FramesDone: i}, LeaseDuration: time.Hour})
					if err != nil {
						t.Errorf("progress %d: %v", i, err)
						return
					}
				}
			})
			wg.Go(func() {
				for i := 1; i <= 50; i++ {
					if _, err := h.s.Sweep(h.ctx, &store.SweepParams{Now: at(time.Duration(i) * time.Second)}); err != nil {
						t.Errorf("sweep %d: %v", i, err)
						return
					}
				}
			})
			wg.Wait()
			eq(t, "state", h.job("job-1").State, protocol.JobRunning)
		},
	}
}

// InsertJobs inserts n queued jobs, job-00000 ... , all at the suite's
// base time, from a few goroutines.
func InsertJobs(t *testing.T, s store.Store, n int) {
	t.Helper()
	const inserters = 4
	var wg sync.WaitGroup
	errs := make(chan error, inserters)
	for w := range inserters {
		wg.Go(func() {
			for i := w; i < n; i += inserters {
				_, _, err := s.JobInsert(context.Background(), &store.JobInsertParams{
					ID: idOf("job", i), AvatarKey: "a", AudioKey: "b", AvatarID: idOf("avatar", i%7),
					Priority: i % 3, MaxInterruptions: 1, MaxFailures: 1, Now: base(),
				})
				if err != nil {
					errs <- fmt.Errorf("inserting job %d: %w", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// ClaimAll runs claimers goroutines, spread over the stores (replicas of
// one database), each with its own worker id, looping claim-then-complete
// until ErrNoJob. It fails the test unless each of the n jobs was claimed
// exactly once and succeeded with exactly one attempt.
func ClaimAll(t *testing.T, stores []store.Store, n, claimers int) {
	t.Helper()
	ctx := context.Background()
	var (
		mu      sync.Mutex
		claimed = map[string][]string{} // job -> workers
		wg      sync.WaitGroup
	)
	errs := make(chan error, claimers)
	for c := range claimers {
		s := stores[c%len(stores)]
		worker := idOf("claimer", c)
		wg.Go(func() {
			for i := 0; ; i++ {
				now := at(time.Minute + time.Duration(i)*time.Millisecond)
				j, err := s.JobClaim(ctx, &store.JobClaimParams{
					WorkerID: worker, Token: fmt.Sprintf("%s-%d", worker, i), LeaseDuration: time.Hour,
					CachedAvatars: []string{idOf("avatar", c%7)}, Now: now,
				})
				if errors.Is(err, store.ErrNoJob) {
					return
				}
				if err != nil {
					errs <- fmt.Errorf("%s: claim: %w", worker, err)
					return
				}
				mu.Lock()
				claimed[j.ID] = append(claimed[j.ID], worker)
				mu.Unlock()
				if _, err := s.JobComplete(ctx, &store.JobCompleteParams{AttemptParams: ref(j, now), OutputKey: outputKey(j)}); err != nil {
					errs <- fmt.Errorf("%s: complete %s: %w", worker, j.ID, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	twice := 0
	for id, ws := range claimed {
		if len(ws) != 1 {
			twice++
			if twice <= 10 {
				t.Errorf("job %s claimed %d times, by %v", id, len(ws), ws)
			}
		}
	}
	missed := 0
	for i := range n {
		if _, ok := claimed[idOf("job", i)]; !ok {
			missed++
			if missed <= 10 {
				t.Errorf("job %s never claimed", idOf("job", i))
			}
		}
	}
	if twice > 0 || missed > 0 || len(claimed) != n {
		t.Fatalf("%d jobs: %d claimed, %d more than once, %d never", n, len(claimed), twice, missed)
	}
	counts, err := stores[0].JobCountByState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "succeeded jobs", counts[protocol.JobSucceeded], n)
	outcomes, err := stores[0].AttemptCountByOutcome(ctx)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "attempts", outcomes, map[protocol.AttemptOutcome]int{
		protocol.OutcomeRunning: 0, protocol.OutcomeSucceeded: n, protocol.OutcomeFailed: 0,
		protocol.OutcomeInterrupted: 0, protocol.OutcomeReleased: 0, protocol.OutcomeCancelled: 0,
	})
}

func idOf(prefix string, i int) string { return fmt.Sprintf("%s-%05d", prefix, i) }

// heartbeatsAtOnce sends many heartbeats at the same time (stores may
// save those that arrive together together): workers that hold their
// attempt, one whose job was cancelled, one naming a job that does not
// exist, new idle workers, and workers that send two at once. Each answer
// and the stored state must be what one heartbeat at a time gives.
func heartbeatsAtOnce(t *testing.T, h *harness) {
	const holders, idle, rounds = 30, 20, 4
	jobs := make([]*store.Job, holders)
	for i := range holders {
		h.insert(idOf("job", i))
		jobs[i] = h.claim(idOf("holder", i), base())
	}
	if _, err := h.s.JobCancel(h.ctx, jobs[5].ID, base()); err != nil {
		t.Fatal(err)
	}
	type call struct {
		p   *store.WorkerHeartbeatParams
		res *store.HeartbeatResult
		err error
	}
	for round := 1; round <= rounds; round++ {
		now := at(time.Duration(round) * time.Second)
		var calls []*call
		for i, j := range jobs {
			p := &store.WorkerHeartbeatParams{ID: j.WorkerID, WorkerType: protocol.WorkerMain, Status: protocol.WorkerBusy,
				Provider: "p", GPUClass: "g", JobID: j.ID, Attempt: j.Attempt, LeaseDuration: lease, Now: now,
				Progress: &protocol.Progress{Stage: "unet", FramesDone: 10*round + i%2, FramesTotal: 100}}
			calls = append(calls, &call{p: p})
			if i%7 == 0 { // a second, older report of the same worker at once
				q := *p
				q.Progress = &protocol.Progress{Stage: "unet", FramesDone: 10 * round, FramesTotal: 100}
				calls = append(calls, &call{p: &q})
			}
		}
		for i := range idle {
			calls = append(calls, &call{p: &store.WorkerHeartbeatParams{ID: idOf("idle", i), WorkerType: protocol.WorkerMain,
				Status: protocol.WorkerIdle, CachedAvatars: []string{idOf("avatar", i)}, Now: now,
				SelfCheck: &protocol.SelfCheck{Engine: "e", Device: "d"}}})
		}
		calls = append(calls, &call{p: &store.WorkerHeartbeatParams{ID: "lost", WorkerType: protocol.WorkerMain,
			Status: protocol.WorkerBusy, JobID: "no-such-job", Attempt: 1, LeaseDuration: lease, Now: now}})
		var wg sync.WaitGroup
		for _, c := range calls {
			wg.Go(func() { c.res, c.err = h.s.WorkerHeartbeat(h.ctx, c.p) })
		}
		wg.Wait()
		for _, c := range calls {
			if c.err != nil {
				t.Fatalf("round %d: heartbeat of %s: %v", round, c.p.ID, c.err)
			}
			w := c.res.Worker
			if w == nil || w.ID != c.p.ID || !w.LastSeen.Equal(now) {
				t.Fatalf("round %d: heartbeat of %s answered worker %s", round, c.p.ID, dump(w))
			}
			switch {
			case c.p.ID == "lost":
				if c.res.Cancel == nil || c.res.Cancel.Reason != "job not found" {
					t.Errorf("round %d: heartbeat naming a missing job: cancel %s", round, dump(c.res.Cancel))
				}
			case c.p.ID == jobs[5].WorkerID:
				if c.res.Cancel == nil || c.res.Cancel.Reason != "job cancelled" || c.res.LeaseExpiresAt != nil {
					t.Errorf("round %d: heartbeat of a cancelled job: %s", round, dump(c.res))
				}
				eq(t, "pointer of the worker whose job was cancelled", w.JobID, "")
			case c.p.JobID != "":
				if c.res.Cancel != nil || c.res.LeaseExpiresAt == nil || !c.res.LeaseExpiresAt.Equal(now.Add(lease)) {
					t.Errorf("round %d: heartbeat of %s holding %s: %s", round, c.p.ID, c.p.JobID, dump(c.res))
				}
				eq(t, "job the holder points at", w.JobID, c.p.JobID)
				eq(t, "status of a holder", w.Status, protocol.WorkerBusy)
			default:
				if c.res.Cancel != nil || c.res.LeaseExpiresAt != nil || w.SelfCheck == nil || len(w.CachedAvatars) != 1 {
					t.Errorf("round %d: idle heartbeat of %s: %s", round, c.p.ID, dump(c.res))
				}
			}
		}
	}
	last := at(rounds * time.Second)
	for i, j := range jobs {
		got := h.job(j.ID)
		if i == 5 {
			eq(t, "cancelled job's state", got.State, protocol.JobCancelled)
			continue
		}
		eq(t, "lease after the heartbeats", *got.LeaseExpiresAt, last.Add(lease))
		// The older report of the same round never rolled progress back.
		eq(t, "progress after the heartbeats", *got.Progress, protocol.Progress{Stage: "unet", FramesDone: 10*rounds + i%2, FramesTotal: 100})
		eq(t, "progress time", *got.ProgressAt, last)
	}
	eq(t, "workers registered", len(workerList(t, h)), holders+idle+1)
}

func workerList(t *testing.T, h *harness) []*store.Worker {
	t.Helper()
	ws, err := h.s.WorkerList(h.ctx, &store.WorkerListParams{})
	if err != nil {
		t.Fatal(err)
	}
	return ws
}

// claimsAtOnce: workers of every type claim at once (where the store
// batches claims, together), three of them while they still hold an
// attempt and some with cached avatars. Each claim gets a job that a
// claim alone could give it: no job twice, the worker types kept, the
// held attempts interrupted, every attempt recorded and every worker
// pointing at its job; and a worker whose cached avatar is on one job
// that nobody else would take gets that job.
func claimsAtOnce(t *testing.T, h *harness) {
	// 12 jobs of each type, main ones oldest; the main and transient
	// ones cycle through avatars a0..a3, the untyped ones have their own.
	n := 0
	for _, wt := range []protocol.WorkerType{protocol.WorkerMain, protocol.WorkerTransient, ""} {
		for i := range 12 {
			name := string(wt)
			if name == "" {
				name = "any"
			}
			h.insert(fmt.Sprintf("job-%s-%02d", name, i), func(p *store.JobInsertParams) {
				p.WorkerType = wt
				p.AvatarID = fmt.Sprintf("a%d", i%4)
				if wt == "" {
					p.AvatarID = fmt.Sprintf("solo-%d", i)
				}
				p.Now = at(time.Duration(n) * time.Millisecond)
			})
			n++
		}
	}
	// Three main workers hold attempts of earlier, urgent jobs.
	for i := range 3 {
		h.insert(fmt.Sprintf("held-%d", i), func(p *store.JobInsertParams) { p.Priority = 5 })
		eq(t, "held job", h.claim(fmt.Sprintf("w-main-%d", i), at(time.Second)).ID, fmt.Sprintf("held-%d", i))
	}
	type claimer struct {
		id     string
		wt     protocol.WorkerType
		cached []string
	}
	var cs []claimer
	for i := range 10 { // 12 main jobs: enough for all, none needs an untyped one
		c := claimer{id: fmt.Sprintf("w-main-%d", i), wt: protocol.WorkerMain}
		if i%2 == 0 {
			c.cached = []string{fmt.Sprintf("a%d", i%4), "elsewhere"}
		}
		cs = append(cs, c)
	}
	for i := range 10 {
		cs = append(cs, claimer{id: fmt.Sprintf("w-transient-%d", i), wt: protocol.WorkerTransient})
	}
	for i := range 6 {
		cs = append(cs, claimer{id: fmt.Sprintf("w-any-%d", i), cached: []string{fmt.Sprintf("solo-%d", 5-i)}})
	}
	for _, c := range cs {
		h.register(c.id, at(time.Second))
	}

	now := at(time.Minute)
	ps := make([]*store.JobClaimParams, len(cs))
	for i, c := range cs {
		ps[i] = claimParams(c.id, now)
		ps[i].WorkerType, ps[i].CachedAvatars = c.wt, c.cached
	}
	got, errs := atOnce(ps, func(p *store.JobClaimParams) (*store.Job, error) { return h.s.JobClaim(h.ctx, p) })

	seen := map[string]string{}
	for i, c := range cs {
		j := got[i]
		if errs[i] != nil {
			t.Fatalf("claim of %s: %v; there were jobs enough for every claim", c.id, errs[i])
		}
		if prev, ok := seen[j.ID]; ok {
			t.Fatalf("job %s claimed by %s and %s", j.ID, prev, c.id)
		}
		seen[j.ID] = c.id
		if j.WorkerType != "" && j.WorkerType != c.wt {
			t.Errorf("%s (type %q) got job %s of type %q", c.id, c.wt, j.ID, j.WorkerType)
		}
		eq(t, "claimed "+j.ID, [4]any{j.State, j.WorkerID, j.Attempt, j.Token}, [4]any{protocol.JobRunning, c.id, 1, claimParams(c.id, now).Token})
		if c.wt == "" {
			eq(t, c.id+"'s job (its cached avatar)", j.AvatarID, c.cached[0])
		}
		as := h.attempts(j.ID)
		eq(t, "attempts of "+j.ID, len(as), 1)
		eq(t, "attempt of "+j.ID, [3]any{as[0].WorkerID, as[0].Outcome, as[0].StartedAt}, [3]any{c.id, protocol.OutcomeRunning, now})
		w := h.worker(c.id)
		eq(t, c.id+" points at", [3]any{w.JobID, w.Attempt, w.Status}, [3]any{j.ID, 1, protocol.WorkerBusy})
	}
	for i := range 3 {
		old := h.job(fmt.Sprintf("held-%d", i))
		eq(t, "held job afterwards", [3]any{old.State, old.Interruptions, old.Error}, [3]any{protocol.JobQueued, 1, "worker claimed again"})
	}
}

// completesAtOnce: completes arrive at once (where the store batches
// completes, together): good ones, retries of completed attempts, a
// forged token, a stale attempt and an unknown job. Each gets the answer
// it would get alone.
func completesAtOnce(t *testing.T, h *harness) {
	const n = 20
	jobs := make([]*store.Job, n)
	for i := range n {
		h.insert(fmt.Sprintf("job-%02d", i))
		w := fmt.Sprintf("w%02d", i)
		h.register(w, at(time.Second))
		jobs[i] = h.claim(w, at(time.Minute))
	}
	// job-00 and job-01 completed already (their retries come below);
	// job-02's attempt 1 was taken away and attempt 2 runs elsewhere.
	first := []*store.Job{h.complete(jobs[0], at(2*time.Minute)), h.complete(jobs[1], at(2*time.Minute))}
	h.sweep(&store.SweepParams{Now: jobs[2].LeaseExpiresAt.Add(time.Second)}) // every lease ran out: all but 0, 1 back in the queue
	stale := jobs[2]
	eq(t, "job-02 again", h.claim("w-other", at(2*time.Minute), func(p *store.JobClaimParams) { p.Backoff = nil }).Attempt, 2)
	for i := 3; i < n; i++ {
		jobs[i] = h.claim(fmt.Sprintf("w%02d", i), at(2*time.Minute), func(p *store.JobClaimParams) { p.Backoff = nil })
	}
	now := at(3 * time.Minute)
	type call struct {
		p    *store.JobCompleteParams
		want error // nil: completes
	}
	var calls []call
	for i := 3; i < n; i++ {
		calls = append(calls, call{p: &store.JobCompleteParams{AttemptParams: ref(jobs[i], now), OutputKey: outputKey(jobs[i])}})
	}
	forged := *jobs[3]
	forged.Token = "forged"
	calls = append(calls,
		call{p: &store.JobCompleteParams{AttemptParams: ref(jobs[0], now), OutputKey: outputKey(jobs[0])}},
		call{p: &store.JobCompleteParams{AttemptParams: ref(jobs[1], now), OutputKey: outputKey(jobs[1])}},
		call{p: &store.JobCompleteParams{AttemptParams: ref(stale, now), OutputKey: outputKey(stale)}, want: store.ErrStaleAttempt},
		call{p: &store.JobCompleteParams{AttemptParams: ref(&forged, now), OutputKey: outputKey(jobs[3])}, want: store.ErrStaleAttempt},
		call{p: &store.JobCompleteParams{AttemptParams: store.AttemptParams{JobID: "no-such-job", Attempt: 1, Token: "t", Now: now},
			OutputKey: "outputs/no-such-job/1.mp4"}, want: store.ErrNotFound},
	)
	ps := make([]*store.JobCompleteParams, len(calls))
	for i, c := range calls {
		ps[i] = c.p
	}
	got, errs := atOnce(ps, func(p *store.JobCompleteParams) (*store.Job, error) { return h.s.JobComplete(h.ctx, p) })
	for i, c := range calls {
		what := fmt.Sprintf("complete %d (job %s, attempt %d)", i, c.p.JobID, c.p.Attempt)
		if c.want != nil {
			isErr(t, what, errs[i], c.want)
			continue
		}
		if errs[i] != nil {
			t.Fatalf("%s: %v", what, errs[i])
		}
		eq(t, what, [3]any{got[i].ID, got[i].State, got[i].OutputKey}, [3]any{c.p.JobID, protocol.JobSucceeded, c.p.OutputKey})
		eq(t, what+" stored", h.job(c.p.JobID), got[i])
	}
	eq(t, "retried complete", got[n-3], first[0])
	eq(t, "retried complete", got[n-2], first[1])
	for i := 3; i < n; i++ {
		as := h.attempts(jobs[i].ID)
		last := as[len(as)-1]
		eq(t, "attempt of "+jobs[i].ID, [3]any{last.Outcome, last.OutputKey, last.EndedAt}, [3]any{protocol.OutcomeSucceeded, outputKey(jobs[i]), ptr(now)})
		w := h.worker(fmt.Sprintf("w%02d", i))
		eq(t, "worker after its complete", [3]any{w.JobID, w.Attempt, w.Status}, [3]any{"", 0, protocol.WorkerIdle})
	}
	j2 := h.job(stale.ID)
	eq(t, "job-02 still runs", [3]any{j2.State, j2.Attempt, j2.WorkerID}, [3]any{protocol.JobRunning, 2, "w-other"})
}

// atOnce makes one call per parameter set from goroutines released
// together, and returns their answers in order.
func atOnce[P any](ps []P, call func(P) (*store.Job, error)) ([]*store.Job, []error) {
	got := make([]*store.Job, len(ps))
	errs := make([]error, len(ps))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Go(func() {
			<-start
			got[i], errs[i] = call(p)
		})
	}
	close(start)
	wg.Wait()
	return got, errs
}

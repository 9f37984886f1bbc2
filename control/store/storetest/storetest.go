// Package storetest is the conformance suite of store.Store: every
// implementation's tests call Run, and each documented rule of the
// interface is a subtest that can fail. Like river's riverdrivertest it
// is an ordinary package so that driver packages can import it.
//
// Time is passed in, never read: the tests use a fixed base time and add
// durations, so they never sleep.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/protocol"
)

// OpenFunc returns a fresh, empty store, closed by the test's cleanup.
type OpenFunc func(t *testing.T) store.Store

// Run runs the whole suite; every subtest opens its own store.
func Run(t *testing.T, open OpenFunc) {
	groups := []struct {
		name  string
		tests map[string]func(t *testing.T, h *harness)
	}{
		{"Attempt", attemptTests()},
		{"Cancel", cancelTests()},
		{"Claim", claimTests()},
		{"Concurrency", concurrencyTests()},
		{"Count", countTests()},
		{"Heartbeat", heartbeatTests()},
		{"Job", jobTests()},
		{"Retry", retryTests()},
		{"Sweep", sweepTests()},
		{"Text", textTests()},
		{"Worker", workerTests()},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			t.Parallel()
			for _, name := range sortedKeys(g.tests) {
				fn := g.tests[name]
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					fn(t, &harness{t: t, s: open(t), ctx: context.Background()})
				})
			}
		})
	}
}

// base is the suite's clock origin: microsecond precision, UTC.
func base() time.Time { return time.Date(2030, 1, 2, 3, 4, 5, 678901000, time.UTC) }

// at is base plus d.
func at(d time.Duration) time.Time { return base().Add(d) }

const (
	lease        = 30 * time.Second
	maxAttempts  = 3
	avatarPrefix = "avatar-"
)

// linear is a Backoff of count minutes.
func linear(count int) time.Duration { return time.Duration(count) * time.Minute }

// harness wraps one fresh store with helpers that fail the test on error.
type harness struct {
	t   *testing.T
	s   store.Store
	ctx context.Context
}

// insert adds a queued job with ids and budgets from opt.
func (h *harness) insert(id string, opt ...func(*store.JobInsertParams)) *store.Job {
	h.t.Helper()
	p := &store.JobInsertParams{
		ID:               id,
		AvatarKey:        "inputs/" + id + "/avatar.mp4",
		AudioKey:         "inputs/" + id + "/audio.wav",
		AvatarID:         avatarPrefix + id,
		Params:           []byte(`{"version":"v15"}`),
		MaxInterruptions: maxAttempts,
		MaxFailures:      maxAttempts,
		Now:              base(),
	}
	for _, o := range opt {
		o(p)
	}
	j, existed, err := h.s.JobInsert(h.ctx, p)
	if err != nil {
		h.t.Fatalf("JobInsert(%s): %v", id, err)
	}
	if existed {
		h.t.Fatalf("JobInsert(%s): existed = true for a new job", id)
	}
	return j
}

// claimParams is a claim by worker at now with token "<worker>-<n>".
func claimParams(worker string, now time.Time) *store.JobClaimParams {
	return &store.JobClaimParams{
		WorkerID:      worker,
		WorkerType:    protocol.WorkerMain,
		Token:         fmt.Sprintf("tok-%s-%d", worker, now.UnixNano()),
		LeaseDuration: lease,
		Backoff:       linear,
		Now:           now,
	}
}

// claim claims a job for worker at now and fails the test if there is none.
func (h *harness) claim(worker string, now time.Time, opt ...func(*store.JobClaimParams)) *store.Job {
	h.t.Helper()
	p := claimParams(worker, now)
	for _, o := range opt {
		o(p)
	}
	j, err := h.s.JobClaim(h.ctx, p)
	if err != nil {
		h.t.Fatalf("JobClaim(%s at %v): %v", worker, now.Sub(base()), err)
	}
	return j
}

// noClaim asserts that worker finds nothing to claim at now.
func (h *harness) noClaim(worker string, now time.Time, opt ...func(*store.JobClaimParams)) {
	h.t.Helper()
	p := claimParams(worker, now)
	for _, o := range opt {
		o(p)
	}
	j, err := h.s.JobClaim(h.ctx, p)
	if !errors.Is(err, store.ErrNoJob) {
		h.t.Fatalf("JobClaim(%s at %v) = %v, %v; want ErrNoJob", worker, now.Sub(base()), jobID(j), err)
	}
}

// heartbeat sends a heartbeat and fails the test on error.
func (h *harness) heartbeat(p *store.WorkerHeartbeatParams) *store.HeartbeatResult {
	h.t.Helper()
	if p.WorkerType == "" {
		p.WorkerType = protocol.WorkerMain
	}
	if p.Status == "" {
		p.Status = protocol.WorkerIdle
	}
	if p.LeaseDuration == 0 {
		p.LeaseDuration = lease
	}
	r, err := h.s.WorkerHeartbeat(h.ctx, p)
	if err != nil {
		h.t.Fatalf("WorkerHeartbeat(%s): %v", p.ID, err)
	}
	return r
}

// register creates an idle worker entry at now.
func (h *harness) register(id string, now time.Time) *store.Worker {
	h.t.Helper()
	return h.heartbeat(&store.WorkerHeartbeatParams{ID: id, Provider: "salad", GPUClass: "rtx4090", Now: now}).Worker
}

func (h *harness) job(id string) *store.Job {
	h.t.Helper()
	j, err := h.s.JobGet(h.ctx, id)
	if err != nil {
		h.t.Fatalf("JobGet(%s): %v", id, err)
	}
	return j
}

func (h *harness) worker(id string) *store.Worker {
	h.t.Helper()
	w, err := h.s.WorkerGet(h.ctx, id)
	if err != nil {
		h.t.Fatalf("WorkerGet(%s): %v", id, err)
	}
	return w
}

func (h *harness) attempts(id string) []*store.Attempt {
	h.t.Helper()
	as, err := h.s.JobAttempts(h.ctx, id)
	if err != nil {
		h.t.Fatalf("JobAttempts(%s): %v", id, err)
	}
	return as
}

// ref names j's current attempt.
func ref(j *store.Job, now time.Time) store.AttemptParams {
	return store.AttemptParams{JobID: j.ID, Attempt: j.Attempt, Token: j.Token, Now: now}
}

func (h *harness) complete(j *store.Job, now time.Time) *store.Job {
	h.t.Helper()
	out, err := h.s.JobComplete(h.ctx, &store.JobCompleteParams{AttemptParams: ref(j, now), OutputKey: outputKey(j)})
	if err != nil {
		h.t.Fatalf("JobComplete(%s/%d): %v", j.ID, j.Attempt, err)
	}
	return out
}

func (h *harness) fail(j *store.Job, now time.Time, msg string, retryable bool) *store.Job {
	h.t.Helper()
	out, err := h.s.JobFail(h.ctx, &store.JobFailParams{AttemptParams: ref(j, now), Error: msg, Retryable: retryable, Backoff: linear})
	if err != nil {
		h.t.Fatalf("JobFail(%s/%d): %v", j.ID, j.Attempt, err)
	}
	return out
}

func (h *harness) sweep(p *store.SweepParams) *store.SweepResult {
	h.t.Helper()
	r, err := h.s.Sweep(h.ctx, p)
	if err != nil {
		h.t.Fatalf("Sweep at %v: %v", p.Now.Sub(base()), err)
	}
	return r
}

func outputKey(j *store.Job) string { return fmt.Sprintf("outputs/%s/%d.mp4", j.ID, j.Attempt) }

func jobID(j *store.Job) string {
	if j == nil {
		return "<nil>"
	}
	return j.ID
}

// eq fails the test unless got and want are deeply equal.
func eq[T any](t *testing.T, what string, got, want T) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s =\n\t%s\nwant\n\t%s", what, dump(got), dump(want))
	}
}

// dump prints v as JSON, so that pointers print as values.
func dump(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%+v", v)
	}
	return string(b)
}

// isErr fails the test unless errors.Is(err, target).
func isErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: error = %v, want %v", what, err, target)
	}
}

// isSomeErr fails the test unless err is a non-nil error.
func isSomeErr(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want one", what)
	}
}

func ptr[T any](v T) *T { return &v }

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// snapshot is everything a call about job id (and worker) could change.
type snapshot struct {
	Job      *store.Job
	Attempts []*store.Attempt
	Worker   *store.Worker
}

func (h *harness) snapshot(jobID, workerID string) snapshot {
	h.t.Helper()
	s := snapshot{Job: h.job(jobID), Attempts: h.attempts(jobID)}
	if workerID != "" {
		s.Worker = h.worker(workerID)
	}
	return s
}

// unchanged fails the test if anything in before changed.
func (h *harness) unchanged(what string, before snapshot) {
	h.t.Helper()
	var workerID string
	if before.Worker != nil {
		workerID = before.Worker.ID
	}
	after := h.snapshot(before.Job.ID, workerID)
	eq(h.t, what+": job", after.Job, before.Job)
	eq(h.t, what+": attempts", after.Attempts, before.Attempts)
	eq(h.t, what+": worker", after.Worker, before.Worker)
}

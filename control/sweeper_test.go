package control

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/avatargen/musetalk/protocol"
)

// TestOfflineWorkerJobCompletedByAnother: a worker that heartbeats through
// a long job is never taken for dead; one that stops heartbeating is
// offline within 3 intervals, and its job is completed by another worker.
func TestOfflineWorkerJobCompletedByAnother(t *testing.T) {
	t.Parallel()
	b := setup(t)
	job := b.submit(protocol.SubmitRequest{})
	b.heartbeat("w1", seedHeartbeat(protocol.WorkerIdle))
	b.heartbeat("w2", seedHeartbeat(protocol.WorkerIdle))
	a1 := b.claim("w1")

	// A long job with steady heartbeats: 20 intervals, sweeping each time.
	for i := 0; i < 20; i++ {
		b.clock.Advance(testInterval)
		if resp := b.heartbeat("w1", busy(a1)); resp.Cancel != nil || resp.LeaseExpiresAt == nil {
			t.Fatalf("heartbeat %d during the job: %+v", i, resp)
		}
		b.heartbeat("w2", seedHeartbeat(protocol.WorkerIdle))
		b.sweep()
	}
	if v := b.getJob(job.ID); v.State != protocol.JobRunning || v.Attempt != 1 {
		t.Fatalf("a heartbeating worker's job was taken: %+v", v)
	}

	// w1 goes silent. Up to 3 intervals later it is still online...
	for i := 0; i < 3; i++ {
		b.clock.Advance(testInterval)
		b.heartbeat("w2", seedHeartbeat(protocol.WorkerIdle))
		b.sweep()
	}
	if w := b.worker("w1"); w.Status != protocol.WorkerBusy {
		t.Fatalf("w1 after exactly 3 intervals: %+v", w)
	}
	// ...and the first sweep after the third missed interval takes it.
	b.clock.Advance(time.Second)
	b.sweep()
	if w := b.worker("w1"); w.Status != protocol.WorkerOffline {
		t.Fatalf("w1 after 3 missed heartbeats: %+v", w)
	}
	if w := b.worker("w2"); w.Status != protocol.WorkerIdle {
		t.Fatalf("w2, which heartbeats, is %s", w.Status)
	}
	v := b.getJob(job.ID)
	if v.State != protocol.JobQueued || v.Interruptions != 1 || v.Attempts[0].Outcome != protocol.OutcomeInterrupted {
		t.Fatalf("job after its worker went offline: %+v", v)
	}

	// Another worker takes it after the backoff and completes it.
	b.clock.Advance(DefaultBackoffMax)
	b.heartbeat("w2", seedHeartbeat(protocol.WorkerIdle))
	a2 := b.claim("w2")
	if a2 == nil || a2.JobID != job.ID || a2.Attempt != 2 {
		t.Fatalf("w2's claim: %+v", a2)
	}
	b.upload(a2, []byte("from w2"))
	if status, data := b.complete(a2); status != http.StatusOK {
		t.Fatalf("w2's complete: %d %s", status, data)
	}
	v = b.getJob(job.ID)
	if v.State != protocol.JobSucceeded || v.WorkerID != "w2" || len(v.Attempts) != 2 ||
		v.Attempts[0].WorkerID != "w1" || v.Attempts[1].Outcome != protocol.OutcomeSucceeded {
		t.Fatalf("job after w2 completed it: %+v", v)
	}
	// w1 comes back: its next heartbeat tells it to drop the attempt.
	resp := b.heartbeat("w1", busy(a1))
	if resp.Cancel == nil || resp.Cancel.JobID != job.ID || resp.Cancel.Attempt != 1 {
		t.Fatalf("returning w1's heartbeat: %+v", resp)
	}
	metrics := b.metricsText()
	for _, want := range []string{
		`musetalk_sweeper_workers_offline_total 1`,
		`musetalk_sweeper_interruptions_total{reason="lease_expired"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Fatalf("metrics lack %q:\n%s", want, grepLines(metrics, "musetalk_sweeper"))
		}
	}
}

func TestStallTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.StallTimeout = time.Minute })
	job := b.submit(protocol.SubmitRequest{})
	b.heartbeat("w1", seedHeartbeat(protocol.WorkerIdle))
	a := b.claim("w1")
	hb := busy(a)
	hb.Progress = &protocol.Progress{Stage: "unet", FramesDone: 1, FramesTotal: 100}
	// Progress that moves keeps the attempt past the stall timeout.
	for i := 0; i < 20; i++ {
		b.clock.Advance(testInterval)
		hb.Progress.FramesDone++
		b.heartbeat("w1", hb)
		b.sweep()
	}
	if v := b.getJob(job.ID); v.State != protocol.JobRunning {
		t.Fatalf("moving progress was taken for a stall: %+v", v)
	}
	// Alive but stuck: the same progress for longer than the timeout.
	for i := 0; i < 13; i++ {
		b.clock.Advance(testInterval)
		b.heartbeat("w1", hb)
		b.sweep()
	}
	v := b.getJob(job.ID)
	if v.State != protocol.JobQueued || v.Interruptions != 1 || !strings.Contains(v.Attempts[0].Error, "no progress") {
		t.Fatalf("stalled attempt not interrupted: %+v", v)
	}
	if w := b.worker("w1"); w.Status == protocol.WorkerOffline {
		t.Fatal("a heartbeating worker went offline")
	}
	if m := b.metricsText(); !strings.Contains(m, `musetalk_sweeper_interruptions_total{reason="stalled"} 1`) {
		t.Fatalf("stall not counted:\n%s", grepLines(m, "musetalk_sweeper"))
	}
	if resp := b.heartbeat("w1", hb); resp.Cancel == nil {
		t.Fatal("the stalled worker was not told to drop the attempt")
	}
}

func TestInterruptionBudget(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.MaxInterruptions = 2 })
	job := b.submit(protocol.SubmitRequest{})
	for i := 1; i <= 2; i++ {
		b.clock.Advance(DefaultBackoffMax) // past the backoff of the last interruption
		b.heartbeat("w1", seedHeartbeat(protocol.WorkerIdle))
		if a := b.claim("w1"); a == nil || a.Attempt != i {
			t.Fatalf("claim %d: %+v", i, a)
		}
		b.clock.Advance(DefaultBackoffMax)
		b.sweep()
	}
	v := b.getJob(job.ID)
	if v.State != protocol.JobFailed || v.Interruptions != 2 || !strings.Contains(v.Error, "interrupted 2 times") || len(v.Attempts) != 2 {
		t.Fatalf("job after its interruption budget: %+v", v)
	}
}

// TestRestartLosesNothing closes the server and the SQLite store mid-job,
// opens the same file again, and finishes the job with the same token.
func TestRestartLosesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	done := b.submit(protocol.SubmitRequest{IdempotencyKey: "k1"})
	running := b.submit(protocol.SubmitRequest{Priority: -1})
	queued := b.submit(protocol.SubmitRequest{Priority: -2})
	b.heartbeat("w1", seedHeartbeat(protocol.WorkerIdle))
	b.heartbeat("w2", seedHeartbeat(protocol.WorkerIdle))
	a1 := b.claim("w1")
	b.upload(a1, []byte("done"))
	b.complete(a1)
	a2 := b.claim("w2")
	if a1.JobID != done.ID || a2.JobID != running.ID {
		t.Fatalf("claims: %s %s", a1.JobID, a2.JobID)
	}
	b.attemptCall(protocol.ProgressRoute, running.ID, protocol.ProgressRequest{Attempt: a2.Attempt, Token: a2.Token,
		Progress: protocol.Progress{Stage: "vae", FramesDone: 10, FramesTotal: 50}})
	before := map[string]protocol.JobView{}
	for _, id := range []string{done.ID, running.ID, queued.ID} {
		before[id] = b.getJob(id)
	}

	b.restart()

	for id, want := range before {
		got := b.getJob(id)
		if string(mustJSON(t, got)) != string(mustJSON(t, want)) {
			t.Fatalf("job %s changed across the restart:\nbefore %s\nafter  %s", id, mustJSON(t, want), mustJSON(t, got))
		}
	}
	var workers protocol.WorkerList
	b.call("GET", "/v1/workers", testPublicKey, nil, &workers)
	if len(workers.Workers) != 2 || workers.Workers[1].JobID != running.ID {
		t.Fatalf("workers after the restart: %+v", workers.Workers)
	}
	// The idempotency key survives; the running attempt goes on and
	// completes with the token it was given before the restart.
	status, data := b.call("POST", "/v1/jobs", testPublicKey, protocol.SubmitRequest{AvatarKey: "uploads/avatar.mp4", AudioKey: "uploads/audio.wav", IdempotencyKey: "k1"}, nil)
	if status != http.StatusOK || !strings.Contains(string(data), done.ID) {
		t.Fatalf("repeat submit after restart: %d %s", status, data)
	}
	if resp := b.heartbeat("w2", busy(a2)); resp.Cancel != nil || resp.LeaseExpiresAt == nil {
		t.Fatalf("heartbeat after restart: %+v", resp)
	}
	b.upload(a2, []byte("after restart"))
	if status, data := b.complete(a2); status != http.StatusOK {
		t.Fatalf("complete after restart: %d %s", status, data)
	}
	status, body, _ := b.do("GET", protocol.Path(protocol.JobResultRoute, running.ID), testPublicKey, "", nil)
	if status != http.StatusOK || string(body) != "after restart" {
		t.Fatalf("result after restart: %d %q", status, body)
	}
	if a := b.claim("w1"); a == nil || a.JobID != queued.ID {
		t.Fatalf("queued job after restart: %+v", a)
	}
}

// RunSweeper holds its first pass for a lease after it starts, so workers
// that kept working through an outage of the control plane can heartbeat
// before their expired leases are judged; then it sweeps, and it stops
// when its context is done.
func TestRunSweeperStartGraceAndStop(t *testing.T) {
	t.Parallel()
	const lease = 400 * time.Millisecond
	b := setup(t, func(c *Config) {
		c.HeartbeatInterval = 100 * time.Millisecond
		c.LeaseDuration, c.OfflineAfter, c.SweepInterval = lease, lease/2, time.Hour
	})
	runs := func() string { return grepLines(b.metricsText(), "musetalk_sweeper_runs_total") }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	started := time.Now()
	go func() {
		b.srv.RunSweeper(ctx)
		close(done)
	}()
	for !strings.Contains(runs(), `{result="ok"} 1`) {
		if time.Since(started) > 20*lease {
			t.Fatalf("no sweep long after the start grace:\n%s", runs())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if waited := time.Since(started); waited < lease {
		t.Fatalf("first sweep after %v, before the start grace of %v", waited, lease)
	}
	cancel()
	<-done // RunSweeper returns once ctx is done (the test would hang otherwise)
	if m := runs(); !strings.Contains(m, `{result="ok"} 1`) || !strings.Contains(m, `{result="error"} 0`) {
		t.Fatalf("want exactly one pass:\n%s", m)
	}
}

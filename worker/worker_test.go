package worker

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/avatargen/musetalk/protocol"
	"github.com/avatargen/musetalk/worker/engine"
)

func TestJobCompletesAndHeartbeatsDuringLongRun(t *testing.T) {
	t.Parallel()
	eng := newGateEngine("musetalk")
	eng.cached = []string{"avatar-1"}
	h := newHarness(t, harnessOptions{engines: []engine.Engine{eng}})
	h.start()
	id := h.submitDummy()
	job := eng.waitStarted(t)
	if job.ID != id || job.Attempt != 1 {
		t.Fatalf("engine got job %s attempt %d, want %s attempt 1", job.ID, job.Attempt, id)
	}

	// The engine is busy for as long as the test likes; the heartbeat goes
	// on and reports the job and its progress.
	busy := func() int {
		n := 0
		for _, hb := range h.rec.heartbeats(t) {
			if hb.Status == protocol.WorkerBusy && hb.JobID == id && hb.Attempt == 1 && hb.Progress != nil && hb.Progress.FramesDone == 3 {
				n++
			}
		}
		return n
	}
	waitFor(t, "five busy heartbeats during the run", func() bool { return busy() >= 5 })
	code, body := h.healthGet("/health")
	if code != http.StatusOK || body.State != StateBusy || body.JobID != id || body.Attempt != 1 || !body.Live {
		t.Errorf("/health during the job: %d %+v", code, body)
	}
	if body.LastHeartbeatAgeSec == nil || *body.LastHeartbeatAgeSec < 0 {
		t.Errorf("/health last_heartbeat_age_sec = %v", body.LastHeartbeatAgeSec)
	}
	if code, _ := h.healthGet("/ready"); code != http.StatusOK {
		t.Errorf("/ready during the job: %d", code)
	}
	if code, _ := h.healthGet("/live"); code != http.StatusOK {
		t.Errorf("/live during the job: %d", code)
	}
	// The control plane saw the progress (heartbeats and progress posts).
	waitFor(t, "progress on the job", func() bool {
		p := h.job(id).Progress
		return p != nil && p.FramesDone == 3
	})

	eng.release <- nil
	waitFor(t, "the job to succeed", func() bool { return h.job(id).State == protocol.JobSucceeded })
	v := h.job(id)
	if v.OutputKey != "outputs/"+id+"/1.mp4" {
		t.Errorf("output key %q", v.OutputKey)
	}
	rc, err := h.blobs.Get(context.Background(), v.OutputKey)
	if err != nil {
		t.Fatalf("the output is not in the object store: %v", err)
	}
	rc.Close()

	// The first heartbeat registered the worker with the seed's fields and
	// the self-check; the registry shows it.
	hbs := h.rec.heartbeats(t)
	first := hbs[0]
	if first.Status != protocol.WorkerIdle || first.Provider != ProviderOther || first.GPUClass != "TEST_GPU" ||
		first.WorkerType != protocol.WorkerMain || first.Version != "test" || first.SelfCheck == nil {
		t.Errorf("first heartbeat %+v", first)
	} else if sc := first.SelfCheck; sc.Engine != "musetalk" || sc.Device != "test-device" || sc.FreeDiskBytes <= 0 || !sc.WeightsPresent || sc.Error != "" {
		t.Errorf("self-check %+v", sc)
	}
	if len(first.CachedAvatars) != 1 || first.CachedAvatars[0] != "avatar-1" {
		t.Errorf("cached avatars %v", first.CachedAvatars)
	}
	if hbs[len(hbs)-1].SelfCheck != nil {
		t.Errorf("the self-check is sent again after it was acknowledged")
	}
	var workers protocol.WorkerList
	h.public(http.MethodGet, "/v1/workers", nil, &workers)
	if len(workers.Workers) != 1 || workers.Workers[0].SelfCheck == nil || workers.Workers[0].ID != h.w.ID() {
		t.Errorf("registry %+v", workers)
	}
	// No call carried the key in its path or body.
	for _, c := range h.rec.calls() {
		if strings.Contains(string(c.body), testKey) || strings.Contains(c.path, testKey) {
			t.Errorf("call %s %s carries the key", c.method, c.path)
		}
	}
}

func TestHealthWedgedHeartbeat(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	unblock := make(chan struct{})
	entered := make(chan struct{}, 1)
	h := newHarness(t, harnessOptions{
		engines: []engine.Engine{newGateEngine("musetalk")},
		before: func(w *Worker) {
			w.now = clock
			// A sender that ignores its context: the loop is wedged.
			w.sendHeartbeat = func(context.Context, *protocol.Heartbeat) (*protocol.HeartbeatResponse, error) {
				select {
				case entered <- struct{}{}:
				default:
				}
				<-unblock
				return &protocol.HeartbeatResponse{}, nil
			}
		},
	})
	h.start()
	t.Cleanup(func() { close(unblock) })
	<-entered
	if code, body := h.healthGet("/health"); code != http.StatusOK || !body.Live {
		t.Fatalf("/health while the first heartbeat is in flight: %d %+v", code, body)
	}
	window := 3*h.w.cfg.PollInterval + h.w.cfg.HeartbeatTimeout
	advance(window)
	if code, _ := h.healthGet("/health"); code != http.StatusOK {
		t.Fatalf("/health at exactly the liveness window: %d, want 200", code)
	}
	advance(time.Millisecond)
	for _, path := range []string{"/health", "/live", "/ready"} {
		code, body := h.healthGet(path)
		if code != http.StatusServiceUnavailable || body.State != StateUnhealthy || body.Live || !strings.Contains(body.Reason, "wedged") {
			t.Errorf("%s with a wedged heartbeat loop: %d %+v, want 503 unhealthy", path, code, body)
		}
	}
}

func TestHealthAliveWhileControlPlaneDown(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{engines: []engine.Engine{newGateEngine("musetalk")}})
	h.rec.setFault(func(c *call) int {
		if c.kind == "heartbeat" || c.kind == "claim" {
			return http.StatusServiceUnavailable
		}
		return 0
	})
	h.start()
	waitFor(t, "three failed heartbeats", func() bool { return len(h.rec.calls("heartbeat")) >= 3 })
	code, body := h.healthGet("/health")
	if code != http.StatusOK || !body.Live || body.HeartbeatFailures == 0 || body.LastHeartbeatAgeSec != nil {
		t.Errorf("/health with the control plane down: %d %+v, want 200, live, failures counted, no acknowledged heartbeat", code, body)
	}
	h.rec.setFault(nil)
	waitFor(t, "an acknowledged heartbeat", func() bool { return h.w.Health().LastHeartbeatAgeSec != nil })
	if got := h.w.Health(); got.HeartbeatFailures != 0 || got.State != StateReady {
		t.Errorf("after recovery: %+v", got)
	}
}

func TestCancelOrderCancelsEngine(t *testing.T) {
	t.Parallel()
	eng := newGateEngine("musetalk")
	h := newHarness(t, harnessOptions{engines: []engine.Engine{eng}})
	h.start()
	id := h.submitDummy()
	eng.waitStarted(t)
	h.public(http.MethodPost, "/v1/jobs/"+id+"/cancel", nil, nil)
	cause := eng.waitCause(t)
	// The worker learns from the heartbeat's cancel order, or from a 409
	// on a progress post if that comes first.
	var co *cancelOrder
	if !errors.As(cause, &co) && !errors.Is(cause, errAttemptGone) {
		t.Fatalf("the engine's context ended with %v, want the control plane's cancel order", cause)
	}
	waitFor(t, "the worker to drop the attempt", h.idle)
	if v := h.job(id); v.State != protocol.JobCancelled {
		t.Errorf("job state %s, want cancelled", v.State)
	}
	if n := len(h.rec.calls("fail", "release", "complete")); n != 0 {
		t.Errorf("the worker reported a cancelled attempt (%d calls), want it abandoned quietly", n)
	}
	// The worker goes on: the next job runs.
	id2 := h.submitDummy()
	if j := eng.waitStarted(t); j.ID != id2 {
		t.Errorf("next job %s, want %s", j.ID, id2)
	}
	eng.release <- nil
	waitFor(t, "the next job to succeed", func() bool { return h.job(id2).State == protocol.JobSucceeded })
}

func TestDrainOrderStopsClaiming(t *testing.T) {
	t.Parallel()
	eng := newGateEngine("musetalk")
	h := newHarness(t, harnessOptions{engines: []engine.Engine{eng}})
	h.start()
	waitFor(t, "the worker to register", func() bool { return len(h.rec.heartbeats(t)) > 0 })
	h.public(http.MethodPost, "/v1/workers/"+h.w.ID()+"/drain", nil, nil)
	waitFor(t, "the worker to drain", func() bool { return h.w.Health().State == StateDraining })
	if code, body := h.healthGet("/ready"); code != http.StatusServiceUnavailable || body.Ready {
		t.Errorf("/ready while draining: %d %+v", code, body)
	}
	if code, _ := h.healthGet("/health"); code != http.StatusOK {
		t.Errorf("/health while draining: %d, want 200 (alive)", code)
	}
	claims := len(h.rec.calls("claim"))
	id := h.submitDummy()
	beats := len(h.rec.heartbeats(t))
	waitFor(t, "five more heartbeats", func() bool { return len(h.rec.heartbeats(t)) >= beats+5 })
	if v := h.job(id); v.State != protocol.JobQueued {
		t.Fatalf("a draining worker took job %s (%s)", id, v.State)
	}
	if n := len(h.rec.calls("claim")); n > claims+1 { // one claim may have been in flight
		t.Errorf("%d claims while draining", n-claims)
	}
	for _, hb := range h.rec.heartbeats(t)[beats:] {
		if hb.Status != protocol.WorkerDraining {
			t.Errorf("heartbeat status %s while draining", hb.Status)
		}
	}
	// Lifting the drain resumes claiming.
	h.public(http.MethodPost, "/v1/workers/"+h.w.ID()+"/undrain", nil, nil)
	eng.waitStarted(t)
	eng.release <- nil
	waitFor(t, "the job to succeed", func() bool { return h.job(id).State == protocol.JobSucceeded })
}

func TestShutdownReleasesAfterGrace(t *testing.T) {
	t.Parallel()
	eng := newGateEngine("musetalk")
	h := newHarness(t, harnessOptions{engines: []engine.Engine{eng}, grace: time.Millisecond})
	h.start()
	id := h.submitDummy()
	eng.waitStarted(t)
	h.cancel() // the first SIGTERM
	if cause := eng.waitCause(t); !errors.Is(cause, errShutdownGrace) {
		t.Errorf("engine context ended with %v, want the end of the grace period", cause)
	}
	h.waitRun()
	v := h.job(id)
	if v.State != protocol.JobQueued || len(v.Attempts) != 1 || v.Attempts[0].Outcome != protocol.OutcomeReleased {
		t.Errorf("job after shutdown: state %s attempts %+v, want queued with attempt 1 released", v.State, v.Attempts)
	}
	hbs := h.rec.heartbeats(t)
	if last := hbs[len(hbs)-1]; last.Status != protocol.WorkerDraining {
		t.Errorf("last heartbeat status %s, want draining", last.Status)
	}
}

func TestShutdownFinishesJobWithinGrace(t *testing.T) {
	t.Parallel()
	eng := newGateEngine("musetalk")
	h := newHarness(t, harnessOptions{engines: []engine.Engine{eng}, grace: time.Hour})
	h.start()
	id := h.submitDummy()
	eng.waitStarted(t)
	h.cancel()
	waitFor(t, "a draining heartbeat with the job", func() bool {
		for _, hb := range h.rec.heartbeats(t) {
			if hb.Status == protocol.WorkerDraining && hb.JobID == id {
				return true
			}
		}
		return false
	})
	if got := h.w.Health(); got.State != StateDraining || got.Ready || got.JobID != id {
		t.Errorf("health while draining with a job: %+v", got)
	}
	claims := len(h.rec.calls("claim"))
	eng.release <- nil
	h.waitRun()
	if v := h.job(id); v.State != protocol.JobSucceeded {
		t.Errorf("job state %s, want succeeded", v.State)
	}
	if n := len(h.rec.calls("claim")); n != claims {
		t.Errorf("%d claims after the shutdown signal", n-claims)
	}
}

func TestStopReleasesAtOnce(t *testing.T) {
	t.Parallel()
	eng := newGateEngine("musetalk")
	h := newHarness(t, harnessOptions{engines: []engine.Engine{eng}, grace: time.Hour})
	h.start()
	id := h.submitDummy()
	eng.waitStarted(t)
	h.cancel()
	h.w.Stop() // the second signal
	h.wantReleasedByStop(eng, id)
}

// wantReleasedByStop checks that the stop ended the engine's context, Run
// returned, and the job's one attempt was released.
func (h *harness) wantReleasedByStop(eng *gateEngine, id string) {
	h.t.Helper()
	if cause := eng.waitCause(h.t); !errors.Is(cause, errStopped) {
		h.t.Errorf("engine context ended with %v, want the stop", cause)
	}
	h.waitRun()
	if v := h.job(id); len(v.Attempts) != 1 || v.Attempts[0].Outcome != protocol.OutcomeReleased {
		h.t.Errorf("attempts %+v, want one released", v.Attempts)
	}
}

// The two-stage stop of musetalk worker: the first signal drains and the
// second releases the job at once; Run ends cleanly.
func TestRunWithSignalsTwoStages(t *testing.T) {
	t.Parallel()
	eng := newGateEngine("musetalk")
	h := newHarness(t, harnessOptions{engines: []engine.Engine{eng}, grace: time.Hour})
	sigs := make(chan os.Signal, 2)
	h.startWith(sigs)
	id := h.submitDummy()
	eng.waitStarted(t)
	sigs <- syscall.SIGTERM
	waitFor(t, "draining after the first signal", func() bool { return h.w.Health().State == StateDraining })
	select {
	case cause := <-eng.causes:
		t.Fatalf("the first signal ended the job (%v); it should get the grace", cause)
	case <-time.After(50 * time.Millisecond):
	}
	sigs <- syscall.SIGTERM
	h.wantReleasedByStop(eng, id)
}

// Progress posts are throttled, but the record of a finished job ends where
// the engine did: the last progress is flushed before complete.
func TestFinalProgressReachesTheJob(t *testing.T) {
	t.Parallel()
	eng := newGateEngine("musetalk")
	h := newHarness(t, harnessOptions{engines: []engine.Engine{eng}, progressEvery: time.Hour})
	h.start()
	id := h.submitDummy()
	eng.waitStarted(t)
	eng.release <- nil
	waitFor(t, "the job to succeed", func() bool { return h.job(id).State == protocol.JobSucceeded })
	if p := h.job(id).Progress; p == nil || p.FramesDone != 10 || p.FramesTotal != 10 {
		t.Errorf("final progress %+v, want 10 of 10\n%s", p, h.logs.String())
	}
}

func TestFailureReporting(t *testing.T) {
	t.Parallel()
	eng := newGateEngine("musetalk")
	h := newHarness(t, harnessOptions{engines: []engine.Engine{eng}})
	h.start()

	// Permanent: the job ends failed at once.
	id := h.submitDummy()
	eng.waitStarted(t)
	eng.release <- engine.Permanent(errors.New("the avatar has no face"))
	waitFor(t, "the job to fail", func() bool { return h.job(id).State == protocol.JobFailed })
	if v := h.job(id); !strings.Contains(v.Error, "the avatar has no face") || v.Failures != 1 {
		t.Errorf("failed job: error %q failures %d", v.Error, v.Failures)
	}
	if got := h.nthFail(t, 1); got.Retryable {
		t.Errorf("a permanent error was reported retryable: %+v", got)
	}

	// Retryable: the job goes back to the queue.
	id = h.submitDummy()
	eng.waitStarted(t)
	eng.release <- engine.Retryable(errors.New("CUDA device lost"))
	waitFor(t, "the failure to be recorded", func() bool { return h.job(id).Failures == 1 })
	if v := h.job(id); v.State == protocol.JobFailed || v.Attempts[0].Outcome != protocol.OutcomeFailed {
		t.Errorf("retryable failure: state %s attempts %+v, want the job kept for a retry", v.State, v.Attempts)
	}
	if got := h.nthFail(t, 2); !got.Retryable || !strings.Contains(got.Error, "CUDA device lost") {
		t.Errorf("fail request %+v, want retryable", got)
	}
	h.public(http.MethodPost, "/v1/jobs/"+id+"/cancel", nil, nil)
	waitFor(t, "the worker to be idle", h.idle)
}

// nthFail waits for the n-th fail call and decodes it.
func (h *harness) nthFail(t *testing.T, n int) protocol.FailRequest {
	t.Helper()
	waitFor(t, "a fail call", func() bool { return len(h.rec.calls("fail")) >= n })
	fails := h.rec.calls("fail")
	if len(fails) != n {
		t.Fatalf("%d fail calls, want %d", len(fails), n)
	}
	var f protocol.FailRequest
	if err := json.Unmarshal(fails[n-1].body, &f); err != nil {
		t.Fatal(err)
	}
	return f
}

// panicEngine panics on its first run and works afterwards.
type panicEngine struct {
	*gateEngine
	mu     sync.Mutex
	panics int
}

func (p *panicEngine) Run(ctx context.Context, job *engine.Job, progress engine.ProgressFunc) error {
	p.mu.Lock()
	first := p.panics == 0
	p.panics++
	p.mu.Unlock()
	if first {
		var m map[string]int
		m["boom"]++ // a nil-map write panics
	}
	return p.gateEngine.Run(ctx, job, progress)
}

func TestEnginePanicIsAFailure(t *testing.T) {
	t.Parallel()
	eng := &panicEngine{gateEngine: newGateEngine("musetalk")}
	h := newHarness(t, harnessOptions{engines: []engine.Engine{eng}})
	h.start()
	id := h.submitDummy()
	waitFor(t, "the panic to be reported", func() bool { return h.job(id).Failures == 1 })
	if f := h.nthFail(t, 1); !strings.Contains(f.Error, "panicked") {
		t.Errorf("fail request %+v", f)
	}
	if code, _ := h.healthGet("/health"); code != http.StatusOK {
		t.Errorf("/health after a panic: %d", code)
	}
	// The worker is still up and runs the next job.
	id2 := h.submitDummy()
	eng.waitStarted(t)
	eng.release <- nil
	waitFor(t, "the next job", func() bool { return h.job(id2).State == protocol.JobSucceeded })
}

func TestStaleAttemptIsAbandonedQuietly(t *testing.T) {
	t.Parallel()
	eng := newGateEngine("musetalk")
	h := newHarness(t, harnessOptions{engines: []engine.Engine{eng}})
	h.start()
	id := h.submitDummy()
	eng.waitStarted(t)
	// Heartbeats and progress posts stop reaching the control plane (so
	// that the worker learns about the lost lease from the complete call's
	// 409, not from a cancel order); once a heartbeat has been stopped, none
	// is in flight any more.
	var stopped atomic.Int32
	h.rec.setFault(func(c *call) int {
		switch c.kind {
		case "heartbeat":
			stopped.Add(1)
			return http.StatusServiceUnavailable
		case "progress":
			return http.StatusServiceUnavailable
		}
		return 0
	})
	waitFor(t, "a stopped heartbeat", func() bool { return stopped.Load() > 0 })
	// The lease runs out: the control plane's clock jumps and it sweeps.
	h.offset.Store(int64(time.Hour))
	if err := h.cp.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if v := h.job(id); v.State != protocol.JobQueued {
		t.Fatalf("job %s after the sweep, want queued", v.State)
	}
	eng.release <- nil
	waitFor(t, "the complete call", func() bool { return len(h.rec.calls("complete")) > 0 })
	waitFor(t, "the worker to drop the attempt", h.idle)
	c := h.rec.calls("complete")[0]
	if c.status != http.StatusConflict {
		t.Fatalf("complete answered %d, want 409", c.status)
	}
	if n := len(h.rec.calls("fail", "release")); n != 0 {
		t.Errorf("%d fail/release calls after a stale complete", n)
	}
	v := h.job(id)
	if v.OutputKey != "" || v.Attempts[0].Outcome != protocol.OutcomeInterrupted {
		t.Errorf("job %+v: the stale attempt's output must not be published", v)
	}
	if logs := h.logs.String(); strings.Contains(logs, "level=ERROR") {
		t.Errorf("a stale attempt was logged as an error:\n%s", logs)
	}
}

func TestCompleteRetriedOnServerErrors(t *testing.T) {
	t.Parallel()
	eng := newGateEngine("musetalk")
	h := newHarness(t, harnessOptions{engines: []engine.Engine{eng}})
	var failed sync.Mutex
	n := 0
	h.rec.setFault(func(c *call) int {
		if c.kind != "complete" {
			return 0
		}
		failed.Lock()
		defer failed.Unlock()
		if n++; n <= 2 {
			return http.StatusBadGateway
		}
		return 0
	})
	h.start()
	id := h.submitDummy()
	eng.waitStarted(t)
	eng.release <- nil
	waitFor(t, "the job to succeed", func() bool { return h.job(id).State == protocol.JobSucceeded })
	// The recorder logs a call after its answer; wait for the third.
	waitFor(t, "the third complete call", func() bool { return len(h.rec.calls("complete")) >= 3 })
	if got := len(h.rec.calls("complete")); got != 3 {
		t.Errorf("%d complete calls, want 2 failed and 1 accepted", got)
	}
}

func TestSelfCheckFailureBlocksClaims(t *testing.T) {
	t.Parallel()
	eng := newGateEngine("musetalk")
	eng.checkErr = errors.New("weights missing under /models")
	h := newHarness(t, harnessOptions{engines: []engine.Engine{eng}})
	h.start()
	waitFor(t, "two heartbeats", func() bool { return len(h.rec.heartbeats(t)) >= 2 })
	if sc := h.rec.heartbeats(t)[0].SelfCheck; sc == nil || !strings.Contains(sc.Error, "weights missing") || sc.WeightsPresent {
		t.Errorf("first heartbeat's self-check %+v", sc)
	}
	code, body := h.healthGet("/health")
	if code != http.StatusOK || body.State != StateUnhealthy || !strings.Contains(body.Reason, "weights missing") {
		t.Errorf("/health: %d %+v, want 200 (alive) and unhealthy", code, body)
	}
	if code, _ := h.healthGet("/ready"); code != http.StatusServiceUnavailable {
		t.Errorf("/ready: %d, want 503", code)
	}
	if n := len(h.rec.calls("claim")); n != 0 {
		t.Errorf("%d claims with a failed self-check", n)
	}
}

func TestUnknownEngineAndBadInputs(t *testing.T) {
	t.Parallel()
	eng := newGateEngine("musetalk")
	h := newHarness(t, harnessOptions{engines: []engine.Engine{eng}})
	h.start()
	h.put("inputs/x/avatar.png", []byte("a"))
	h.put("inputs/x/audio.wav", []byte("b"))
	id := h.submit(protocol.JobParams{Engine: "preview"}, "inputs/x/avatar.png", "inputs/x/audio.wav")
	waitFor(t, "the failure", func() bool { return h.job(id).Failures == 1 })
	if f := h.nthFail(t, 1); !f.Retryable || !strings.Contains(f.Error, `engine "preview" is not available`) {
		t.Errorf("fail %+v", f)
	}
	h.public(http.MethodPost, "/v1/jobs/"+id+"/cancel", nil, nil)

	// An input that vanished from the store is permanent. The worker is
	// kept busy on another job while the input is deleted, so it cannot
	// download the input first (the gate engine would then hold the job).
	busy := h.submitDummy()
	eng.waitStarted(t)
	id = h.submit(protocol.JobParams{}, "inputs/x/avatar.png", "inputs/x/audio.wav")
	if err := h.blobs.Delete(context.Background(), "inputs/x/audio.wav"); err != nil {
		t.Fatal(err)
	}
	eng.release <- nil
	waitFor(t, "the busy job to finish", func() bool { return h.job(busy).State == protocol.JobSucceeded })
	waitFor(t, "the job to fail", func() bool { return h.job(id).State == protocol.JobFailed })
	if v := h.job(id); !strings.Contains(v.Error, "inputs/x/audio.wav is missing") {
		t.Errorf("error %q", v.Error)
	}
}

func TestRunTwiceAndBadConfig(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{engines: []engine.Engine{newGateEngine("musetalk")}})
	h.start()
	waitFor(t, "the worker to run", func() bool { return len(h.rec.heartbeats(t)) > 0 })
	if err := h.w.Run(context.Background()); err == nil {
		t.Error("a second Run did not fail")
	}
	cfg := h.w.cfg
	cfg.Blob = nil
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "Config.Blob") {
		t.Errorf("New without a store: %v", err)
	}
	cfg = h.w.cfg
	cfg.Engines = []engine.Engine{newGateEngine("x"), newGateEngine("x")}
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), `two engines named "x"`) {
		t.Errorf("New with two engines of one name: %v", err)
	}
}

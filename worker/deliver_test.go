package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/avatargen/musetalk/blob"
	"github.com/avatargen/musetalk/protocol"
	"github.com/avatargen/musetalk/worker/controlblob"
	"github.com/avatargen/musetalk/worker/engine"
)

// front serves the control plane's handler on a fixed loopback address
// that a test can take down (connections refused, calls in flight cut)
// and bring back, as a control plane that crashes and restarts would be.
type front struct {
	t    *testing.T
	addr string
	h    http.Handler
	mu   sync.Mutex
	srv  *http.Server
}

func newFront(t *testing.T, h http.Handler) *front {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &front{t: t, addr: ln.Addr().String(), h: h}
	f.serve(ln)
	t.Cleanup(f.down)
	return f
}

func (f *front) url() string { return "http://" + f.addr }

func (f *front) serve(ln net.Listener) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.srv = &http.Server{Handler: f.h}
	go f.srv.Serve(ln)
}

// down closes the listener and every connection: calls are refused.
func (f *front) down() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.srv != nil {
		f.srv.Close()
		f.srv = nil
	}
}

// up listens on the same address again.
func (f *front) up() {
	f.t.Helper()
	var ln net.Listener
	var err error
	for range 100 {
		if ln, err = net.Listen("tcp", f.addr); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		f.t.Fatalf("listening on %s again: %v", f.addr, err)
	}
	f.serve(ln)
}

// throughFront makes the worker reach the control plane (API and blob
// routes, as a worker without B2 does) through a front the test controls.
func throughFront(fr **front) harnessOptions {
	return harnessOptions{
		blob: func(h *harness) blob.Store {
			*fr = newFront(h.t, h.rec)
			s, err := controlblob.New((*fr).url(), testKey, nil)
			if err != nil {
				h.t.Fatal(err)
			}
			return s
		},
		before: func(w *Worker) {
			w.client = newClient((*fr).url(), testKey, w.cfg.WorkerID, nil)
			w.sendHeartbeat = w.client.heartbeat
		},
	}
}

// retries counts the worker's logged retries of a delivery call.
func (h *harness) retries(call string) int {
	return strings.Count(h.logs.String(), "call="+call)
}

// wantCompletedOnce checks that the job succeeded on its first attempt
// with the engine's bytes, spent no budget, and that the worker reported
// no failure.
func (h *harness) wantCompletedOnce(id string) {
	h.t.Helper()
	waitFor(h.t, "the job to end or lose its first attempt", func() bool {
		v := h.job(id)
		return v.State.Final() || v.Failures > 0 || len(v.Attempts) > 1 || v.State == protocol.JobQueued
	})
	v := h.job(id)
	if v.State != protocol.JobSucceeded || len(v.Attempts) != 1 || v.Failures != 0 || v.Interruptions != 0 ||
		v.OutputKey != "outputs/"+id+"/1.mp4" {
		h.t.Fatalf("job %+v: want succeeded in its one attempt, no failure or interruption", v)
	}
	if n := len(h.rec.calls("fail", "release")); n != 0 {
		h.t.Errorf("%d fail/release calls", n)
	}
	rc, err := h.blobs.Get(context.Background(), v.OutputKey)
	if err != nil {
		h.t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if string(got) != "rendered "+id {
		h.t.Errorf("published output %q, want the attempt's", got)
	}
}

// The control plane goes down (connections refused) as the render
// finishes and comes back later: the worker keeps the output, retries the
// upload through the control plane with backoff, and the same attempt
// completes; no failure is reported. Before, the upload was tried 3 times
// and the attempt reported failed, losing the render and a failure credit.
func TestOutageAfterRenderConnectionRefused(t *testing.T) {
	t.Parallel()
	eng := newGateEngine("musetalk")
	var fr *front
	o := throughFront(&fr)
	o.engines = []engine.Engine{eng}
	h := newHarness(t, o)
	h.start()
	id := h.submitDummy()
	eng.waitStarted(t)

	fr.down()
	eng.release <- nil
	// The outage lasts 1.5 s: 75 heartbeat intervals of this harness, and
	// several upload tries.
	time.Sleep(1500 * time.Millisecond)
	if v := h.job(id); v.State != protocol.JobRunning || v.Failures != 0 {
		t.Fatalf("during the outage the job is %s with %d failures; want running, 0", v.State, v.Failures)
	}
	if h.idle() {
		t.Fatal("the worker dropped the attempt during the outage")
	}
	fr.up()
	h.wantCompletedOnce(id)
	if n := h.retries("upload"); n < 3 {
		t.Errorf("%d retried uploads during the outage, want several", n)
	}
	// Heartbeats went on: one accepted after the outage, busy with the job.
	waitFor(t, "a heartbeat after the outage", func() bool {
		for _, hb := range h.rec.heartbeats(t) {
			if hb.JobID == id && hb.Status == protocol.WorkerBusy {
				return true
			}
		}
		return false
	})
	waitFor(t, "the worker to be idle", h.idle)
}

// The same with a control plane that answers 503 to every worker call
// (heartbeats, blob uploads, complete) for a while, as a proxy in front of
// a dead replica does.
func TestOutageAfterRender503(t *testing.T) {
	t.Parallel()
	eng := newGateEngine("musetalk")
	h := newHarness(t, harnessOptions{
		engines: []engine.Engine{eng},
		blob: func(h *harness) blob.Store {
			s, err := controlblob.New(h.srv.URL, testKey, nil)
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
	})
	var outage atomic.Bool
	var refused atomic.Int32
	h.rec.setFault(func(c *call) int {
		if outage.Load() && c.kind != "public" {
			refused.Add(1)
			return http.StatusServiceUnavailable
		}
		return 0
	})
	h.start()
	id := h.submitDummy()
	eng.waitStarted(t)

	outage.Store(true)
	eng.release <- nil
	time.Sleep(1500 * time.Millisecond) // the outage
	waitFor(t, "a refused heartbeat", func() bool {
		for _, c := range h.rec.calls("heartbeat") {
			if c.status == http.StatusServiceUnavailable {
				return true
			}
		}
		return false
	})
	outage.Store(false)
	h.wantCompletedOnce(id)
	if refused.Load() == 0 {
		t.Fatal("no call was refused")
	}
	if n := h.retries("upload"); n < 3 {
		t.Errorf("%d retried uploads during the outage, want several", n)
	}
}

// complete answers 503 while the object store took the upload (a worker
// writing to B2 directly): only complete is retried, the output is
// uploaded once.
func TestCompleteRetriedThroughOutage(t *testing.T) {
	t.Parallel()
	eng := newGateEngine("musetalk")
	h := newHarness(t, harnessOptions{engines: []engine.Engine{eng}})
	var outage atomic.Bool
	outage.Store(true)
	h.rec.setFault(func(c *call) int {
		if outage.Load() && c.kind == "complete" {
			return http.StatusServiceUnavailable
		}
		return 0
	})
	h.start()
	id := h.submitDummy()
	eng.waitStarted(t)
	eng.release <- nil
	waitFor(t, "five retried completes", func() bool { return len(h.rec.calls("complete")) >= 5 })
	outage.Store(false)
	h.wantCompletedOnce(id)
	if n := h.retries("upload"); n != 0 {
		t.Errorf("the upload was retried %d times; only complete failed", n)
	}
}

// A stop (the grace after SIGTERM runs out) while the output cannot be
// delivered: the attempt is released (interruption budget, not failure),
// the uploaded object stays in the store and the output on disk.
func TestShutdownWhileDeliveringReleasesAndKeepsOutput(t *testing.T) {
	t.Parallel()
	eng := newGateEngine("musetalk")
	h := newHarness(t, harnessOptions{engines: []engine.Engine{eng}, grace: 300 * time.Millisecond})
	h.rec.setFault(func(c *call) int {
		if c.kind == "complete" {
			return http.StatusServiceUnavailable
		}
		return 0
	})
	h.start()
	id := h.submitDummy()
	eng.waitStarted(t)
	eng.release <- nil
	waitFor(t, "a retried complete", func() bool { return len(h.rec.calls("complete")) >= 2 })
	h.cancel() // the first SIGTERM; the grace runs out while complete fails
	h.waitRun()
	v := h.job(id)
	if len(v.Attempts) != 1 || v.Attempts[0].Outcome != protocol.OutcomeReleased || v.Failures != 0 || v.State != protocol.JobQueued {
		t.Fatalf("job %+v: want attempt 1 released, no failure", v)
	}
	if n := len(h.rec.calls("fail")); n != 0 {
		t.Errorf("%d fail calls", n)
	}
	if _, err := h.blobs.Stat(context.Background(), "outputs/"+id+"/1.mp4"); err != nil {
		t.Errorf("the uploaded output is gone from the store: %v", err)
	}
	kept := filepath.Join(h.w.dir, "attempts", id+"-1", "output.mp4")
	if b, err := os.ReadFile(kept); err != nil || string(b) != "rendered "+id {
		t.Errorf("the output on disk: %q, %v", b, err)
	}
	if logs := h.logs.String(); !strings.Contains(logs, "stays on disk") {
		t.Errorf("the kept output is not logged:\n%s", logs)
	}
}

// A cancel order (the job was cancelled meanwhile) ends the retries
// quietly: no failure, the worker goes idle.
func TestCancelOrderEndsDelivery(t *testing.T) {
	t.Parallel()
	eng := newGateEngine("musetalk")
	h := newHarness(t, harnessOptions{engines: []engine.Engine{eng}})
	h.rec.setFault(func(c *call) int {
		if c.kind == "complete" {
			return http.StatusServiceUnavailable
		}
		return 0
	})
	h.start()
	id := h.submitDummy()
	eng.waitStarted(t)
	eng.release <- nil
	waitFor(t, "a retried complete", func() bool { return len(h.rec.calls("complete")) >= 2 })
	h.public(http.MethodPost, "/v1/jobs/"+id+"/cancel", nil, nil)
	waitFor(t, "the worker to be idle", h.idle)
	if v := h.job(id); v.State != protocol.JobCancelled || v.Failures != 0 {
		t.Errorf("job %s with %d failures", v.State, v.Failures)
	}
	if n := len(h.rec.calls("fail", "release")); n != 0 {
		t.Errorf("%d fail/release calls after a cancel order", n)
	}
}

// The retries are bounded (Config.DeliverTimeout): then the attempt is
// given back (an interruption), never reported failed.
func TestDeliverTimeoutReleases(t *testing.T) {
	t.Parallel()
	eng := newGateEngine("musetalk")
	h := newHarness(t, harnessOptions{engines: []engine.Engine{eng}, before: func(w *Worker) { w.cfg.DeliverTimeout = 300 * time.Millisecond }})
	h.rec.setFault(func(c *call) int {
		if c.kind == "complete" {
			return http.StatusBadGateway
		}
		return 0
	})
	h.start()
	id := h.submitDummy()
	eng.waitStarted(t)
	eng.release <- nil
	waitFor(t, "the attempt to be given back", func() bool { return h.job(id).State != protocol.JobRunning })
	v := h.job(id)
	if v.Failures != 0 || v.Interruptions != 1 || v.Attempts[0].Outcome != protocol.OutcomeReleased ||
		!strings.Contains(v.Attempts[0].Error, "unreachable") {
		t.Errorf("job %+v: want the attempt released for the outage, no failure", v)
	}
	if n := len(h.rec.calls("fail")); n != 0 {
		t.Errorf("%d fail calls", n)
	}
	waitFor(t, "the worker to be idle", h.idle)
}

// Another writer replaced the output object after this attempt uploaded it
// (a worker with B2 credentials whose lease had run out): complete answers
// 409 output_mismatch, the worker uploads its output again and completes;
// the published bytes are the attempt's.
func TestOutputReplacedBeforeCompleteIsUploadedAgain(t *testing.T) {
	t.Parallel()
	eng := newGateEngine("musetalk")
	h := newHarness(t, harnessOptions{engines: []engine.Engine{eng}})
	var once sync.Once
	h.rec.setFault(func(c *call) int {
		if c.kind == "complete" {
			once.Do(func() {
				var req protocol.CompleteRequest
				_ = json.Unmarshal(c.body, &req)
				garbage := []byte("22 bytes of garbage!!!")
				if err := h.blobs.Put(context.Background(), req.OutputKey, bytes.NewReader(garbage), int64(len(garbage))); err != nil {
					t.Error(err)
				}
			})
		}
		return 0
	})
	h.start()
	id := h.submitDummy()
	eng.waitStarted(t)
	eng.release <- nil
	h.wantCompletedOnce(id)
	// The recorder logs a call after its answer: wait for the second.
	waitFor(t, "the second complete call", func() bool { return len(h.rec.calls("complete")) >= 2 })
	completes := h.rec.calls("complete")
	if len(completes) != 2 || completes[0].status != http.StatusConflict || completes[1].status != http.StatusOK {
		var st []int
		for _, c := range completes {
			st = append(st, c.status)
		}
		t.Errorf("complete answers %v, want 409 then 200", st)
	}
}

// Downloads of the inputs ride out a short outage of the object store too
// (here the control plane's blob route answers 503), without a failure.
func TestDownloadRetriedThroughOutage(t *testing.T) {
	t.Parallel()
	eng := newGateEngine("musetalk")
	h := newHarness(t, harnessOptions{
		engines: []engine.Engine{eng},
		blob: func(h *harness) blob.Store {
			s, err := controlblob.New(h.srv.URL, testKey, nil)
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
	})
	var gets atomic.Int32
	h.rec.setFault(func(c *call) int {
		if c.kind == "blob" && c.method == http.MethodGet && gets.Add(1) <= 4 {
			return http.StatusServiceUnavailable
		}
		return 0
	})
	h.start()
	id := h.submitDummy()
	eng.waitStarted(t)
	eng.release <- nil
	h.wantCompletedOnce(id)
}

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		err                     error
		transient, gone, mismat bool
	}{
		{&apiError{Status: 503}, true, false, false},
		{&apiError{Status: 502}, true, false, false},
		{&apiError{Status: 429}, true, false, false},
		{&apiError{Status: 409, Code: protocol.CodeStaleToken}, false, true, false},
		{&apiError{Status: 409, Code: protocol.CodeConflict}, false, true, false},
		{&apiError{Status: 404, Code: protocol.CodeNotFound}, false, true, false},
		{&apiError{Status: 409, Code: protocol.CodeOutputMismatch}, false, false, true},
		{&apiError{Status: 400, Code: protocol.CodeBadRequest}, false, false, false},
		{&controlblob.StatusError{Status: 503}, true, false, false},
		{&controlblob.StatusError{Status: 409, Code: protocol.CodeStaleToken}, false, true, false},
		{&controlblob.StatusError{Status: 413, Code: protocol.CodeTooLarge}, false, false, false},
		{errors.New("dial tcp 127.0.0.1:1: connect: connection refused"), true, false, false},
	} {
		err := classify(c.err)
		if got := transientErr(err); got != c.transient {
			t.Errorf("%v: transient %v, want %v", c.err, got, c.transient)
		}
		if got := errors.Is(err, errAttemptGone); got != c.gone {
			t.Errorf("%v: gone %v, want %v", c.err, got, c.gone)
		}
		if got := errors.Is(err, errOutputMismatch); got != c.mismat {
			t.Errorf("%v: mismatch %v, want %v", c.err, got, c.mismat)
		}
	}
}

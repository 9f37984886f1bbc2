package worker

// The worker's tests run it against the real control plane (control.New on
// an httptest server, with a SQLite store and a local object directory).
// A recording middleware in front of the control plane lets tests see and,
// where a test needs it, fail the worker's calls.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/avatargen/musetalk/blob"
	"github.com/avatargen/musetalk/control"
	"github.com/avatargen/musetalk/control/store/sqlite"
	"github.com/avatargen/musetalk/protocol"
	"github.com/avatargen/musetalk/worker/engine"
)

const (
	testKey       = "test-internal-key-s3cret"
	testPollEvery = 20 * time.Millisecond
)

// call is one request the worker made to the control plane.
type call struct {
	kind   string // heartbeat, claim, progress, complete, fail, release, blob
	method string
	path   string
	body   []byte
	status int
}

// recorder sits in front of the control plane.
type recorder struct {
	next http.Handler
	mu   sync.Mutex
	log  []call
	// fault, when set, may answer a request itself (status != 0).
	fault func(c *call) int
}

func kindOf(path string) string {
	if strings.HasPrefix(path, protocol.InternalBlobPath) {
		return "blob"
	}
	if !strings.HasPrefix(path, "/internal/") {
		return "public"
	}
	return path[strings.LastIndexByte(path, '/')+1:]
}

func (rc *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := call{kind: kindOf(r.URL.Path), method: r.Method, path: r.URL.Path}
	if c.kind != "blob" && c.kind != "public" {
		c.body, _ = io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(c.body))
	}
	rc.mu.Lock()
	fault := rc.fault
	rc.mu.Unlock()
	if fault != nil {
		if st := fault(&c); st != 0 {
			c.status = st
			rc.add(c)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(st)
			_ = json.NewEncoder(w).Encode(protocol.ErrorBody{Error: protocol.ErrorDetail{Code: protocol.CodeUnavailable, Message: "injected by the test"}})
			return
		}
	}
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	rc.next.ServeHTTP(sw, r)
	c.status = sw.status
	rc.add(c)
}

func (rc *recorder) add(c call) {
	rc.mu.Lock()
	rc.log = append(rc.log, c)
	rc.mu.Unlock()
}

func (rc *recorder) setFault(f func(c *call) int) {
	rc.mu.Lock()
	rc.fault = f
	rc.mu.Unlock()
}

// calls returns the recorded calls of the given kinds (all when none).
func (rc *recorder) calls(kinds ...string) []call {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []call
	for _, c := range rc.log {
		if len(kinds) == 0 || contains(kinds, c.kind) {
			out = append(out, c)
		}
	}
	return out
}

// heartbeats decodes the recorded heartbeats that the control plane accepted.
func (rc *recorder) heartbeats(t *testing.T) []protocol.Heartbeat {
	var out []protocol.Heartbeat
	for _, c := range rc.calls("heartbeat") {
		if c.status != http.StatusOK {
			continue
		}
		var hb protocol.Heartbeat
		if err := json.Unmarshal(c.body, &hb); err != nil {
			t.Fatalf("heartbeat body %s: %v", c.body, err)
		}
		out = append(out, hb)
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// syncBuffer collects logs from several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// harness is a control plane and one worker.
type harness struct {
	t       *testing.T
	cp      *control.Server
	srv     *httptest.Server
	rec     *recorder
	blobs   *blob.Dir
	offset  atomic.Int64 // added to the control plane's clock
	w       *Worker
	logs    *syncBuffer
	health  string // base URL of the worker's health server
	cancel  context.CancelFunc
	runDone chan error
}

type harnessOptions struct {
	engines        []engine.Engine
	grace          time.Duration
	controlTracing trace.TracerProvider
	workerTracing  trace.TracerProvider
	blob           func(h *harness) blob.Store // default: the control plane's directory
	before         func(w *Worker)             // adjusts seams before Run
	progressEvery  time.Duration               // default 10ms
}

func newHarness(t *testing.T, o harnessOptions) *harness {
	t.Helper()
	h := &harness{t: t, logs: &syncBuffer{}}
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "control.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if h.blobs, err = blob.NewDir(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.blobs.Close() })
	h.cp, err = control.New(control.Config{
		Store: st, Blob: h.blobs, InternalAPIKey: testKey, TracerProvider: o.controlTracing,
		Now: func() time.Time { return time.Now().Add(time.Duration(h.offset.Load())) },
	})
	if err != nil {
		t.Fatal(err)
	}
	h.rec = &recorder{next: h.cp.Handler()}
	h.srv = httptest.NewServer(h.rec)
	t.Cleanup(h.srv.Close)

	bs := blob.Store(h.blobs)
	if o.blob != nil {
		bs = o.blob(h)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.health = "http://" + ln.Addr().String()
	cfg := Config{
		OrchestratorBaseURL: h.srv.URL, InternalAPIKey: testKey, WorkerType: protocol.WorkerMain,
		Provider: ProviderOther, GPUClass: "TEST_GPU", PollInterval: testPollEvery,
		WorkerID: "w-" + strings.NewReplacer("/", "-", " ", "-").Replace(t.Name()),
		Blob:     bs, Engines: o.engines, HealthListener: ln, WorkDir: t.TempDir(), Grace: o.grace,
		Version: "test", ProgressEvery: 10 * time.Millisecond, TracerProvider: o.workerTracing,
		Logger: slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if cfg.Grace == 0 {
		cfg.Grace = time.Hour
	}
	if o.progressEvery > 0 {
		cfg.ProgressEvery = o.progressEvery
	}
	if h.w, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	h.w.retryBase = time.Millisecond
	if o.before != nil {
		o.before(h.w)
	}
	return h
}

// start runs the worker until the test ends.
func (h *harness) start() { h.startWith(nil) }

// startWith runs the worker; with sigs it runs RunWithSignals on them.
func (h *harness) startWith(sigs chan os.Signal) {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.runDone = make(chan error, 1)
	go func() {
		if sigs != nil {
			h.runDone <- h.w.RunWithSignals(ctx, sigs)
			return
		}
		h.runDone <- h.w.Run(ctx)
	}()
	h.t.Cleanup(func() {
		h.w.Stop()
		cancel()
		h.waitRun()
		if logs := h.logs.String(); strings.Contains(logs, testKey) {
			h.t.Errorf("the internal API key appears in the worker's logs")
		}
	})
}

// waitRun waits for Run to return and checks it returned nil.
func (h *harness) waitRun() {
	h.t.Helper()
	select {
	case err, ok := <-h.runDone:
		if ok && err != nil {
			h.t.Errorf("Run returned %v, want nil", err)
		}
		if ok {
			close(h.runDone)
		}
	case <-time.After(30 * time.Second):
		h.t.Fatal("Run did not return")
	}
}

// waitFor polls cond until it holds; the deadline only guards against a
// hung test, the assertion is cond itself.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// put stores an input object.
func (h *harness) put(key string, data []byte) {
	h.t.Helper()
	if err := h.blobs.Put(context.Background(), key, bytes.NewReader(data), int64(len(data))); err != nil {
		h.t.Fatal(err)
	}
}

// public calls the control plane's public API and decodes a 2xx answer.
func (h *harness) public(method, path string, body, out any) {
	h.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, h.srv.URL+path, r)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		h.t.Fatalf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			h.t.Fatalf("%s %s: %v: %s", method, path, err, data)
		}
	}
}

// submit queues a job over inputs stored under the given keys.
func (h *harness) submit(params protocol.JobParams, avatarKey, audioKey string) string {
	h.t.Helper()
	var v protocol.JobView
	h.public(http.MethodPost, "/v1/jobs", protocol.SubmitRequest{AvatarKey: avatarKey, AudioKey: audioKey, Params: params}, &v)
	return v.ID
}

// submitDummy queues a job over small placeholder inputs (for engines that
// do not read them).
func (h *harness) submitDummy() string {
	h.put("inputs/dummy/avatar.png", []byte("avatar bytes"))
	h.put("inputs/dummy/audio.wav", []byte("audio bytes"))
	return h.submit(protocol.JobParams{}, "inputs/dummy/avatar.png", "inputs/dummy/audio.wav")
}

func (h *harness) job(id string) protocol.JobView {
	h.t.Helper()
	var v protocol.JobView
	h.public(http.MethodGet, "/v1/jobs/"+id, nil, &v)
	return v
}

// healthGet fetches one of the worker's health routes over HTTP.
func (h *harness) healthGet(path string) (int, Health) {
	h.t.Helper()
	resp, err := http.Get(h.health + path)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body Health
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		h.t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, body
}

// idle reports whether the worker holds no attempt.
func (h *harness) idle() bool { return h.w.Health().JobID == "" }

// gateEngine is a stand-in for MuseTalk whose runs the test steps through:
// each Run reports progress, announces itself on started and waits for the
// test (release) or its context. It writes a small output file.
type gateEngine struct {
	name     string
	started  chan *engine.Job
	release  chan error // the run returns what it receives
	causes   chan error // context.Cause of a run whose ctx ended
	checkErr error
	cached   []string
}

func newGateEngine(name string) *gateEngine {
	return &gateEngine{name: name, started: make(chan *engine.Job, 16), release: make(chan error, 16), causes: make(chan error, 16)}
}

func (g *gateEngine) Name() string { return g.name }

func (g *gateEngine) Check(context.Context) (engine.CheckResult, error) {
	return engine.CheckResult{Device: "test-device", WeightsPresent: g.checkErr == nil}, g.checkErr
}

func (g *gateEngine) CachedAvatars() []string { return g.cached }

func (g *gateEngine) Run(ctx context.Context, job *engine.Job, progress engine.ProgressFunc) error {
	for _, p := range []string{job.AvatarPath, job.AudioPath} {
		if _, err := os.Stat(p); err != nil {
			return engine.Permanent(fmt.Errorf("input not downloaded: %w", err))
		}
	}
	progress(protocol.Progress{Stage: "generate", FramesDone: 0, FramesTotal: 10})
	progress(protocol.Progress{Stage: "generate", FramesDone: 3, FramesTotal: 10})
	g.started <- job
	select {
	case err := <-g.release:
		if err != nil {
			return err
		}
		progress(protocol.Progress{Stage: "generate", FramesDone: 10, FramesTotal: 10})
		return os.WriteFile(job.OutputPath, []byte("rendered "+job.ID), 0o644)
	case <-ctx.Done():
		g.causes <- context.Cause(ctx)
		return ctx.Err()
	}
}

// waitStarted waits for the engine to start a run.
func (g *gateEngine) waitStarted(t *testing.T) *engine.Job {
	t.Helper()
	select {
	case j := <-g.started:
		return j
	case <-time.After(30 * time.Second):
		t.Fatal("the engine was never started")
		return nil
	}
}

func (g *gateEngine) waitCause(t *testing.T) error {
	t.Helper()
	select {
	case err := <-g.causes:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("the engine's context was never cancelled")
		return nil
	}
}

var errTestEngine = errors.New("test engine failure")

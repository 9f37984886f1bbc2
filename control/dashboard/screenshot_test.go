package dashboard_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/avatargen/musetalk/control"
	"github.com/avatargen/musetalk/protocol"
)

// fakeClock is the control plane's clock in TestScreenshots.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// simWorker is one worker of TestScreenshots' fleet.
type simWorker struct {
	id, provider, gpu string
	pool              protocol.WorkerType
	fps               int // frames per second it renders at the end
	a                 *protocol.Assignment
	selfCheck         *protocol.SelfCheck
	avatars           []string
}

func (w *simWorker) heartbeat(e *env, status protocol.WorkerStatus, p *protocol.Progress) protocol.HeartbeatResponse {
	hb := protocol.Heartbeat{Status: status, Provider: w.provider, GPUClass: w.gpu, WorkerType: w.pool,
		Version: "0.9.0", SelfCheck: w.selfCheck, CachedAvatars: w.avatars, Progress: p}
	if w.a != nil {
		hb.JobID, hb.Attempt = w.a.JobID, w.a.Attempt
	}
	return e.heartbeat(w.id, hb)
}

// TestScreenshots runs an hour of a small fleet on a simulated clock
// (submissions, completions, failures, a worker that drops out twice,
// a backlog building at the end), then shows every page in the browser:
// the pages must render that state, and with DASHBOARD_SCREENSHOTS=dir
// (docs/dashboard in the README) it writes their full-page PNGs there.
func TestScreenshots(t *testing.T) {
	if raceDetector {
		// scripts/test's plain pass runs it; the race pass would only
		// repeat its simulated hour several times slower.
		t.Skip("not under -race: the plain test pass runs it")
	}
	dir := screenshotDir(t)
	began := time.Now()
	clock := &fakeClock{t: time.Date(2026, 3, 14, 8, 0, 0, 0, time.UTC)}
	e := startWith(t, func(c *control.Config) {
		c.PublicAPIKeys = []string{publicKey}
		c.Now = clock.Now
		c.HeartbeatInterval = 5 * time.Second
		// A real tracer, so that jobs carry a trace id for the job page.
		tp := sdktrace.NewTracerProvider()
		t.Cleanup(func() { tp.Shutdown(context.Background()) })
		c.TracerProvider = tp
	})
	b := newBrowser(t, e.ts.URL)
	op := e.client()
	op.login(publicKey)
	sample := func() {
		if resp, body := op.do("GET", "/dashboard/api/queue", nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("live queue: %d %s", resp.StatusCode, body)
		}
	}
	video := testVideo(t)

	ok := &protocol.SelfCheck{Engine: "musetalk", Device: "cuda:0", FreeDiskBytes: 61 << 30, WeightsPresent: true}
	workers := []*simWorker{
		{id: "salad-4090-a1", provider: "salad", gpu: "RTX_4090", pool: protocol.WorkerMain, fps: 14},
		{id: "salad-4090-b7", provider: "salad", gpu: "RTX_4090", pool: protocol.WorkerMain, fps: 13},
		{id: "salad-4090-c3", provider: "salad", gpu: "RTX_4090", pool: protocol.WorkerMain, fps: 15},
		{id: "salad-3060-d2", provider: "salad", gpu: "RTX_3060", pool: protocol.WorkerMain, fps: 5},
		{id: "salad-3060-e9", provider: "salad", gpu: "RTX_3060", pool: protocol.WorkerMain, fps: 6},
		{id: "vast-3090-11", provider: "vast", gpu: "RTX_3090", pool: protocol.WorkerTransient, fps: 10},
		{id: "vast-3090-12", provider: "vast", gpu: "RTX_3090", pool: protocol.WorkerTransient, fps: 9},
	}
	for i, w := range workers {
		sc := *ok
		sc.Device = fmt.Sprintf("cuda:0 %s", strings.ReplaceAll(w.gpu, "_", " "))
		w.selfCheck = &sc
		w.avatars = []string{fmt.Sprintf("avatar-%02d", i), fmt.Sprintf("avatar-%02d", i+7)}
	}
	flaky := workers[6] // drops out holding a job after minutes 17 and 38, and for good at 57
	drops := []int{17, 38}
	var rescued string // a job flaky lost, to show its history

	submitted := 0
	for m := range 60 {
		clock.Advance(time.Minute)
		n := 2 + m%3 + (m/12)%2
		if m >= 45 {
			n = 10 // a backlog builds
		}
		for range n {
			submitted++
			req := protocol.SubmitRequest{}
			switch {
			case submitted%9 == 0:
				req.Priority = 10
			case submitted%7 == 0:
				req.Priority = -5
			}
			if submitted%5 == 0 {
				req.WorkerType = protocol.WorkerMain
			}
			e.submit(publicKey, req)
		}
		for k := range workers {
			i := (k + m) % len(workers) // no worker always claims first
			w := workers[i]
			if w == flaky && m == 56 {
				w.selfCheck = &protocol.SelfCheck{Engine: "musetalk", Device: "cuda:0 RTX 3090", FreeDiskBytes: 1 << 30,
					Error: "engine musetalk: cuInit: CUDA_ERROR_NO_DEVICE (no usable GPU)"}
			}
			if w == flaky && (m >= 57 || len(drops) > 0 && m >= drops[0] && w.a != nil) {
				if w.a != nil {
					if rescued == "" {
						rescued = w.a.JobID
					}
					if m < 57 {
						drops = drops[1:]
					}
				}
				w.a = nil // lost with the worker
				continue
			}
			if w.a != nil {
				switch {
				case m == 30 && i == 3:
					e.fail(w.a, "engine musetalk: CUDA out of memory: tried to allocate 1.20 GiB (batch 20 on an RTX 3060 12 GB)")
				case m == 50 && i == 0:
					e.fail(w.a, "audio: the track has no speech (0 frames of features after trimming silence)")
				case (m+i)%11 == 0:
					e.failWith(w.a, "ffmpeg: encoder exited with status 1: broken pipe", true)
				default:
					e.finish(w.a, video)
				}
				w.a = nil
			}
			w.heartbeat(e, protocol.WorkerIdle, nil)
			w.a = e.tryClaim(w.id)
		}
		if err := e.srv.Sweep(context.Background()); err != nil {
			t.Fatal(err)
		}
		sample()
	}

	t.Logf("an hour of the fleet simulated in %v", time.Since(began).Round(time.Millisecond))
	// The last minute: everyone at work reports progress twice, so that
	// the fleet shows frames per second; one worker is drained; the
	// flaky one is offline, its last self-check failed.
	for step, stage := range []protocol.Progress{{Stage: "generate", FramesDone: 0, FramesTotal: 250}, {Stage: "generate", FramesTotal: 250}} {
		clock.Advance(8 * time.Second)
		for i, w := range workers {
			if w.a == nil {
				continue
			}
			p := stage
			p.FramesDone = 40 + 9*i + step*8*w.fps
			w.heartbeat(e, protocol.WorkerBusy, &p)
		}
		if resp, body := op.do("GET", "/dashboard/api/fleet", nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("live fleet: %d %s", resp.StatusCode, body)
		}
	}
	if status, data := e.call("POST", protocol.Path(protocol.DrainWorkerRoute, workers[4].id), publicKey, nil, nil); status != http.StatusOK {
		t.Fatalf("drain: %d %s", status, data)
	}
	running := workers[0].a
	if running == nil || rescued == "" {
		t.Fatalf("the simulation left no running job (%v) or no rescued one (%q)", running, rescued)
	}

	// Login, with a wrong key first: the refusal is on the page.
	b.open("/dashboard/fleet", "#key")
	b.login("wrong-key", "#login-error")
	b.shot(dir, "login.png")
	b.login(publicKey, "#worker-salad-4090-a1")
	b.waitFor("the live status", `document.querySelector("#live-status").textContent.startsWith("live")`)
	if got := b.text("#worker-total"); got != "7" {
		t.Fatalf("fleet shows %s workers, want 7", got)
	}
	b.shot(dir, "fleet.png")

	b.open("/dashboard/queue", "#depth-queued")
	b.waitFor("the live status", `document.querySelector("#live-status").textContent.startsWith("live")`)
	if got := b.eval(`String(document.querySelectorAll("svg.chart rect.bar").length)`); got == "0" {
		t.Fatal("the queue's charts have no bars")
	}
	b.shot(dir, "queue.png")

	b.open("/dashboard/jobs/"+running.JobID, "#job-state")
	if got := b.text("#job-state"); got != "running" {
		t.Fatalf("job %s shows %s, want running", running.JobID, got)
	}
	// The trace id is the one in the job's W3C trace context.
	tp := e.job(publicKey, running.JobID).TraceContext["traceparent"]
	if parts := strings.Split(tp, "-"); len(parts) != 4 || b.text("#trace-id") != parts[1] {
		t.Fatalf("the job page shows trace id %q; the job's traceparent is %q", b.text("#trace-id"), tp)
	}
	b.shot(dir, "job-running.png")

	// The rescued job: interrupted with its worker, run again elsewhere;
	// with ffmpeg its result plays in the page's <video>.
	b.open("/dashboard/jobs/"+rescued, "#attempts")
	if got := b.text("#attempts"); !strings.Contains(got, "interrupted") {
		t.Fatalf("job %s's attempts do not show the interruption: %q", rescued, got)
	}
	if e.job(publicKey, rescued).State == protocol.JobSucceeded {
		b.do(chromedp.WaitVisible(chromedp.CSS("#result-video")))
		if len(video) > 1000 {
			b.waitFor("the video's first frame", `document.querySelector("#result-video").readyState >= 2`)
		}
	}
	b.shot(dir, "job-succeeded.png")
}

// testVideo returns a 2-second H.264 test pattern made by ffmpeg, or a few
// bytes without ffmpeg (the <video> then shows nothing, which is all the
// screenshots lose).
func testVideo(t *testing.T) []byte {
	t.Helper()
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		t.Log("no ffmpeg: results are placeholder bytes")
		return []byte("not a video")
	}
	out := filepath.Join(t.TempDir(), "result.mp4")
	cmd := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error",
		"-f", "lavfi", "-i", "testsrc2=size=384x288:rate=25", "-f", "lavfi", "-i", "sine=frequency=330:sample_rate=16000",
		"-t", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "veryfast", "-c:a", "aac", "-movflags", "+faststart", "-y", out)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, msg)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

package dashboard_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/avatargen/musetalk/internal/testenv"
	"github.com/avatargen/musetalk/protocol"
)

// The browser tests drive the dashboard in headless Chromium (Debian's
// chromium package) through the DevTools protocol: what an operator sees
// and clicks, against a real control plane. Without chromium they skip on
// a developer's machine and fail under CI.

// screenshotsEnv names the directory TestScreenshots writes its PNGs to
// (docs/dashboard in the README): DASHBOARD_SCREENSHOTS=docs/dashboard
// (relative to the repository root, or absolute).
const screenshotsEnv = "DASHBOARD_SCREENSHOTS"

// browser is one headless Chromium with one tab.
type browser struct {
	t    *testing.T
	ctx  context.Context
	base string
}

func newBrowser(t *testing.T, base string) *browser {
	t.Helper()
	var path string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		testenv.Missing(t, "chromium is not installed (Debian: apt-get install chromium; scripts/test installs it)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,                           // tests run as root in CI
		chromedp.Flag("disable-dev-shm-usage", true), // containers' /dev/shm is small
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc()
	})
	// The first Run starts the browser, which lives as long as the context
	// of that call: this one has no timeout; later calls derive theirs.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting %s: %v", path, err)
	}
	return &browser{t: t, ctx: ctx, base: base}
}

// do runs actions, each batch within 30 s (generous: CI runs other
// packages' tests on the same two cores).
func (b *browser) do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("browser: %v", err)
	}
}

// open navigates to a dashboard path and waits for sel.
func (b *browser) open(path, sel string) {
	b.t.Helper()
	b.do(chromedp.Navigate(b.base+path), chromedp.WaitVisible(chromedp.CSS(sel)))
}

// eval evaluates a JavaScript expression.
func (b *browser) eval(expr string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		b.t.Fatalf("browser: evaluating %s: %v", expr, err)
	}
	return v
}

// text returns the text of the first element sel matches ("" when none).
func (b *browser) text(sel string) string {
	b.t.Helper()
	return b.eval(fmt.Sprintf(`(document.querySelector(%q)?.textContent ?? "").trim()`, sel))
}

// waitFor waits until a JavaScript predicate holds, without reloading.
func (b *browser) waitFor(what, predicate string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 25*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](predicate,
		chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		b.t.Fatalf("browser: waiting for %s (%s): %v", what, predicate, err)
	}
}

// textIs is a predicate: sel's text equals want.
func textIs(sel, want string) string {
	return fmt.Sprintf(`(document.querySelector(%q)?.textContent ?? "").trim() === %q`, sel, want)
}

// markPage marks the current document; stillSamePage checks the mark, so
// that a test can tell a live update from a reload.
func (b *browser) markPage() { b.eval(`(window.__sameDocument = "yes")`) }

func (b *browser) stillSamePage() {
	b.t.Helper()
	if got := b.eval(`window.__sameDocument ?? "reloaded"`); got != "yes" {
		b.t.Fatal("the page was reloaded; want a live update")
	}
}

// login logs in through the login form and waits for sel.
func (b *browser) login(key, sel string) {
	b.t.Helper()
	b.do(chromedp.WaitVisible(chromedp.CSS("#key")))
	b.eval(`(document.querySelector("#key").value = "")`)
	b.do(chromedp.SendKeys(chromedp.CSS("#key"), key),
		chromedp.Click(chromedp.CSS("#login-submit")),
		chromedp.WaitVisible(chromedp.CSS(sel)))
}

// TestBrowserOperatorFlow: a wrong key is refused; the right one shows
// the fleet; a worker's progress moves on the fleet and the job page
// without a reload; the buttons cancel and retry jobs and drain and
// undrain a worker, as the public API then confirms.
func TestBrowserOperatorFlow(t *testing.T) {
	e := start(t, publicKey)
	e.heartbeat("salad-1", protocol.Heartbeat{Provider: "salad", GPUClass: "RTX_4090",
		SelfCheck: &protocol.SelfCheck{Engine: "musetalk", Device: "cuda:0 RTX 4090", FreeDiskBytes: 80 << 30, WeightsPresent: true}})
	e.heartbeat("salad-2", protocol.Heartbeat{Provider: "salad", GPUClass: "RTX_3060"})
	job := e.submit(publicKey, protocol.SubmitRequest{})
	b := newBrowser(t, e.ts.URL)

	// A wrong key is refused with a message, and nothing opens.
	b.open("/dashboard/fleet", "#key")
	b.login("not-the-key", "#login-error")
	if msg := b.text("#login-error"); !strings.Contains(msg, "not one of this control plane's public API keys") {
		t.Fatalf("login error = %q", msg)
	}
	if loc := b.eval(`location.pathname`); loc != "/dashboard/login" {
		t.Fatalf("after a wrong key the browser is at %s", loc)
	}
	// The right key opens the fleet page, which shows the worker.
	b.login(publicKey, "#worker-salad-1")
	if got := b.text("#worker-salad-1 [data-field=status]"); got != "idle" {
		t.Fatalf("salad-1 shows %q, want idle", got)
	}

	// The worker claims the job and reports progress: the fleet page
	// follows without a reload.
	b.markPage()
	a := e.claim("salad-1")
	if a.JobID != job.ID {
		t.Fatalf("claimed %s, want %s", a.JobID, job.ID)
	}
	hb := protocol.Heartbeat{Status: protocol.WorkerBusy, Provider: "salad", GPUClass: "RTX_4090", JobID: a.JobID, Attempt: a.Attempt,
		Progress: &protocol.Progress{Stage: "generate", FramesDone: 10, FramesTotal: 100}}
	e.heartbeat("salad-1", hb)
	b.waitFor("the fleet to show 10/100", textIs("#worker-salad-1 [data-field=frames]", "10/100"))
	b.waitFor("salad-1 busy", textIs("#worker-salad-1 [data-field=status]", "busy"))
	b.stillSamePage()

	// The job page shows the progress moving as the worker reports it.
	b.open("/dashboard/jobs/"+job.ID, "#job-state")
	b.markPage()
	for _, done := range []int{35, 60, 85} {
		e.progress(a, "generate", done, 100)
		b.waitFor(fmt.Sprintf("the job page to show %d%%", done), textIs("#job-progress", fmt.Sprintf("%d%%", done)))
		b.waitFor("the generate stage's frames", textIs("[data-stage=generate] .frames", fmt.Sprintf("%d/100", done)))
	}
	b.stillSamePage()

	// Cancel: the button cancels the job; the page and the API agree, and
	// the worker learns it from its next heartbeat.
	b.do(chromedp.Click(chromedp.CSS("#cancel-job")))
	b.waitFor("the job to show cancelled", textIs("#job-state", "cancelled"))
	b.waitFor("the flash", `document.querySelector("#flash").textContent.includes("cancelled")`)
	if got := e.job(publicKey, job.ID); got.State != protocol.JobCancelled {
		t.Fatalf("after the click the job is %s", got.State)
	}
	if resp := e.heartbeat("salad-1", hb); resp.Cancel == nil || resp.Cancel.JobID != job.ID {
		t.Fatalf("the worker's heartbeat answer has no cancel order: %+v", resp)
	}

	// Retry: a failed job goes back to the queue.
	failed := e.submit(publicKey, protocol.SubmitRequest{})
	e.fail(e.claim("salad-2"), "audio track is empty")
	b.open("/dashboard/jobs/"+failed.ID, "#retry-job")
	if got := b.text("#job-error"); !strings.Contains(got, "audio track is empty") {
		t.Fatalf("the failed job's page shows %q", got)
	}
	b.do(chromedp.Click(chromedp.CSS("#retry-job")))
	b.waitFor("the job to show queued", textIs("#job-state", "queued"))
	if got := e.job(publicKey, failed.ID); got.State != protocol.JobQueued || got.Failures != 0 {
		t.Fatalf("after retry the job is %s with %d failures", got.State, got.Failures)
	}

	// Drain and undrain a worker from the fleet page.
	b.open("/dashboard/fleet", "#worker-salad-2")
	b.do(chromedp.Click(chromedp.CSS("#worker-salad-2 button[data-test=drain]")))
	b.waitFor("the drain badge", `document.querySelector("#worker-salad-2 [data-field=drain]") !== null`)
	if !e.worker(publicKey, "salad-2").DrainRequest {
		t.Fatal("salad-2 has no drain request after the click")
	}
	if resp := e.heartbeat("salad-2", protocol.Heartbeat{Provider: "salad", GPUClass: "RTX_3060"}); !resp.Drain {
		t.Fatal("salad-2's heartbeat answer does not say drain")
	}
	b.do(chromedp.Click(chromedp.CSS("#worker-salad-2 button[data-test=undrain]")))
	b.waitFor("the drain badge to go", `document.querySelector("#worker-salad-2 [data-field=drain]") === null`)
	if e.worker(publicKey, "salad-2").DrainRequest {
		t.Fatal("salad-2 still has a drain request after undrain")
	}

	// Logging out ends the session: the pages go back to the login form.
	b.do(chromedp.Click(chromedp.CSS("#logout")), chromedp.WaitVisible(chromedp.CSS("#key")))
	b.open("/dashboard/queue", "#key")
}

// screenshotDir returns where TestScreenshots writes, or "" for nowhere.
func screenshotDir(t *testing.T) string {
	dir := os.Getenv(screenshotsEnv)
	if dir == "" || filepath.IsAbs(dir) {
		return dir
	}
	// Relative to the repository root: two levels above this package.
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(wd, "..", "..", dir)
}

// shot takes a full-page PNG of the current page into dir/name.
func (b *browser) shot(dir, name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if len(png) < 1000 {
		b.t.Fatalf("screenshot %s: only %d bytes", name, len(png))
	}
	if dir == "" {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("wrote %s (%d KiB)", filepath.Join(dir, name), len(png)>>10)
}

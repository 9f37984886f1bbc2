//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/avatargen/musetalk/protocol"
)

// Binaries and media made once by TestMain.
var (
	musetalkBin     string // the real CLI
	scriptWorkerBin string // e2e/internal/scriptworker
	avatarPNG       string // a tiny still image made with ffmpeg ("" without ffmpeg)
	speechWAV       string // two seconds of sine made with ffmpeg ("" without ffmpeg)
	skipReason      string // set when the suite cannot run
)

const internalKey = "e2e-internal-key-0123456789"

func TestMain(m *testing.M) {
	flag.Parse()
	// The scenarios spend their time waiting on other processes, not on
	// the CPU: run them all at once unless -parallel was given.
	parallelSet := false
	flag.Visit(func(f *flag.Flag) { parallelSet = parallelSet || f.Name == "test.parallel" })
	if !parallelSet {
		_ = flag.Set("test.parallel", "16")
	}
	os.Exit(runMain(m))
}

// TestSourcesAreCacheKeys opens the sources the binaries are built from
// (see touchSources); the go command logs file opens only while tests run.
func TestSourcesAreCacheKeys(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if err := touchSources(root); err != nil {
		t.Fatal(err)
	}
}

// touchSources opens every Go source and module file of the repository.
// The binaries under test are built from them by a subprocess, which the
// go command's test cache cannot see; files the test process itself opens
// become part of the cache key, so a changed source reruns the suite
// instead of replaying a stale pass.
func touchSources(root string) error {
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if name := d.Name(); strings.HasSuffix(name, ".go") || strings.HasSuffix(name, ".s") || name == "go.mod" || name == "go.sum" {
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			f.Close()
		}
		return nil
	})
}

func runMain(m *testing.M) int {
	if testing.Short() {
		skipReason = "end-to-end tests skipped in -short mode"
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "musetalk-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	root, err := repoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
	}
	musetalkBin = filepath.Join(dir, "musetalk")
	scriptWorkerBin = filepath.Join(dir, "scriptworker")
	for _, b := range []struct{ out, pkg string }{
		{musetalkBin, "./cmd/musetalk"},
		{scriptWorkerBin, "./e2e/internal/scriptworker"},
	} {
		cmd := exec.Command(goBin, "build", "-o", b.out, b.pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: go build %s: %v\n%s", b.pkg, err, out)
			return 1
		}
	}
	if _, err := exec.LookPath("ffmpeg"); err == nil {
		png, wav := filepath.Join(dir, "avatar.png"), filepath.Join(dir, "speech.wav")
		for _, args := range [][]string{
			{"-f", "lavfi", "-i", "color=c=0x3366cc:s=64x64", "-frames:v", "1", png},
			{"-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-ac", "1", "-ar", "16000", wav},
		} {
			cmd := exec.Command("ffmpeg", append([]string{"-hide_banner", "-loglevel", "error", "-y"}, args...)...)
			if out, err := cmd.CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "e2e: ffmpeg %v: %v\n%s", args, err, out)
				return 1
			}
		}
		avatarPNG, speechWAV = png, wav
	}
	return m.Run()
}

// repoRoot finds the module root from the test's working directory.
func repoRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", errors.New("no go.mod above the working directory")
		}
		d = parent
	}
}

func needSuite(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}

// ---------------------------------------------------------------- processes

// proc is one child process, in its own process group, with its output in
// a log file. It is killed (the whole group) when the test ends.
type proc struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited
	state   *os.ProcessState
}

// startProc starts bin with args and exactly env (plus PATH and HOME).
// stdout, when not "", gets the standard output instead of the log.
func startProc(t *testing.T, dir, name, bin string, args, env []string, stdout string) *proc {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "TMPDIR=" + dir}, env...)
	cmd.Stderr = logf
	cmd.Stdout = logf
	if stdout != "" {
		outf, err := os.Create(stdout)
		if err != nil {
			t.Fatal(err)
		}
		defer outf.Close()
		cmd.Stdout = outf
	}
	// Own group: kill -9 reaches children (ffmpeg); and the child dies
	// with the test binary.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	p := &proc{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		p.state = cmd.ProcessState
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill9()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s (pid %d) did not die after SIGKILL", name, cmd.Process.Pid)
		}
		if t.Failed() {
			t.Logf("---- last lines of %s ----\n%s", name, tailFile(logPath, 60))
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill9 kills the process group at once.
func (p *proc) kill9() {
	if !p.exited() {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
}

// signal sends sig to the process itself (as a container runtime does).
func (p *proc) signal(sig syscall.Signal) error {
	return p.cmd.Process.Signal(sig)
}

// wait waits for the process to exit and returns its exit code (-1 when a
// signal killed it).
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.state.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %v", p.name, timeout)
		return 0
	}
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	return testPorts.take(t)
}

// portAllocator hands out loopback addresses for processes that must be
// started (and restarted) on a known port. Ports come from below Linux's
// ephemeral range (32768–60999), so no outgoing connection or bind to
// port 0 (by any test process) can take one between the check and the
// child's bind, and each is handed out once per test binary, so parallel
// tests never share one.
type portAllocator struct {
	mu   sync.Mutex
	next int
	used map[int]bool
}

var testPorts = &portAllocator{used: map[int]bool{}}

func (a *portAllocator) take(t *testing.T) string {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	const lo, hi = 20000, 32000
	if a.next == 0 {
		a.next = lo + os.Getpid()%(hi-lo) // spread concurrent test binaries
	}
	for range hi - lo {
		port := a.next
		a.next++
		if a.next >= hi {
			a.next = lo
		}
		if a.used[port] {
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue // taken by another process
		}
		ln.Close()
		a.used[port] = true
		return addr
	}
	t.Fatal("no free loopback port in 20000-32000")
	return ""
}

// ------------------------------------------------------------------ polling

// eventually calls check every interval until it reports done or timeout
// passes, then fails the test with check's last message.
func eventually(t *testing.T, timeout, interval time.Duration, what string, check func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, msg := check()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not so after %v: %s", what, timeout, msg)
		}
		time.Sleep(interval)
	}
}

// ------------------------------------------------------------------ cluster

// workerKind picks the worker program.
type workerKind int

const (
	scriptWorkers  workerKind = iota // scriptworker: the worker library with the scripted engine
	previewWorkers                   // `musetalk worker --engine preview`
)

type clusterOptions struct {
	kind  workerKind
	poll  time.Duration // POLL_INTERVAL_SEC and --heartbeat-interval; default 1s
	grace time.Duration // workers' --grace; default 10s
	// viaControl starts the workers without B2 variables: they read and
	// write objects through the control plane's blob routes (controlblob).
	viaControl bool
}

// b2Info is what `musetalk dev b2-server` prints.
type b2Info struct {
	URL    string `json:"url"`
	KeyID  string `json:"key_id"`
	AppKey string `json:"app_key"`
	Bucket string `json:"bucket"`
}

// cluster is one B2 test server, one control plane on SQLite and two
// workers, all real processes, private to one test.
type cluster struct {
	t         *testing.T
	dir       string
	opts      clusterOptions
	b2        b2Info
	eventsDir string // the scripted engines' event directory

	controlAddr string
	controlArgs []string
	controlEnv  []string
	controlN    int
	control     *proc

	workers []*workerProc
	http    *http.Client
}

type workerProc struct {
	id         string
	healthAddr string
	*proc
}

func newCluster(t *testing.T, opts clusterOptions) *cluster {
	t.Helper()
	needSuite(t)
	if opts.poll == 0 {
		opts.poll = time.Second
	}
	if opts.grace == 0 {
		opts.grace = 10 * time.Second
	}
	if opts.kind == previewWorkers && avatarPNG == "" {
		t.Skip("ffmpeg is not installed")
	}
	dir := t.TempDir()
	c := &cluster{t: t, dir: dir, opts: opts, eventsDir: filepath.Join(dir, "events"),
		http: &http.Client{Timeout: 15 * time.Second}}
	if err := os.MkdirAll(c.eventsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.http.CloseIdleConnections)

	// The B2 test server prints its address once it listens.
	b2out := filepath.Join(dir, "b2.out")
	startProc(t, dir, "b2", musetalkBin, []string{"dev", "b2-server", "--addr", "127.0.0.1:0"}, nil, b2out)
	eventually(t, 20*time.Second, 50*time.Millisecond, "b2-server prints its address", func() (bool, string) {
		b, _ := os.ReadFile(b2out)
		line, _, ok := bytes.Cut(b, []byte("\n"))
		if !ok {
			return false, fmt.Sprintf("stdout so far: %q", b)
		}
		if err := json.Unmarshal(line, &c.b2); err != nil {
			t.Fatalf("b2-server's first line %q: %v", line, err)
		}
		return true, ""
	})
	b2env := []string{"B2_ENDPOINT=" + c.b2.URL, "B2_KEY_ID=" + c.b2.KeyID, "B2_APP_KEY=" + c.b2.AppKey, "B2_BUCKET_NAME=" + c.b2.Bucket}

	c.controlEnv = append([]string{"INTERNAL_API_KEY=" + internalKey}, b2env...)
	for try := 1; ; try++ {
		c.controlAddr = freeAddr(t)
		c.controlArgs = []string{"control", "--addr", c.controlAddr, "--data-dir", filepath.Join(dir, "control-data"),
			"--heartbeat-interval", opts.poll.String()}
		if c.startControl() || try == 3 {
			break
		}
	}
	if c.control.exited() {
		t.Fatalf("the control plane did not start:\n%s", tailFile(c.control.logPath, 20))
	}

	workerEnv := b2env
	if opts.viaControl {
		workerEnv = nil
	}
	for i := 1; i <= 2; i++ {
		c.workers = append(c.workers, c.startWorker(fmt.Sprintf("%s-w%d", sanitize(t.Name()), i), workerEnv))
	}
	// Both workers registered, idle and ready before anything is submitted.
	eventually(t, 30*time.Second, 100*time.Millisecond, "both workers idle", func() (bool, string) {
		ws, err := c.workerList()
		if err != nil {
			return false, err.Error()
		}
		n := 0
		for _, w := range c.workers {
			if v, ok := ws[w.id]; ok && v.Status == protocol.WorkerIdle {
				n++
			}
		}
		return n == len(c.workers), fmt.Sprintf("registry: %+v", ws)
	})
	for _, w := range c.workers {
		eventually(t, 10*time.Second, 100*time.Millisecond, w.id+" /ready", func() (bool, string) {
			code, body := c.health(w, "/ready")
			return code == http.StatusOK, fmt.Sprintf("%d %s", code, body)
		})
	}
	return c
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '-'
	}, s)
}

// startControl starts (or restarts) the control plane and waits for
// /healthz. It reports false when the process exited instead (say, its
// port was taken meanwhile).
func (c *cluster) startControl() bool {
	c.t.Helper()
	c.controlN++
	c.control = startProc(c.t, c.dir, fmt.Sprintf("control-%d", c.controlN), musetalkBin, c.controlArgs, c.controlEnv, "")
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c.control.exited() {
			return false
		}
		if resp, err := c.http.Get(c.url("/healthz")); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	c.t.Fatalf("control plane not healthy after 30s:\n%s", tailFile(c.control.logPath, 20))
	return false
}

func (c *cluster) startWorker(id string, b2env []string) *workerProc {
	c.t.Helper()
	env := append([]string{
		"ORCHESTRATOR_BASE_URL=http://" + c.controlAddr,
		"INTERNAL_API_KEY=" + internalKey,
		"WORKER_ID=" + id,
		"WORKER_TYPE=main",
		"PROVIDER=other",
		"GPU_CLASS_NAME=E2E_CPU",
		"POLL_INTERVAL_SEC=" + strconv.FormatFloat(c.opts.poll.Seconds(), 'f', -1, 64),
	}, b2env...)
	for try := 1; ; try++ {
		addr := freeAddr(c.t)
		args := []string{"--health-addr", addr, "--grace", c.opts.grace.String(), "--work-dir", filepath.Join(c.dir, "work-"+id)}
		bin := scriptWorkerBin
		if c.opts.kind == previewWorkers {
			bin = musetalkBin
			args = append([]string{"worker", "--engine", "preview"}, args...)
		} else {
			args = append(args, "--events-dir", c.eventsDir)
		}
		p := startProc(c.t, c.dir, fmt.Sprintf("%s-%d", id, try), bin, args, env, "")
		w := &workerProc{id: id, healthAddr: addr, proc: p}
		// Up once /health answers; a taken port makes it exit instead.
		ok := false
		deadline := time.Now().Add(20 * time.Second)
		for !ok && !p.exited() && time.Now().Before(deadline) {
			code, _ := c.health(w, "/health")
			ok = code != 0
			if !ok {
				time.Sleep(25 * time.Millisecond)
			}
		}
		if ok {
			return w
		}
		if try == 3 || !p.exited() {
			c.t.Fatalf("worker %s did not start:\n%s", id, tailFile(p.logPath, 20))
		}
	}
}

func (c *cluster) worker(id string) *workerProc {
	c.t.Helper()
	for _, w := range c.workers {
		if w.id == id {
			return w
		}
	}
	c.t.Fatalf("no worker %q in this cluster", id)
	return nil
}

// other returns the cluster's other worker.
func (c *cluster) other(id string) *workerProc {
	c.t.Helper()
	for _, w := range c.workers {
		if w.id != id {
			return w
		}
	}
	c.t.Fatalf("no worker but %q", id)
	return nil
}

func (c *cluster) url(path string) string { return "http://" + c.controlAddr + path }

// health GETs a worker's health route; code 0 means no answer.
func (c *cluster) health(w *workerProc, path string) (int, string) {
	resp, err := c.http.Get("http://" + w.healthAddr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// ---------------------------------------------------------------- the API

// do calls the public API and decodes a JSON answer into out (when not nil).
func (c *cluster) do(method, path string, body io.Reader, contentType string, want int, out any) error {
	req, err := http.NewRequest(method, c.url(path), body)
	if err != nil {
		return err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: HTTP %d, want %d: %s", method, path, resp.StatusCode, want, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: decoding %q: %w", method, path, b, err)
		}
	}
	return nil
}

// submit posts a multipart job: the avatar file and audio bytes under
// audioName.
func (c *cluster) submit(avatarPath, audioName string, audio []byte) protocol.JobView {
	c.t.Helper()
	return c.submitParams(avatarPath, audioName, audio, "")
}

// submitParams submits a job with a params form field (JSON; "" for none).
func (c *cluster) submitParams(avatarPath, audioName string, audio []byte, params string) protocol.JobView {
	c.t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	avatar, err := os.ReadFile(avatarPath)
	if err != nil {
		c.t.Fatal(err)
	}
	for _, f := range []struct {
		field, name string
		data        []byte
	}{{"avatar", filepath.Base(avatarPath), avatar}, {"audio", audioName, audio}} {
		fw, err := mw.CreateFormFile(f.field, f.name)
		if err != nil {
			c.t.Fatal(err)
		}
		fw.Write(f.data)
	}
	if params != "" {
		if err := mw.WriteField("params", params); err != nil {
			c.t.Fatal(err)
		}
	}
	if err := mw.Close(); err != nil {
		c.t.Fatal(err)
	}
	var j protocol.JobView
	if err := c.do(http.MethodPost, "/v1/jobs", &body, mw.FormDataContentType(), http.StatusCreated, &j); err != nil {
		c.t.Fatalf("submitting: %v", err)
	}
	if j.ID == "" || j.State != protocol.JobQueued {
		c.t.Fatalf("submitted job: %+v", j)
	}
	return j
}

// scriptJob is what the scripted engine does with a job (its audio file).
type scriptJob struct {
	Seconds   float64 `json:"seconds"`
	Frames    int     `json:"frames"`
	Fail      string  `json:"fail,omitempty"`
	Retryable bool    `json:"retryable,omitempty"`
	Tail      float64 `json:"tail_seconds,omitempty"` // added to the last frame's time
}

// submitScript submits a job for the scripted engine.
func (c *cluster) submitScript(s scriptJob) protocol.JobView {
	c.t.Helper()
	b, _ := json.Marshal(s)
	return c.submit(c.scriptAvatar(), "script.json", b)
}

// scriptAvatar is any small file: the scripted engine does not read it.
func (c *cluster) scriptAvatar() string {
	if avatarPNG != "" {
		return avatarPNG
	}
	p := filepath.Join(c.dir, "avatar.png")
	if _, err := os.Stat(p); err != nil {
		os.WriteFile(p, []byte("\x89PNG not really"), 0o644)
	}
	return p
}

func (c *cluster) job(id string) (protocol.JobView, error) {
	var j protocol.JobView
	err := c.do(http.MethodGet, "/v1/jobs/"+id, nil, "", http.StatusOK, &j)
	return j, err
}

// workerList returns the registry by worker id.
func (c *cluster) workerList() (map[string]protocol.WorkerView, error) {
	var l protocol.WorkerList
	if err := c.do(http.MethodGet, "/v1/workers", nil, "", http.StatusOK, &l); err != nil {
		return nil, err
	}
	m := make(map[string]protocol.WorkerView, len(l.Workers))
	for _, w := range l.Workers {
		m[w.ID] = w
	}
	return m, nil
}

// waitJob polls the job until cond holds.
func (c *cluster) waitJob(id string, timeout time.Duration, what string, cond func(protocol.JobView) bool) protocol.JobView {
	c.t.Helper()
	var j protocol.JobView
	eventually(c.t, timeout, 100*time.Millisecond, "job "+id+" "+what, func() (bool, string) {
		var err error
		if j, err = c.job(id); err != nil {
			return false, err.Error()
		}
		return cond(j), describe(j)
	})
	return j
}

// waitRunning waits until the job runs and its engine has reported at
// least frames frames.
func (c *cluster) waitRunning(id string, frames int) protocol.JobView {
	c.t.Helper()
	return c.waitJob(id, 30*time.Second, fmt.Sprintf("running with %d frames done", frames), func(j protocol.JobView) bool {
		if j.State.Final() {
			c.t.Fatalf("job ended before it was seen running: %s", describe(j))
		}
		return j.State == protocol.JobRunning && j.WorkerID != "" && j.Progress != nil && j.Progress.FramesDone >= frames
	})
}

// waitFinal waits until the job is succeeded, failed or cancelled.
func (c *cluster) waitFinal(id string, timeout time.Duration) protocol.JobView {
	c.t.Helper()
	return c.waitJob(id, timeout, "finished", func(j protocol.JobView) bool { return j.State.Final() })
}

func (c *cluster) result(id string) []byte {
	c.t.Helper()
	resp, err := c.http.Get(c.url("/v1/jobs/" + id + "/result"))
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "video/mp4" {
		c.t.Fatalf("GET result: HTTP %d %s: %.300s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	return b
}

// b2Admin calls the B2 test server's admin API.
func (c *cluster) b2Admin(method, path string, body any, out any) {
	c.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.b2.URL+path, r)
	if err != nil {
		c.t.Fatal(err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("b2test admin %s %s: HTTP %d: %s", method, path, resp.StatusCode, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			c.t.Fatal(err)
		}
	}
}

func (c *cluster) b2Calls() map[string]int {
	c.t.Helper()
	m := map[string]int{}
	c.b2Admin(http.MethodGet, "/_b2test/calls", nil, &m)
	return m
}

// ------------------------------------------------------------------ events

// engineEvent is one line the scripted engine recorded.
type engineEvent struct {
	Event  string `json:"event"`
	T      int64  `json:"t"` // unix ns
	Worker string `json:"worker"`
	Cause  string `json:"cause"`
}

func (e engineEvent) time() time.Time { return time.Unix(0, e.T) }

var eventsMu sync.Mutex

// events reads what the scripted engine recorded for one attempt.
func (c *cluster) events(jobID string, attempt int) []engineEvent {
	c.t.Helper()
	eventsMu.Lock()
	defer eventsMu.Unlock()
	f, err := os.Open(filepath.Join(c.eventsDir, fmt.Sprintf("%s-%d.jsonl", jobID, attempt)))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	var evs []engineEvent
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e engineEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			continue // a line being written
		}
		evs = append(evs, e)
	}
	return evs
}

// waitEvent waits for the attempt's engine to record event.
func (c *cluster) waitEvent(jobID string, attempt int, event string, timeout time.Duration) engineEvent {
	c.t.Helper()
	var found engineEvent
	eventually(c.t, timeout, 20*time.Millisecond, fmt.Sprintf("engine event %q of %s/%d", event, jobID, attempt), func() (bool, string) {
		evs := c.events(jobID, attempt)
		for _, e := range evs {
			if e.Event == event {
				found = e
				return true, ""
			}
		}
		return false, fmt.Sprintf("events: %+v", evs)
	})
	return found
}

func hasEvent(evs []engineEvent, event string) bool {
	for _, e := range evs {
		if e.Event == event {
			return true
		}
	}
	return false
}

// describe is a one-line summary of a job for messages.
func describe(j protocol.JobView) string {
	var b strings.Builder
	fmt.Fprintf(&b, "state=%s attempt=%d worker=%s interruptions=%d failures=%d", j.State, j.Attempt, j.WorkerID, j.Interruptions, j.Failures)
	if j.Progress != nil {
		fmt.Fprintf(&b, " progress=%s:%d/%d", j.Progress.Stage, j.Progress.FramesDone, j.Progress.FramesTotal)
	}
	if j.Error != "" {
		fmt.Fprintf(&b, " error=%q", j.Error)
	}
	if j.OutputKey != "" {
		fmt.Fprintf(&b, " output=%s", j.OutputKey)
	}
	for _, a := range j.Attempts {
		fmt.Fprintf(&b, " [#%d %s %s", a.Attempt, a.WorkerID, a.Outcome)
		if a.Error != "" {
			fmt.Fprintf(&b, " %q", a.Error)
		}
		if a.OutputKey != "" {
			fmt.Fprintf(&b, " %s", a.OutputKey)
		}
		b.WriteString("]")
	}
	return b.String()
}

// ffprobeStreams lists the codec types and names of a media file.
func ffprobeStreams(ctx context.Context, t *testing.T, path string) string {
	t.Helper()
	out, err := exec.CommandContext(ctx, "ffprobe", "-v", "error", "-show_entries", "stream=codec_type,codec_name",
		"-of", "csv=p=0", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe %s: %v: %s", path, err, out)
	}
	return strings.Join(strings.Fields(string(out)), " ")
}

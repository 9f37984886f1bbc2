package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/avatargen/musetalk/control/client"
	"github.com/avatargen/musetalk/media"
	"github.com/avatargen/musetalk/musetalk/modeldir"
	"github.com/avatargen/musetalk/protocol"
)

// watchBuffer collects output written from several goroutines and can
// wait until it holds a pattern.
type watchBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

func newWatchBuffer() *watchBuffer { return &watchBuffer{changed: make(chan struct{})} }

func (w *watchBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	close(w.changed)
	w.changed = make(chan struct{})
	return w.b.Write(p)
}

func (w *watchBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// waitFor waits until the output matches re and returns the first match's
// submatches; it fails the test when done closes first.
func (w *watchBuffer) waitFor(t *testing.T, re *regexp.Regexp, done <-chan struct{}) []string {
	t.Helper()
	deadline := time.NewTimer(2 * time.Minute) // a guard against hanging, not an assertion
	defer deadline.Stop()
	for {
		w.mu.Lock()
		m := re.FindStringSubmatch(w.b.String())
		changed := w.changed
		w.mu.Unlock()
		if m != nil {
			return m
		}
		select {
		case <-changed:
		case <-done:
			t.Fatalf("the command ended before its output matched %s:\n%s", re, w.String())
		case <-deadline.C:
			t.Fatalf("output never matched %s:\n%s", re, w.String())
		}
	}
}

// cliRun runs the CLI in-process with ctx and args, with stdout and stderr
// going to the given writers. Exit codes come back as errors (cli.ExitCoder)
// instead of ending the test binary.
//
// urfave/cli writes its package-level help flag while it parses a command
// line, so two runs must not parse at the same time: tests that call cliRun
// are not parallel, and a test that runs two commands at once starts the
// second only after output of the first shows it has parsed its flags.
func cliRun(ctx context.Context, stdout, stderr *watchBuffer, args ...string) error {
	app := newApp()
	app.Writer, app.ErrWriter = stdout, stderr
	app.ExitErrHandler = func(*cli.Context, error) {}
	return app.RunContext(ctx, append([]string{"musetalk"}, args...))
}

// runningUp is a `musetalk up` running in-process.
type runningUp struct {
	url    string
	out    *watchBuffer
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

var apiLine = regexp.MustCompile(`API +(http://\S+) `)

// startUp runs `musetalk up` with args on free ports until the test ends,
// and waits until it listens.
func startUp(t *testing.T, args ...string) *runningUp {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	u := &runningUp{out: newWatchBuffer(), cancel: cancel, done: make(chan struct{})}
	all := append([]string{"--log-level", "warn", "up", "--health-addr", "127.0.0.1:0"}, args...)
	go func() {
		defer close(u.done)
		u.err = cliRun(ctx, u.out, u.out, all...)
	}()
	t.Cleanup(func() { u.stop(t) })
	u.url = u.out.waitFor(t, apiLine, u.done)[1]
	return u
}

// stop drains and stops it, and returns what Run returned.
func (u *runningUp) stop(t *testing.T) error {
	t.Helper()
	u.cancel()
	select {
	case <-u.done:
	case <-time.After(time.Minute):
		t.Fatalf("musetalk up did not stop:\n%s", u.out.String())
	}
	return u.err
}

// speechWAV makes a one-second sine WAV with ffmpeg.
func speechWAV(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		t.Fatalf("ffmpeg is needed (apt-get install ffmpeg): %v", err)
	}
	p := filepath.Join(t.TempDir(), "speech.wav")
	out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
		"-f", "lavfi", "-i", "sine=frequency=440:duration=1", p).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, out)
	}
	return p
}

const astronautPNG = "/work/shared/media/astronaut.png"

// avatarImage is the test face: the shared astronaut photo when present,
// else a still image made with ffmpeg.
func avatarImage(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(astronautPNG); err == nil {
		return astronautPNG
	}
	p := filepath.Join(t.TempDir(), "face.png")
	out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
		"-f", "lavfi", "-i", "testsrc=size=128x128:rate=1", "-frames:v", "1", p).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, out)
	}
	return p
}

// checkMP4 probes a rendered result: H.264-ish video of the avatar's size
// with an audio track about as long as the speech.
func checkMP4(t *testing.T, path string) {
	t.Helper()
	info, err := (&media.FFmpeg{}).Probe(context.Background(), path)
	if err != nil {
		t.Fatalf("probing %s: %v", path, err)
	}
	if info.Video == nil || info.Audio == nil {
		t.Fatalf("%s: video %v, audio %v; want both", path, info.Video, info.Audio)
	}
	if info.Video.Width <= 0 || info.Video.Height <= 0 {
		t.Errorf("%s: video %dx%d", path, info.Video.Width, info.Video.Height)
	}
	if d := info.Audio.Duration; d < 900*time.Millisecond || d > 1200*time.Millisecond {
		t.Errorf("%s: audio lasts %v, want about the speech's 1 s", path, d)
	}
}

// TestUpThenSubmitRendersAJob runs the embedded system with the preview
// engine and submits to it through the CLI, waiting and with --no-wait
// then --job, as a user would.
func TestUpThenSubmitRendersAJob(t *testing.T) {
	// Not parallel: see cliRun.
	audio, avatar := speechWAV(t), avatarImage(t)
	dataDir := t.TempDir()
	up := startUp(t, "--engine", "preview", "--addr", "127.0.0.1:0", "--data-dir", dataDir,
		"--poll-interval", "200ms", "--grace", "5s")
	// The banner is written line by line (startUp waited for the API
	// line only): wait for its last line.
	up.out.waitFor(t, regexp.MustCompile(`Stop with Ctrl-C`), up.done)
	banner := up.out.String()
	if !strings.Contains(banner, "open to clients on this machine") || !strings.Contains(banner, "musetalk submit --control "+up.url) {
		t.Errorf("banner does not say how to submit:\n%s", banner)
	}

	health := regexp.MustCompile(`health on (127\.0\.0\.1:\d+)\n`).FindStringSubmatch(banner)
	if health == nil {
		t.Fatalf("banner does not show the worker's health address:\n%s", banner)
	}
	resp, err := http.Get("http://" + health[1] + "/health")
	if err != nil {
		t.Fatalf("worker health: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("worker /health answered %d", resp.StatusCode)
	}

	outDir := t.TempDir()
	out := filepath.Join(outDir, "result.mp4")
	stdout, stderr := newWatchBuffer(), newWatchBuffer()
	err = cliRun(context.Background(), stdout, stderr, "submit", "--control", up.url,
		"--avatar", avatar, "--audio", audio, "--out", out, "--engine", "preview", "--fps", "25")
	if err != nil {
		t.Fatalf("submit: %v\nstderr:\n%s\nup:\n%s", err, stderr, up.out)
	}
	if !regexp.MustCompile(`submitted job \S+\n`).MatchString(stderr.String()) || !strings.Contains(stderr.String(), "wrote "+out) {
		t.Errorf("submit's stderr:\n%s", stderr)
	}
	checkMP4(t, out)

	// Submit without waiting, then fetch the job by id.
	stdout, stderr = newWatchBuffer(), newWatchBuffer()
	if err := cliRun(context.Background(), stdout, stderr, "submit", "--control", up.url,
		"--avatar", avatar, "--audio", audio, "--no-wait"); err != nil {
		t.Fatalf("submit --no-wait: %v\n%s", err, stderr)
	}
	id := strings.TrimSpace(stdout.String())
	if !protocol.ValidID(id) {
		t.Fatalf("submit --no-wait printed %q, want a job id", id)
	}
	out2 := filepath.Join(outDir, "again.mp4")
	stdout, stderr = newWatchBuffer(), newWatchBuffer()
	if err := cliRun(context.Background(), stdout, stderr, "submit", "--control", up.url, "--job", id, "--out", out2); err != nil {
		t.Fatalf("submit --job: %v\n%s", err, stderr)
	}
	checkMP4(t, out2)
	if entries, _ := os.ReadDir(outDir); len(entries) != 2 {
		t.Errorf("the output directory holds %d files, want the 2 results", len(entries))
	}

	if err := up.stop(t); err != nil {
		t.Fatalf("up ended with %v:\n%s", err, up.out)
	}
	if regexp.MustCompile(`[0-9a-f]{64}`).MatchString(up.out.String()) {
		t.Errorf("up printed a key:\n%s", up.out)
	}
	// Everything lives in the data directory and survives the stop.
	for _, p := range []string{"control.db", "blobs/outputs"} {
		if _, err := os.Stat(filepath.Join(dataDir, p)); err != nil {
			t.Errorf("data dir: %v", err)
		}
	}
}

// TestUpKeyOffLoopback: listening beyond loopback without --api-keys
// generates one key, printed once, and the public API wants it.
func TestUpKeyOffLoopback(t *testing.T) {
	// Not parallel: see cliRun.
	up := startUp(t, "--engine", "preview", "--addr", "0.0.0.0:0", "--data-dir", t.TempDir())
	// The banner is written line by line: wait for the key line and the
	// two example commands that repeat it.
	key := up.out.waitFor(t, regexp.MustCompile(`API key +([0-9a-f]{64})\n`), up.done)[1]
	up.out.waitFor(t, regexp.MustCompile(`(?s)`+key+`.*`+key+`.*`+key), up.done)
	if n := strings.Count(up.out.String(), key); n != 3 { // the key line and the two example commands
		t.Errorf("the key appears %d times, want 3:\n%s", n, up.out)
	}
	if !strings.HasPrefix(up.url, "http://127.0.0.1:") {
		t.Errorf("local URL %q", up.url)
	}
	const missing = "0190aaaa-0000-7000-8000-000000000000"
	for _, tc := range []struct {
		key  string
		code string
	}{{"", protocol.CodeUnauthorized}, {"not-the-key", protocol.CodeUnauthorized}, {key, protocol.CodeNotFound}} {
		c, err := client.New(up.url, tc.key)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Get(context.Background(), missing); !client.HasCode(err, tc.code) {
			t.Errorf("Get with key %q: %v, want %s", tc.key, err, tc.code)
		}
	}
	if err := up.stop(t); err != nil {
		t.Fatalf("up ended with %v", err)
	}
}

func TestUpHealthAddrTaken(t *testing.T) {
	// Not parallel: see cliRun.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	out := newWatchBuffer()
	err = cliRun(context.Background(), out, out, "--log-level", "error", "up", "--engine", "preview",
		"--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--health-addr", ln.Addr().String())
	if err == nil || !strings.Contains(err.Error(), "listening on --health-addr "+ln.Addr().String()) {
		t.Fatalf("up with a taken health address: %v", err)
	}
}

func TestUpRejectsBadFlags(t *testing.T) {
	// Not parallel: see cliRun.
	type flagCase struct {
		args []string
		want string
	}
	cases := []flagCase{
		{[]string{"--engine", "sora"}, "sora"},
		// An unknown engine beside musetalk is refused before a download
		// of the weights (the empty dir and a hub nobody answers would
		// otherwise make the error a fetch failure).
		{[]string{"--engine", "musetalk,sora", "--weights", t.TempDir(), "--endpoint", "http://hub.invalid"}, "unknown engine"},
		{[]string{"--engine", "preview", "--poll-interval", "0s"}, "--poll-interval"},
		{[]string{"--engine", "preview", "--addr", "127.0.0.1:99999"}, "listening on 127.0.0.1:99999"},
		// The default engine without weights and told not to fetch them:
		// a clear refusal, not a queue that never moves.
		{[]string{"--weights", t.TempDir(), "--no-fetch"}, "musetalk weights fetch"},
		// No such device, or one this build lacks, is refused before any
		// download.
		{[]string{"--weights", t.TempDir(), "--endpoint", "http://hub.invalid", "--device", "gpu"}, `--device "gpu": want auto, cuda or cpu`},
	}
	if !cudaBuilt() {
		cases = append(cases, flagCase{[]string{"--weights", t.TempDir(), "--endpoint", "http://hub.invalid", "--device", "cuda"}, "built without CUDA support"})
	}
	for _, tc := range cases {
		out := newWatchBuffer()
		args := append([]string{"up", "--data-dir", t.TempDir(), "--health-addr", "127.0.0.1:0", "--addr", "127.0.0.1:0"}, tc.args...)
		err := cliRun(context.Background(), out, out, args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("up %v: %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}

// tinyHub serves the tiny weights in src as the Hugging Face hub serves
// the official files of version v15 (at /REPO/resolve/main/PATH, with
// their git blob id as ETag), or nothing when src is "", and counts the
// requests. A request waits until hold (when not nil) is closed.
func tinyHub(t *testing.T, src string, hold <-chan struct{}) (url string, requests func() int) {
	t.Helper()
	files, err := modeldir.Files(modeldir.V15)
	if err != nil {
		t.Fatal(err)
	}
	content := map[string][]byte{}
	for _, f := range files {
		if f.Repo == "" || src == "" {
			continue
		}
		p, err := modeldir.Dir(src).Resolve(f)
		if err != nil {
			t.Fatal(err)
		}
		if content["/"+f.Repo+"/resolve/main/"+f.RepoPath], err = os.ReadFile(p); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	n := 0
	hub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		mu.Unlock()
		if hold != nil {
			select {
			case <-hold:
			case <-r.Context().Done():
				return
			}
		}
		data, ok := content[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("ETag", `"`+gitBlobID(data)+`"`)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
	}))
	t.Cleanup(hub.Close)
	return hub.URL, func() int {
		mu.Lock()
		defer mu.Unlock()
		return n
	}
}

// TestUpFetchesMissingWeights: on its first start, up fetches the weights
// the musetalk engine lacks, showing the progress, and its worker becomes
// ready; the next start finds them and asks the hub nothing.
func TestUpFetchesMissingWeights(t *testing.T) {
	// Not parallel: see cliRun.
	src := t.TempDir()
	if err := modeldir.WriteTiny(src, 1); err != nil {
		t.Fatal(err)
	}
	hold := make(chan struct{})
	hubURL, requests := tinyHub(t, src, hold)
	weightsDir := t.TempDir()
	// S3FD's checkpoint has a pinned digest that tiny weights cannot
	// match: it is on disk already, and --s3fd-url makes sure nothing is
	// asked of its official host.
	const s3fd = "s3fd/s3fd-619a316812.safetensors"
	data, err := os.ReadFile(filepath.Join(src, s3fd))
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(weightsDir, "s3fd"), 0o755)
	if err := os.WriteFile(filepath.Join(weightsDir, s3fd), data, 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"--weights", weightsDir, "--endpoint", hubURL, "--s3fd-url", "http://s3fd.invalid/s3fd.pth",
		"--avatar-cache", t.TempDir(), "--threads", "1", "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--poll-interval", "200ms"}
	// The control plane answers while the weights are still coming: a job
	// submitted then waits in the queue and runs once the worker starts.
	ctx, cancel := context.WithCancel(context.Background())
	up := &runningUp{out: newWatchBuffer(), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(up.done)
		up.err = cliRun(ctx, up.out, up.out, append([]string{"--log-level", "warn", "up", "--health-addr", "127.0.0.1:0"}, args...)...)
	}()
	t.Cleanup(func() { up.stop(t) })
	early := up.out.waitFor(t, regexp.MustCompile(`The control plane answers at (http://\S+);`), up.done)[1]
	cl, err := client.New(early, "")
	if err != nil {
		t.Fatal(err)
	}
	job, err := cl.Submit(ctx, client.SubmitRequest{AvatarPath: avatarImage(t), AudioPath: speechWAV(t), Params: protocol.JobParams{Engine: "preview"}})
	if err != nil {
		t.Fatalf("submitting while the weights are fetched: %v", err)
	}
	if strings.Contains(up.out.String(), "musetalk is up") {
		t.Errorf("the worker started before the weights came:\n%s", up.out)
	}
	close(hold)
	up.url = up.out.waitFor(t, apiLine, up.done)[1]
	if _, err := cl.Wait(ctx, job.ID, nil); err != nil {
		t.Errorf("the job submitted during the fetch: %v", err)
	}
	out := up.out.String()
	for _, s := range []string{
		"weights are missing from " + weightsDir,
		"--no-fetch",
		"musetalkV15/unet.pth: fetching " + hubURL + "/TMElyralab/MuseTalk/resolve/main/musetalkV15/unet.pth\n",
		"musetalkV15/unet.pth: downloading ",
		"git-sha1 verified",
		"s3fd/s3fd-619a316812.pth: present\n",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("up's output lacks %q:\n%s", s, out)
		}
	}
	if err := modeldir.Dir(weightsDir).Check(modeldir.V15); err != nil {
		t.Fatalf("after up: %v", err)
	}
	health := up.out.waitFor(t, regexp.MustCompile(`health on (127\.0\.0\.1:\d+)\n`), up.done)[1]
	waitReady(t, "http://"+health+"/ready", up.done)
	fetched := requests()
	files, err := modeldir.Files(modeldir.V15)
	if err != nil {
		t.Fatal(err)
	}
	// One request for each file of v15's layout but S3FD's, which was
	// on disk.
	if want := len(files) - 1; fetched != want {
		t.Errorf("%d requests to the hub; want one for each of the %d missing files", fetched, want)
	}
	if err := up.stop(t); err != nil {
		t.Fatalf("up ended with %v:\n%s", err, up.out)
	}

	again := startUp(t, args...)
	if strings.Contains(again.out.String(), "fetching") || requests() != fetched {
		t.Errorf("the second start fetched again (%d new requests):\n%s", requests()-fetched, again.out)
	}
}

// waitReady polls a worker's /ready until it answers 200.
func waitReady(t *testing.T, url string, done <-chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute) // a guard against hanging, not an assertion
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-done:
			t.Fatalf("up ended before its worker was ready")
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never answered 200 (last: %v)", url, err)
		}
	}
}

// TestUpCannotFetchWeights: up without weights and without access to the
// hub (.invalid never resolves) exits at once and says how to start
// anyway.
func TestUpCannotFetchWeights(t *testing.T) {
	// Not parallel: see cliRun.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a guard, not an assertion
	defer cancel()
	out := newWatchBuffer()
	err := cliRun(ctx, out, out, "up", "--weights", t.TempDir(), "--endpoint", "http://hub.invalid", "--s3fd-url", "http://s3fd.invalid/s3fd.pth",
		"--data-dir", t.TempDir(), "--addr", "127.0.0.1:0", "--health-addr", "127.0.0.1:0")
	if err == nil {
		t.Fatalf("up started without weights:\n%s", out)
	}
	if exitCode(err) == 0 {
		t.Errorf("exit code 0 for %v", err)
	}
	msg := err.Error()
	for _, s := range []string{"cannot reach hub.invalid", "--weights DIR", "musetalk weights tiny --out DIR", "--engine preview", "--endpoint URL", "HF_ENDPOINT"} {
		if !strings.Contains(msg, s) {
			t.Errorf("the error does not say %q:\n%s", s, msg)
		}
	}
	if strings.Contains(out.String(), "musetalk is up") {
		t.Errorf("up started:\n%s", out)
	}
}

// TestUpNoFetchEnv: MUSETALK_NO_FETCH turns the download off.
func TestUpNoFetchEnv(t *testing.T) {
	// Not parallel: see cliRun.
	hubURL, requests := tinyHub(t, "", nil)
	t.Setenv("MUSETALK_NO_FETCH", "true")
	out := newWatchBuffer()
	err := cliRun(context.Background(), out, out, "up", "--weights", t.TempDir(), "--endpoint", hubURL,
		"--data-dir", t.TempDir(), "--addr", "127.0.0.1:0", "--health-addr", "127.0.0.1:0")
	if err == nil || !strings.Contains(err.Error(), "musetalk weights fetch") || !strings.Contains(err.Error(), "--engine preview") {
		t.Fatalf("up with MUSETALK_NO_FETCH and no weights: %v", err)
	}
	if requests() != 0 {
		t.Errorf("%d requests to the hub with MUSETALK_NO_FETCH", requests())
	}
	help, err := run(t, "up", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"--no-fetch", "MUSETALK_NO_FETCH", "--endpoint", "--s3fd-url", "MUSETALK_S3FD_URL"} {
		if !strings.Contains(help, s) {
			t.Errorf("up --help does not mention %s:\n%s", s, help)
		}
	}
}

func TestLoopbackURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		addr     *net.TCPAddr
		url      string
		loopback bool
	}{
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}, "http://127.0.0.1:8080", true},
		{&net.TCPAddr{IP: net.IPv6loopback, Port: 80}, "http://[::1]:80", true},
		{&net.TCPAddr{IP: net.IPv4zero, Port: 8080}, "http://127.0.0.1:8080", false},
		{&net.TCPAddr{IP: net.IPv6unspecified, Port: 8080}, "http://127.0.0.1:8080", false},
		{&net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 9}, "http://10.1.2.3:9", false},
	} {
		if got := loopbackURL(tc.addr); got != tc.url {
			t.Errorf("loopbackURL(%v) = %q, want %q", tc.addr, got, tc.url)
		}
		if got := isLoopback(tc.addr); got != tc.loopback {
			t.Errorf("isLoopback(%v) = %v", tc.addr, got)
		}
	}
}

// exitCode is the status a cli.ExitCoder error asks for, or 1.
func exitCode(err error) int {
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	return 1
}

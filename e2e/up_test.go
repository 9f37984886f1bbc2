//go:build linux

package e2e

import (
	"context"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/avatargen/musetalk/control/client"
	"github.com/avatargen/musetalk/internal/testenv"
	"github.com/avatargen/musetalk/media"
	"github.com/avatargen/musetalk/protocol"
)

// upProc is a `musetalk up` process with the address its banner printed.
type upProc struct {
	*proc
	url string
}

var upAPILine = regexp.MustCompile(`API +(http://\S+) `)

// startUp starts `musetalk up` on free ports over dataDir and waits for its
// banner. Without extra arguments it runs the preview engine.
func startUp(t *testing.T, dir, name, dataDir string, extra ...string) *upProc {
	t.Helper()
	out := filepath.Join(dir, name+".out")
	if len(extra) == 0 {
		extra = []string{"--engine", "preview"}
	}
	args := append([]string{"up", "--data-dir", dataDir, "--addr", "127.0.0.1:0", "--health-addr", "127.0.0.1:0",
		"--poll-interval", "250ms", "--grace", "60s"}, extra...)
	p := startProc(t, dir, name, musetalkBin, args, nil, out)
	u := &upProc{proc: p}
	eventually(t, 30*time.Second, 50*time.Millisecond, name+" prints where it listens", func() (bool, string) {
		b, _ := os.ReadFile(out)
		if m := upAPILine.FindSubmatch(b); m != nil {
			u.url = string(m[1])
			return true, ""
		}
		if p.exited() {
			t.Fatalf("%s exited:\n%s", name, tailFile(p.logPath, 20))
		}
		return false, "banner so far: " + string(b)
	})
	return u
}

// TestUpDrainsOnSIGTERMAndKeepsJobs: the embedded system as one real
// process. `musetalk submit` renders a job through it; SIGTERM while a
// second job runs lets that job finish in the same attempt, then the
// process exits 0; a new `up` over the same data directory still serves the
// job, and `musetalk submit --job` downloads it.
func TestUpDrainsOnSIGTERMAndKeepsJobs(t *testing.T) {
	needSuite(t)
	if avatarPNG == "" {
		testenv.Missing(t, "ffmpeg is not installed")
	}
	t.Parallel()
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	// Long enough that the job is still rendering when the signal comes.
	speech := filepath.Join(dir, "speech.wav")
	if out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
		"-i", "sine=frequency=300:duration=12", speech).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, out)
	}
	up := startUp(t, dir, "up1", dataDir)

	first := filepath.Join(dir, "first.mp4")
	sub := startProc(t, dir, "submit1", musetalkBin, []string{"submit", "--control", up.url,
		"--avatar", avatarPNG, "--audio", speechWAV, "--out", first}, nil, "")
	if code := sub.wait(t, 2*time.Minute); code != 0 {
		t.Fatalf("submit exited %d:\n%s", code, tailFile(sub.logPath, 20))
	}
	probeResult(t, first, 2*time.Second)

	// A second job, without waiting; signal the process once it runs.
	idFile := filepath.Join(dir, "id")
	sub2 := startProc(t, dir, "submit2", musetalkBin, []string{"submit", "--control", up.url,
		"--avatar", avatarPNG, "--audio", speech, "--no-wait"}, nil, idFile)
	if code := sub2.wait(t, time.Minute); code != 0 {
		t.Fatalf("submit --no-wait exited %d:\n%s", code, tailFile(sub2.logPath, 20))
	}
	b, _ := os.ReadFile(idFile)
	id := strings.TrimSpace(string(b))
	c, err := client.New(up.url, "")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, 20*time.Millisecond, "the second job runs", func() (bool, string) {
		j, err := c.Get(context.Background(), id)
		if err != nil {
			return false, err.Error()
		}
		if j.State.Final() {
			t.Fatalf("job %s ended %s before the test could signal", id, j.State)
		}
		return j.State == protocol.JobRunning, string(j.State)
	})
	if err := up.signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := up.wait(t, 90*time.Second); code != 0 {
		t.Fatalf("up exited %d after SIGTERM:\n%s", code, tailFile(up.logPath, 30))
	}

	// The drained job finished in its first attempt; a new process over the
	// same directory has it.
	up2 := startUp(t, dir, "up2", dataDir)
	c2, err := client.New(up2.url, "")
	if err != nil {
		t.Fatal(err)
	}
	j, err := c2.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if j.State != protocol.JobSucceeded || len(j.Attempts) != 1 || j.Attempts[0].Outcome != protocol.OutcomeSucceeded {
		t.Fatalf("after the drain the job is %s with attempts %+v; want succeeded in one attempt", j.State, j.Attempts)
	}
	second := filepath.Join(dir, "second.mp4")
	fetch := startProc(t, dir, "fetch", musetalkBin, []string{"submit", "--control", up2.url, "--job", id, "--out", second}, nil, "")
	if code := fetch.wait(t, time.Minute); code != 0 {
		t.Fatalf("submit --job exited %d:\n%s", code, tailFile(fetch.logPath, 20))
	}
	probeResult(t, second, 12*time.Second)
	if err := up2.signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := up2.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("up exited %d after SIGINT", code)
	}
}

// TestUpSubmitMuseTalk: `musetalk up` with its default engine (MuseTalk, on
// tiny random weights) and `musetalk submit` lip-sync the astronaut to
// espeak-ng speech end to end; the downloaded video passes the same checks
// as a local render, and the worker reports the prepared avatar.
func TestUpSubmitMuseTalk(t *testing.T) {
	needSuite(t)
	needTools(t, "ffmpeg", "ffprobe", "espeak-ng")
	astronaut := testMedia(t, "astronaut.png")
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	weights := filepath.Join(dir, "weights")
	runTool(t, ctx, musetalkBin, "weights", "tiny", "--out", weights)
	speech := filepath.Join(dir, "speech.wav")
	runTool(t, ctx, "espeak-ng", "-w", speech, "Submitted through the control plane.")

	up := startUp(t, dir, "up", filepath.Join(dir, "data"), "--weights", weights,
		"--avatar-cache", filepath.Join(dir, "cache"), "--threads", "2")
	// A render, into the cache the running `up` uses: the job then finds
	// the avatar another process prepared after `up` opened the cache (it
	// used to fail every attempt on the cache's final rename).
	box := fmt.Sprintf("%d,%d,%d,%d", renderFaceBox[0], renderFaceBox[1], renderFaceBox[2], renderFaceBox[3])
	runTool(t, ctx, musetalkBin, "render", "--weights", weights, "--avatar-cache", filepath.Join(dir, "cache"),
		"--avatar", astronaut, "--audio", speech, "--out", filepath.Join(dir, "rendered.mp4"), "--face-box", box,
		"--batch-size", "8", "--parsing-mode", "raw", "--threads", "2")
	out := filepath.Join(dir, "lipsync.mp4")
	sub := startProc(t, dir, "submit", musetalkBin, []string{"submit", "--control", up.url,
		"--avatar", astronaut, "--audio", speech, "--out", out, "--face-box", box, "--batch-size", "8", "--parsing-mode", "raw"}, nil, "")
	if code := sub.wait(t, 2*time.Minute); code != 0 {
		t.Fatalf("submit exited %d:\n%s\nup:\n%s", code, tailFile(sub.logPath, 20), tailFile(up.logPath, 20))
	}
	used := renderFaceBox
	used[3] += renderMargin
	checkRender(t, ctx, astronaut, speech, out, big.NewRat(25, 1), nil, used)

	c, err := client.New(up.url, "")
	if err != nil {
		t.Fatal(err)
	}
	subLog, _ := os.ReadFile(sub.logPath)
	m := regexp.MustCompile(`submitted job (\S+)`).FindSubmatch(subLog)
	if m == nil {
		t.Fatalf("submit did not name its job:\n%s", subLog)
	}
	job, err := c.Get(ctx, string(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	if job.Attempt != 1 || job.Failures != 0 {
		t.Errorf("job %s: attempt %d, failures %d; want the first attempt to succeed", job.ID, job.Attempt, job.Failures)
	}
	eventually(t, 10*time.Second, 100*time.Millisecond, "the worker reports the prepared avatar", func() (bool, string) {
		ws, err := c.Workers(ctx)
		if err != nil {
			return false, err.Error()
		}
		for _, w := range ws {
			if len(w.CachedAvatars) > 0 {
				return true, ""
			}
		}
		return false, fmt.Sprintf("workers %+v", ws)
	})
	if err := up.signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := up.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("up exited %d after SIGTERM", code)
	}
}

// probeResult checks that path is a video with an audio track about as
// long as the speech.
func probeResult(t *testing.T, path string, speech time.Duration) {
	t.Helper()
	info, err := (&media.FFmpeg{}).Probe(context.Background(), path)
	if err != nil {
		t.Fatalf("probing %s: %v", path, err)
	}
	if info.Video == nil || info.Audio == nil {
		t.Fatalf("%s: video %v, audio %v; want both", path, info.Video, info.Audio)
	}
	if d := info.Audio.Duration; d < speech-200*time.Millisecond || d > speech+200*time.Millisecond {
		t.Errorf("%s: audio lasts %v, want about %v", path, d, speech)
	}
}

// TestScriptsUp runs the README's first command, scripts/up, as a new user
// would (with the preview engine: no weights here), then `musetalk submit`
// against it, pasted right after it as a script: submit waits for the
// server that scripts/up is still building and starting.
func TestScriptsUp(t *testing.T) {
	needSuite(t)
	needTools(t, "bash", "ffmpeg", "ffprobe", "espeak-ng", "go")
	if avatarPNG == "" {
		testenv.Missing(t, "ffmpeg is not installed")
	}
	t.Parallel()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// The user's Go caches: HOME is the test's directory.
	var env []string
	for _, v := range []string{"GOCACHE", "GOMODCACHE", "GOPATH", "GOFLAGS", "GOPROXY"} {
		out, err := exec.Command("go", "env", v).Output()
		if err != nil {
			t.Fatal(err)
		}
		env = append(env, v+"="+strings.TrimSpace(string(out)))
	}
	apiAddr := freeAddr(t)
	out := filepath.Join(dir, "up.out")
	up := startProc(t, dir, "scripts-up", filepath.Join(root, "scripts", "up"), []string{"--engine", "preview",
		"--data-dir", filepath.Join(dir, "data"), "--addr", apiAddr, "--health-addr", "127.0.0.1:0"}, env, out)
	result := filepath.Join(dir, "result.mp4")
	sub := startProc(t, dir, "submit", musetalkBin, []string{"submit", "--control", "http://" + apiAddr,
		"--avatar", avatarPNG, "--audio", speechWAV, "--out", result, "--wait-for-control", "3m"}, nil, "")
	if code := sub.wait(t, 4*time.Minute); code != 0 {
		t.Fatalf("submit exited %d:\n%s\nscripts/up:\n%s", code, tailFile(sub.logPath, 20), tailFile(up.logPath, 20))
	}
	probeResult(t, result, 2*time.Second)
	if b, _ := os.ReadFile(out); !strings.Contains(string(b), "musetalk is up") {
		t.Errorf("scripts/up printed no banner:\n%s", b)
	}
	if err := up.signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := up.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("scripts/up exited %d after Ctrl-C:\n%s", code, tailFile(up.logPath, 20))
	}
}

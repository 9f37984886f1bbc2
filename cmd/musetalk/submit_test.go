package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/avatargen/musetalk/blob"
	"github.com/avatargen/musetalk/control"
	"github.com/avatargen/musetalk/control/client"
	"github.com/avatargen/musetalk/control/store/sqlite"
	"github.com/avatargen/musetalk/protocol"
)

const submitTestInternalKey = "submit-test-internal-key-77e1"

// controlOnly is a control plane with no worker: jobs stay queued until the
// test acts as a worker.
type controlOnly struct {
	t      *testing.T
	url    string
	avatar string
	audio  string
}

func startControl(t *testing.T, publicKeys ...string) *controlOnly {
	t.Helper()
	dir := t.TempDir()
	blobs, err := blob.NewDir(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "control.db"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := control.New(control.Config{Store: st, Blob: blobs, InternalAPIKey: submitTestInternalKey,
		PublicAPIKeys: publicKeys, HeartbeatInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		ts.Close()
		st.Close()
		blobs.Close()
	})
	c := &controlOnly{t: t, url: ts.URL, avatar: filepath.Join(dir, "face.png"), audio: filepath.Join(dir, "speech.wav")}
	for _, p := range []string{c.avatar, c.audio} {
		if err := os.WriteFile(p, []byte("content of "+filepath.Base(p)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// worker calls the worker API and fails the test unless it answers 2xx.
func (c *controlOnly) worker(path string, in, out any) {
	c.t.Helper()
	var body io.Reader
	if in != nil {
		data, _ := json.Marshal(in)
		body = bytes.NewReader(data)
	}
	req, _ := http.NewRequest(http.MethodPost, c.url+path, body)
	req.Header.Set("Authorization", "Bearer "+submitTestInternalKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		c.t.Fatalf("POST %s: %d %s", path, resp.StatusCode, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			c.t.Fatal(err)
		}
	}
}

func (c *controlOnly) job(id string) protocol.JobView {
	c.t.Helper()
	cl, err := client.New(c.url, "")
	if err != nil {
		c.t.Fatal(err)
	}
	job, err := cl.Get(context.Background(), id)
	if err != nil {
		c.t.Fatal(err)
	}
	return job
}

// submitNoWait submits a job through the CLI and returns its id.
func (c *controlOnly) submitNoWait(extra ...string) string {
	c.t.Helper()
	stdout, stderr := newWatchBuffer(), newWatchBuffer()
	args := append([]string{"submit", "--control", c.url, "--avatar", c.avatar, "--audio", c.audio, "--no-wait"}, extra...)
	if err := cliRun(context.Background(), stdout, stderr, args...); err != nil {
		c.t.Fatalf("submit --no-wait: %v\n%s", err, stderr)
	}
	return strings.TrimSpace(stdout.String())
}

var waitingLine = regexp.MustCompile(`queued: elapsed`)

func TestSubmitInterruptLeavesTheJob(t *testing.T) {
	// Not parallel: see cliRun.
	ctl := startControl(t)
	for _, tc := range []struct {
		cancelOnInterrupt bool
		state             protocol.JobState
	}{{false, protocol.JobQueued}, {true, protocol.JobCancelled}} {
		id := ctl.submitNoWait("--batch-size", "4", "--face-box", "1,2,30,40")
		if p := ctl.job(id).Params; p.BatchSize != 4 || len(p.FaceBox) != 4 || p.FaceBox[3] != 40 {
			t.Fatalf("params of the job: %+v", p)
		}
		args := []string{"submit", "--control", ctl.url, "--job", id, "--out", filepath.Join(t.TempDir(), "r.mp4")}
		if tc.cancelOnInterrupt {
			args = append(args, "--cancel-on-interrupt")
		}
		ctx, cancel := context.WithCancel(context.Background())
		stdout, stderr := newWatchBuffer(), newWatchBuffer()
		var err error
		finished := make(chan struct{})
		go func() {
			defer close(finished)
			err = cliRun(ctx, stdout, stderr, args...)
		}()
		stderr.waitFor(t, waitingLine, finished)
		cancel() // what Ctrl-C does to the wait
		<-finished
		if code := exitCode(err); code != interruptedExit {
			t.Errorf("exit code %d (%v), want %d", code, err, interruptedExit)
		}
		if got := ctl.job(id).State; got != tc.state {
			t.Errorf("cancel-on-interrupt=%v: the job is %s, want %s", tc.cancelOnInterrupt, got, tc.state)
		}
		if !tc.cancelOnInterrupt && !strings.Contains(stderr.String(), "musetalk submit --job "+id) {
			t.Errorf("stderr does not say how to fetch the job later:\n%s", stderr)
		}
		if tc.cancelOnInterrupt && !strings.Contains(err.Error(), "job "+id+" is cancelled") {
			t.Errorf("error %q does not say the job was cancelled", err)
		}
	}
}

func TestSubmitFailedJobShowsTheServersMessage(t *testing.T) {
	// Not parallel: see cliRun.
	ctl := startControl(t)
	out := filepath.Join(t.TempDir(), "r.mp4")
	stdout, stderr := newWatchBuffer(), newWatchBuffer()
	var err error
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		err = cliRun(context.Background(), stdout, stderr, "submit", "--control", ctl.url,
			"--avatar", ctl.avatar, "--audio", ctl.audio, "--out", out)
	}()
	id := stderr.waitFor(t, regexp.MustCompile(`submitted job (\S+)\n`), finished)[1]

	ctl.worker(protocol.Path(protocol.HeartbeatRoute, "w1"), protocol.Heartbeat{
		Status: protocol.WorkerIdle, Provider: "other", GPUClass: "test", WorkerType: protocol.WorkerMain}, nil)
	var a protocol.Assignment
	ctl.worker(protocol.Path(protocol.ClaimRoute, "w1"), nil, &a)
	if a.JobID != id {
		t.Fatalf("claimed %q, want %q", a.JobID, id)
	}
	ctl.worker(protocol.Path(protocol.FailRoute, id), protocol.FailRequest{
		Attempt: a.Attempt, Token: a.Token, Error: "avatar: no face in any frame", Retryable: false}, nil)

	<-finished
	if err == nil || !strings.Contains(err.Error(), "job "+id+" failed") || !strings.Contains(err.Error(), "no face in any frame") {
		t.Fatalf("submit of a failing job: %v\n%s", err, stderr)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a failed job left %s: %v", out, err)
	}
}

func TestSubmitAuth(t *testing.T) {
	// Not parallel: see cliRun.
	ctl := startControl(t, "the-public-key")
	stdout, stderr := newWatchBuffer(), newWatchBuffer()
	err := cliRun(context.Background(), stdout, stderr, "submit", "--control", ctl.url,
		"--avatar", ctl.avatar, "--audio", ctl.audio, "--no-wait")
	if err == nil || !strings.Contains(err.Error(), "HTTP 401 unauthorized") {
		t.Fatalf("submit without a key: %v", err)
	}
	if id := ctl.submitNoWait("--api-key", "the-public-key"); !protocol.ValidID(id) {
		t.Fatalf("submit with the key printed %q", id)
	}
}

func TestSubmitChecksFlagsBeforeUploading(t *testing.T) {
	// Not parallel: see cliRun.
	dir := t.TempDir()
	face := filepath.Join(dir, "face.png")
	if err := os.WriteFile(face, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Nothing listens there: every case must fail before any request.
	base := []string{"submit", "--control", "http://127.0.0.1:1"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--audio", face, "--out", "r.mp4"}, "--avatar and --audio are required"},
		{[]string{"--avatar", face, "--audio", face}, "--out is required"},
		{[]string{"--job", "j1", "--avatar", face, "--out", "r.mp4"}, "leave out --avatar"},
		{[]string{"--job", "../j1", "--out", "r.mp4"}, "not a valid job id"},
		{[]string{"--job", "j1", "--no-wait"}, "does nothing"},
		{[]string{"--avatar", face, "--audio", face, "--out", filepath.Join(dir, "missing", "r.mp4")}, "no such file"},
		{[]string{"--avatar", face, "--audio", face, "--out", dir}, "is a directory"},
		// Checked before waiting for a control plane (base points at one).
		{[]string{"--avatar", filepath.Join(dir, "none.png"), "--audio", face, "--out", "r.mp4"}, "--avatar: stat"},
		{[]string{"--avatar", face, "--audio", dir, "--out", "r.mp4"}, "--audio " + dir + ": is a directory"},
		{[]string{"--avatar", face, "--audio", face, "--out", "r.mp4", "--version", "v9"}, `--version: "v9"`},
		{[]string{"--avatar", face, "--audio", face, "--out", "r.mp4", "--fps", "0"}, "--fps: "},
		{[]string{"--avatar", face, "--audio", face, "--out", "r.mp4", "--face-box", "1,2,3"}, "four integers"},
		{[]string{"--avatar", face, "--audio", face, "--out", "r.mp4", "--face-box", "1,2,x,4"}, `"x" is not an integer`},
		{[]string{"--avatar", face, "--audio", face, "--out", "r.mp4", "--face-box", "5,2,3,4"}, "--face-box: [5 2 3 4]"},
		{[]string{"--avatar", face, "--audio", face, "--out", "r.mp4", "stray"}, "unexpected arguments"},
		{[]string{"--avatar", face, "--audio", face, "--out", "r.mp4", "--control", "localhost:8080"}, "--control"},
	} {
		stdout, stderr := newWatchBuffer(), newWatchBuffer()
		err := cliRun(context.Background(), stdout, stderr, append(base, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("submit %v: %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}

func TestJobProgress(t *testing.T) {
	t.Parallel()
	p := &protocol.Progress{Stage: "unet", FramesDone: 4, FramesTotal: 9}
	for _, tc := range []struct {
		view protocol.JobView
		want protocol.Progress
	}{
		{protocol.JobView{State: protocol.JobQueued}, protocol.Progress{Stage: "queued"}},
		{protocol.JobView{State: protocol.JobQueued, Attempt: 1, Progress: p}, protocol.Progress{Stage: "queued for attempt 2"}},
		{protocol.JobView{State: protocol.JobRunning, Attempt: 1}, protocol.Progress{Stage: "starting"}},
		{protocol.JobView{State: protocol.JobRunning, Attempt: 1, Progress: p}, *p},
		{protocol.JobView{State: protocol.JobSucceeded, Progress: p}, protocol.Progress{Stage: "succeeded"}},
	} {
		if got := jobProgress(tc.view); got != tc.want {
			t.Errorf("jobProgress(%s, attempt %d) = %+v, want %+v", tc.view.State, tc.view.Attempt, got, tc.want)
		}
	}
}

func TestFormatBytes(t *testing.T) {
	t.Parallel()
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 5 << 20: "5.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := formatBytes(n); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestSubmitWaitsForTheControlPlane: the quick start pasted as a script,
// `musetalk up &` then `musetalk submit`, works although the server is not
// listening yet when submit starts.
func TestSubmitWaitsForTheControlPlane(t *testing.T) {
	c := startControl(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	target, _ := url.Parse(c.url)
	late := &http.Server{Handler: httputil.NewSingleHostReverseProxy(target)}
	t.Cleanup(func() { late.Close() })
	go func() {
		time.Sleep(500 * time.Millisecond)
		if ln, err := net.Listen("tcp", addr); err == nil {
			late.Serve(ln)
		}
	}()
	stdout, stderr := newWatchBuffer(), newWatchBuffer()
	err = cliRun(context.Background(), stdout, stderr, "submit", "--control", "http://"+addr,
		"--avatar", c.avatar, "--audio", c.audio, "--no-wait")
	if err != nil {
		t.Fatalf("submit: %v\n%s", err, stderr.String())
	}
	id := strings.TrimSpace(stdout.String())
	if job := c.job(id); job.State != protocol.JobQueued {
		t.Errorf("job %s is %s, want queued", id, job.State)
	}
	if !strings.Contains(stderr.String(), "waiting up to 1m0s for the control plane") {
		t.Errorf("submit did not say it was waiting:\n%s", stderr.String())
	}

	// Nobody ever answers: a bounded wait, then a message saying what to do.
	ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	err = cliRun(context.Background(), newWatchBuffer(), newWatchBuffer(), "submit", "--control", "http://"+dead,
		"--avatar", c.avatar, "--audio", c.audio, "--no-wait", "--wait-for-control", "300ms")
	if err == nil || !strings.Contains(err.Error(), "did not answer within") || !strings.Contains(err.Error(), "musetalk up") {
		t.Fatalf("submit to nobody: %v", err)
	}
}

package client_test

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/avatargen/musetalk/blob"
	"github.com/avatargen/musetalk/control"
	"github.com/avatargen/musetalk/control/client"
	"github.com/avatargen/musetalk/control/store/sqlite"
	"github.com/avatargen/musetalk/protocol"
)

const (
	internalKey = "client-test-internal-key-51c0"
	publicKey   = "client-test-public-key-9ad2"
)

// bundle is a real control plane (SQLite and a blob directory in a temp
// dir) behind httptest, and files to submit.
type bundle struct {
	t      *testing.T
	ts     *httptest.Server
	blobs  *blob.Dir
	avatar string // path of a small "image"
	audio  string // path of a small "audio" file
}

// setup starts the control plane. wrap, when not nil, wraps its handler.
func setup(t *testing.T, wrap func(http.Handler) http.Handler) *bundle {
	t.Helper()
	dir := t.TempDir()
	blobs, err := blob.NewDir(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { blobs.Close() })
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "control.db"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := control.New(control.Config{
		Store: st, Blob: blobs, InternalAPIKey: internalKey, PublicAPIKeys: []string{publicKey},
		HeartbeatInterval: time.Second,
	})
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	h := srv.Handler()
	if wrap != nil {
		h = wrap(h)
	}
	ts := httptest.NewServer(h)
	t.Cleanup(func() {
		ts.Close()
		st.Close()
	})
	b := &bundle{t: t, ts: ts, blobs: blobs,
		avatar: filepath.Join(dir, "Face.PNG"), audio: filepath.Join(dir, "speech.wav")}
	// Contents do not matter to the control plane; sizes past one read
	// buffer exercise the streaming.
	write(t, b.avatar, bytes.Repeat([]byte("avatar-bytes-"), 20000))
	write(t, b.audio, bytes.Repeat([]byte("audio-"), 3000))
	return b
}

func write(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// client returns a client of the bundle's server with key and fast polling.
func (b *bundle) client(key string) *client.Client {
	b.t.Helper()
	c, err := client.New(b.ts.URL, key, client.WithPolling(5*time.Millisecond, 20*time.Millisecond, 3))
	if err != nil {
		b.t.Fatal(err)
	}
	return c
}

func (b *bundle) submit(c *client.Client, req client.SubmitRequest) protocol.JobView {
	b.t.Helper()
	if req.AvatarPath == "" {
		req.AvatarPath, req.AudioPath = b.avatar, b.audio
	}
	job, err := c.Submit(context.Background(), req)
	if err != nil {
		b.t.Fatalf("Submit: %v", err)
	}
	return job
}

// worker calls the worker API with the internal key; it fails the test on
// anything but a 2xx answer.
func (b *bundle) worker(method, path string, in, out any, header ...string) {
	b.t.Helper()
	var body io.Reader
	if data, ok := in.([]byte); ok {
		body = bytes.NewReader(data)
	} else if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			b.t.Fatal(err)
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, b.ts.URL+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+internalKey)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		b.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			b.t.Fatalf("%s %s: %v", method, path, err)
		}
	}
}

// claim registers worker w1 and claims the next job.
func (b *bundle) claim() protocol.Assignment {
	b.t.Helper()
	b.worker("POST", protocol.Path(protocol.HeartbeatRoute, "w1"), protocol.Heartbeat{
		Status: protocol.WorkerIdle, Provider: "other", GPUClass: "test", WorkerType: protocol.WorkerMain}, nil)
	var a protocol.Assignment
	b.worker("POST", protocol.Path(protocol.ClaimRoute, "w1"), nil, &a)
	return a
}

func TestSubmitStreamsFilesAndParams(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	c := b.client(publicKey)
	params := protocol.JobParams{Engine: "preview", Version: "v1", BBoxShift: -7, FPS: "30000/1001",
		BatchSize: 4, FaceBox: []int{1, 2, 30, 40}}
	job := b.submit(c, client.SubmitRequest{Params: params, Priority: 7, WorkerType: protocol.WorkerTransient, AvatarID: "face-1"})

	if job.State != protocol.JobQueued || job.Priority != 7 || job.WorkerType != protocol.WorkerTransient || job.AvatarID != "face-1" {
		t.Fatalf("submitted job: %+v", job)
	}
	got, err := json.Marshal(job.Params)
	want, _ := json.Marshal(params)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("params: got %s, want %s", got, want)
	}
	if want := "inputs/" + job.ID + "/avatar.png"; job.Inputs.AvatarKey != want {
		t.Errorf("avatar key %q, want %q", job.Inputs.AvatarKey, want)
	}
	for path, key := range map[string]string{b.avatar: job.Inputs.AvatarKey, b.audio: job.Inputs.AudioKey} {
		r, err := b.blobs.Get(context.Background(), key)
		if err != nil {
			t.Fatalf("stored input %s: %v", key, err)
		}
		stored, _ := io.ReadAll(r)
		r.Close()
		sent, _ := os.ReadFile(path)
		if !bytes.Equal(stored, sent) {
			t.Errorf("stored %s has %d bytes, the file %d", key, len(stored), len(sent))
		}
	}
	again, err := c.Get(context.Background(), job.ID)
	if err != nil || again.ID != job.ID || again.State != protocol.JobQueued {
		t.Fatalf("Get: %+v, %v", again, err)
	}
}

func TestWaitReportsProgressThenDownloads(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	c := b.client(publicKey)
	job := b.submit(c, client.SubmitRequest{})
	output := bytes.Repeat([]byte("mp4!"), 50000)

	// Each update the watcher sees moves the job one step on, as a worker
	// would: claim, two progress reports, upload and complete.
	var a protocol.Assignment
	var seen []string
	onUpdate := func(v protocol.JobView) {
		step := string(v.State)
		if v.Progress != nil {
			step += ":" + v.Progress.Stage
		}
		seen = append(seen, step)
		switch step {
		case "queued":
			a = b.claim()
		case "running":
			b.worker("POST", protocol.Path(protocol.ProgressRoute, job.ID), protocol.ProgressRequest{
				Attempt: a.Attempt, Token: a.Token, Progress: protocol.Progress{Stage: "unet", FramesDone: 3, FramesTotal: 10}}, nil)
		case "running:unet":
			b.worker("POST", protocol.Path(protocol.ProgressRoute, job.ID), protocol.ProgressRequest{
				Attempt: a.Attempt, Token: a.Token, Progress: protocol.Progress{Stage: "mux", FramesDone: 10, FramesTotal: 10}}, nil)
		case "running:mux":
			b.worker("PUT", protocol.InternalBlobPath+a.OutputKey, output, nil,
				protocol.AttemptHeader, strconv.Itoa(a.Attempt), protocol.TokenHeader, a.Token)
			sum := sha1.Sum(output)
			b.worker("POST", protocol.Path(protocol.CompleteRoute, job.ID), protocol.CompleteRequest{
				Attempt: a.Attempt, Token: a.Token, OutputKey: a.OutputKey,
				SHA1: hex.EncodeToString(sum[:]), Size: int64(len(output))}, nil)
		}
	}
	final, err := c.Wait(context.Background(), job.ID, onUpdate)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if final.State != protocol.JobSucceeded {
		t.Fatalf("final state %s", final.State)
	}
	if want := "queued running running:unet running:mux succeeded:mux"; strings.Join(seen, " ") != want {
		t.Errorf("updates seen: %q, want %q", strings.Join(seen, " "), want)
	}

	var buf bytes.Buffer
	n, err := c.Download(context.Background(), job.ID, &buf)
	if err != nil || n != int64(len(output)) || !bytes.Equal(buf.Bytes(), output) {
		t.Fatalf("Download: %d bytes, %v", n, err)
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "result.mp4")
	if _, err := c.DownloadFile(context.Background(), job.ID, out); err != nil {
		t.Fatalf("DownloadFile: %v", err)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, output) {
		t.Errorf("downloaded file has %d bytes, want %d", len(got), len(output))
	}
	// The mode os.Create gives (0666 less the umask), as a render's output.
	ref, err := os.Create(filepath.Join(t.TempDir(), "ref"))
	if err != nil {
		t.Fatal(err)
	}
	ref.Close()
	if got, want := statMode(t, out), statMode(t, ref.Name()); got != want {
		t.Errorf("result mode %v, want %v", got, want)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("download left %d files in its directory, want 1", len(entries))
	}
}

func TestWaitEndsWithTheJobsError(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	c := b.client(publicKey)
	job := b.submit(c, client.SubmitRequest{})
	a := b.claim()
	b.worker("POST", protocol.Path(protocol.FailRoute, job.ID), protocol.FailRequest{
		Attempt: a.Attempt, Token: a.Token, Error: "avatar: no face found in any frame", Retryable: false}, nil)

	final, err := c.Wait(context.Background(), job.ID, nil)
	var je *client.JobError
	if !errors.As(err, &je) || je.State != protocol.JobFailed || !strings.Contains(je.Message, "no face found") {
		t.Fatalf("Wait: %v, want a JobError naming the worker's failure", err)
	}
	if final.State != protocol.JobFailed || !strings.Contains(err.Error(), job.ID) {
		t.Errorf("final %s, error %q", final.State, err)
	}
	_, err = c.Download(context.Background(), job.ID, io.Discard)
	if !client.HasCode(err, protocol.CodeNotReady) || !strings.Contains(err.Error(), "failed") {
		t.Errorf("Download of a failed job: %v", err)
	}
	_, err = c.Cancel(context.Background(), job.ID)
	if !client.HasCode(err, protocol.CodeConflict) || !strings.Contains(err.Error(), "already failed") {
		t.Errorf("Cancel of a failed job: %v", err)
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	c := b.client(publicKey)
	job := b.submit(c, client.SubmitRequest{})
	got, err := c.Cancel(context.Background(), job.ID)
	if err != nil || got.State != protocol.JobCancelled {
		t.Fatalf("Cancel: %s, %v", got.State, err)
	}
	if got, err = c.Cancel(context.Background(), job.ID); err != nil || got.State != protocol.JobCancelled {
		t.Fatalf("second Cancel: %s, %v", got.State, err)
	}
	_, err = c.Wait(context.Background(), job.ID, nil)
	var je *client.JobError
	if !errors.As(err, &je) || je.State != protocol.JobCancelled {
		t.Fatalf("Wait on a cancelled job: %v", err)
	}
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	c := b.client(publicKey)
	first := b.submit(c, client.SubmitRequest{IdempotencyKey: "order-42"})
	repeat := b.submit(c, client.SubmitRequest{IdempotencyKey: "order-42", Params: protocol.JobParams{BatchSize: 8}})
	other := b.submit(c, client.SubmitRequest{IdempotencyKey: "order-43"})
	if repeat.ID != first.ID || repeat.Params.BatchSize != 0 {
		t.Errorf("repeat got job %s (batch %d), want the first job %s", repeat.ID, repeat.Params.BatchSize, first.ID)
	}
	if other.ID == first.ID {
		t.Error("a different key got the same job")
	}
	if first.IdempotencyKey != "order-42" {
		t.Errorf("idempotency key %q not on the job", first.IdempotencyKey)
	}
}

func TestAuthFailure(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	job := b.submit(b.client(publicKey), client.SubmitRequest{})
	for _, key := range []string{"", "wrong-key", internalKey} {
		c := b.client(key)
		_, err := c.Get(context.Background(), job.ID)
		var e *client.Error
		if !errors.As(err, &e) || e.Status != http.StatusUnauthorized || e.Code != protocol.CodeUnauthorized || e.Message == "" {
			t.Errorf("Get with key %q: %v, want 401 unauthorized", key, err)
		}
		if _, err := c.Submit(context.Background(), client.SubmitRequest{AvatarPath: b.avatar, AudioPath: b.audio}); !client.HasCode(err, protocol.CodeUnauthorized) {
			t.Errorf("Submit with key %q: %v, want 401", key, err)
		}
		// Wait does not keep polling what cannot succeed.
		if _, err := c.Wait(context.Background(), job.ID, nil); !client.HasCode(err, protocol.CodeUnauthorized) {
			t.Errorf("Wait with key %q: %v, want 401", key, err)
		}
	}
}

func TestServerMessagesSurface(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	c := b.client(publicKey)
	ctx := context.Background()

	_, err := c.Submit(ctx, client.SubmitRequest{AvatarPath: b.avatar, AudioPath: b.audio, Priority: 500})
	var e *client.Error
	if !errors.As(err, &e) || e.Status != 400 || e.Code != protocol.CodeBadRequest || e.Message != "priority: 500 is outside -100..100" {
		t.Errorf("Submit with priority 500: %v", err)
	}
	_, err = c.Submit(ctx, client.SubmitRequest{AvatarPath: b.avatar, AudioPath: b.audio, IdempotencyKey: "tab\there"})
	if !client.HasCode(err, protocol.CodeBadRequest) || !strings.Contains(err.Error(), "idempotency_key: only printable ASCII") {
		t.Errorf("Submit with a tab in the idempotency key: %v", err)
	}
	const missing = "0190aaaa-0000-7000-8000-000000000000"
	_, err = c.Get(ctx, missing)
	if !client.HasCode(err, protocol.CodeNotFound) || !strings.Contains(err.Error(), `job "`+missing+`" not found`) {
		t.Errorf("Get of an unknown job: %v", err)
	}
	if _, err = c.Wait(ctx, missing, nil); !client.HasCode(err, protocol.CodeNotFound) {
		t.Errorf("Wait on an unknown job: %v", err)
	}
	job := b.submit(c, client.SubmitRequest{})
	_, err = c.Download(ctx, job.ID, io.Discard)
	if !client.HasCode(err, protocol.CodeNotReady) || !strings.Contains(err.Error(), "is queued") {
		t.Errorf("Download of a queued job: %v", err)
	}
	out := filepath.Join(t.TempDir(), "out.mp4")
	if _, err := c.DownloadFile(ctx, job.ID, out); err == nil {
		t.Error("DownloadFile of a queued job succeeded")
	}
	if entries, _ := os.ReadDir(filepath.Dir(out)); len(entries) != 0 {
		t.Errorf("a failed download left %d files", len(entries))
	}
}

func TestSubmitRefusesBadInputsBeforeSending(t *testing.T) {
	t.Parallel()
	var requests atomic.Int32
	b := setup(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			requests.Add(1)
			h.ServeHTTP(w, r)
		})
	})
	c := b.client(publicKey)
	empty := filepath.Join(t.TempDir(), "empty.wav")
	write(t, empty, nil)
	for _, tc := range []struct {
		name string
		req  client.SubmitRequest
		want string
	}{
		{"no avatar", client.SubmitRequest{AudioPath: b.audio}, "avatar: no file given"},
		{"missing audio", client.SubmitRequest{AvatarPath: b.avatar, AudioPath: "/nonexistent/a.wav"}, "audio: open /nonexistent/a.wav"},
		{"empty audio", client.SubmitRequest{AvatarPath: b.avatar, AudioPath: empty}, "is empty"},
		{"directory", client.SubmitRequest{AvatarPath: t.TempDir(), AudioPath: b.audio}, "not a regular file"},
		{"bad params", client.SubmitRequest{AvatarPath: b.avatar, AudioPath: b.audio, Params: protocol.JobParams{Version: "v9"}}, "params.version"},
	} {
		if _, err := c.Submit(context.Background(), tc.req); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("%d requests reached the server", n)
	}
}

func TestWaitRidesOutTransientErrors(t *testing.T) {
	t.Parallel()
	var failing atomic.Int32
	b := setup(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && failing.Add(-1) >= 0 {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusServiceUnavailable)
				io.WriteString(w, `{"error":{"code":"unavailable","message":"store unreachable"}}`)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	c := b.client(publicKey) // accepts 3 failures in a row
	job := b.submit(c, client.SubmitRequest{})
	if _, err := c.Cancel(context.Background(), job.ID); err != nil {
		t.Fatal(err)
	}
	failing.Store(3)
	final, err := c.Wait(context.Background(), job.ID, nil)
	var je *client.JobError
	if !errors.As(err, &je) || final.State != protocol.JobCancelled {
		t.Fatalf("Wait after 3 failures: %s, %v", final.State, err)
	}
	failing.Store(4)
	_, err = c.Wait(context.Background(), job.ID, nil)
	if !client.HasCode(err, protocol.CodeUnavailable) || !strings.Contains(err.Error(), "giving up after 4 failed polls") {
		t.Fatalf("Wait after 4 failures: %v", err)
	}
}

func TestWaitStopsWithItsContext(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	c := b.client(publicKey)
	job := b.submit(c, client.SubmitRequest{})
	ctx, cancel := context.WithCancel(context.Background())
	var updates int
	last, err := c.Wait(ctx, job.ID, func(protocol.JobView) {
		updates++
		cancel() // the watcher gives up after the first look
	})
	if !errors.Is(err, context.Canceled) || last.ID != job.ID || last.State != protocol.JobQueued || updates != 1 {
		t.Fatalf("Wait: %v, last %+v, %d updates", err, last.State, updates)
	}
}

func TestNewChecksItsArguments(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"", "localhost:8080", "ftp://host", "http://user:pw@host", "http://host/?q=1"} {
		if _, err := client.New(u, ""); err == nil {
			t.Errorf("New(%q) succeeded", u)
		} else if strings.Contains(err.Error(), "pw") {
			t.Errorf("New(%q): the error shows the password: %v", u, err)
		}
	}
	if _, err := client.New("http://host", "two\nlines"); err == nil {
		t.Error("a key with a newline was accepted")
	}
	c, err := client.New("https://example.com/musetalk/", "k")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.JobURL("j1"), "https://example.com/musetalk/v1/jobs/j1"; got != want {
		t.Errorf("JobURL %q, want %q", got, want)
	}
	if _, err := c.Get(context.Background(), "../secrets"); err == nil || !strings.Contains(err.Error(), "not a valid id") {
		t.Errorf("Get with a bad id: %v", err)
	}
}

func TestWorkers(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	c := b.client(publicKey)
	ws, err := c.Workers(context.Background())
	if err != nil || len(ws) != 0 {
		t.Fatalf("Workers before any heartbeat: %+v, %v", ws, err)
	}
	b.worker("POST", protocol.Path(protocol.HeartbeatRoute, "w1"), protocol.Heartbeat{
		Status: protocol.WorkerIdle, Provider: "other", GPUClass: "test", WorkerType: protocol.WorkerMain,
		CachedAvatars: []string{"face-17"}}, nil)
	ws, err = c.Workers(context.Background())
	if err != nil || len(ws) != 1 || ws[0].ID != "w1" || !slices.Equal(ws[0].CachedAvatars, []string{"face-17"}) {
		t.Fatalf("Workers after w1's heartbeat: %+v, %v", ws, err)
	}
}

func statMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

// TestWaitReachable: a control plane that starts listening a moment after
// the client begins (`musetalk up &` then submit) is waited for; one that
// never answers ends the wait after the bound; an answer that waiting
// cannot change ends it at once.
func TestWaitReachable(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	late := &http.Server{Handler: b.ts.Config.Handler}
	t.Cleanup(func() { late.Close() })
	go func() {
		time.Sleep(400 * time.Millisecond)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Error(err)
			return
		}
		late.Serve(ln)
	}()
	c, err := client.New("http://"+addr, publicKey)
	if err != nil {
		t.Fatal(err)
	}
	retries := 0
	if err := c.WaitReachable(context.Background(), 10*time.Second, func(error) { retries++ }); err != nil {
		t.Fatalf("WaitReachable: %v", err)
	}
	if retries == 0 {
		t.Error("the server answered at once: the test did not test the wait")
	}

	// Nobody there: the bound ends the wait, naming it and the URL.
	ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	c, _ = client.New("http://"+dead, "")
	start := time.Now()
	err = c.WaitReachable(context.Background(), 300*time.Millisecond, nil)
	if err == nil || !strings.Contains(err.Error(), "did not answer within") || !strings.Contains(err.Error(), dead) {
		t.Fatalf("nobody listening: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the wait took %s, bound 300ms", d)
	}

	// Something else answers 404: no point waiting.
	other := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(other.Close)
	c, _ = client.New(other.URL, "")
	retries = 0
	if err := c.WaitReachable(context.Background(), time.Minute, func(error) { retries++ }); err == nil || retries != 0 {
		t.Fatalf("a 404 server: %v after %d retries", err, retries)
	}
}

package dashboard_test

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/avatargen/musetalk/blob"
	"github.com/avatargen/musetalk/control"
	"github.com/avatargen/musetalk/control/store/sqlite"
	"github.com/avatargen/musetalk/protocol"
)

const (
	internalKey = "internal-key-7c1d93e0aa"
	publicKey   = "public-key-1f0b6a2e94"
)

// env is a real control plane (SQLite in a temporary directory, a local
// blob directory) on an httptest server, with the real clock: the browser
// tests watch it move.
type env struct {
	t      *testing.T
	srv    *control.Server
	ts     *httptest.Server
	store  *sqlite.Store
	blobs  *blob.Dir
	stored bool
}

// start serves a control plane whose public API keys are keys (none: open).
func start(t *testing.T, keys ...string) *env {
	t.Helper()
	return startWith(t, func(c *control.Config) { c.PublicAPIKeys = keys })
}

// startWith serves a control plane configured by mod.
func startWith(t *testing.T, mod func(*control.Config)) *env {
	t.Helper()
	dir := t.TempDir()
	blobs, err := blob.NewDir(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatalf("opening blob dir: %v", err)
	}
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "control.db"))
	if err != nil {
		t.Fatalf("opening sqlite store: %v", err)
	}
	cfg := control.Config{
		Store: st, Blob: blobs, Logger: slog.New(slog.DiscardHandler),
		InternalAPIKey: internalKey, HeartbeatInterval: 2 * time.Second,
	}
	mod(&cfg)
	srv, err := control.New(cfg)
	if err != nil {
		t.Fatalf("control.New: %v", err)
	}
	e := &env{t: t, srv: srv, ts: httptest.NewServer(srv.Handler()), store: st, blobs: blobs}
	t.Cleanup(func() {
		e.ts.Close()
		st.Close()
		blobs.Close()
	})
	return e
}

// call sends in as JSON with a bearer key and decodes a 2xx answer into out.
func (e *env) call(method, path, key string, in, out any) (int, []byte) {
	e.t.Helper()
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			e.t.Fatal(err)
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, e.ts.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode/100 == 2 && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			e.t.Fatalf("%s %s: decoding %s: %v", method, path, data, err)
		}
	}
	return resp.StatusCode, data
}

// heartbeat registers or updates worker id through the worker API.
func (e *env) heartbeat(id string, hb protocol.Heartbeat) protocol.HeartbeatResponse {
	e.t.Helper()
	if hb.Status == "" {
		hb.Status = protocol.WorkerIdle
	}
	if hb.WorkerType == "" {
		hb.WorkerType = protocol.WorkerMain
	}
	var resp protocol.HeartbeatResponse
	if status, data := e.call("POST", protocol.Path(protocol.HeartbeatRoute, id), internalKey, hb, &resp); status != http.StatusOK {
		e.t.Fatalf("heartbeat of %s: %d %s", id, status, data)
	}
	return resp
}

// submit creates a job by JSON from two stored inputs.
func (e *env) submit(key string, req protocol.SubmitRequest) protocol.JobView {
	e.t.Helper()
	if !e.stored {
		e.stored = true
		for k, v := range map[string]string{"uploads/avatar.png": "avatar-bytes", "uploads/audio.wav": "audio-bytes"} {
			if err := e.blobs.Put(context.Background(), k, strings.NewReader(v), int64(len(v))); err != nil {
				e.t.Fatal(err)
			}
		}
	}
	req.AvatarKey, req.AudioKey = "uploads/avatar.png", "uploads/audio.wav"
	var v protocol.JobView
	if status, data := e.call("POST", "/v1/jobs", key, req, &v); status != http.StatusCreated {
		e.t.Fatalf("submit: %d %s", status, data)
	}
	return v
}

// claim claims a job for worker id and requires one.
func (e *env) claim(id string) *protocol.Assignment {
	e.t.Helper()
	a := e.tryClaim(id)
	if a == nil {
		e.t.Fatalf("claim by %s: nothing to claim", id)
	}
	return a
}

// tryClaim claims a job for worker id: nil when there is none.
func (e *env) tryClaim(id string) *protocol.Assignment {
	e.t.Helper()
	var a protocol.Assignment
	switch status, data := e.call("POST", protocol.Path(protocol.ClaimRoute, id), internalKey, nil, &a); status {
	case http.StatusOK:
		return &a
	case http.StatusNoContent:
		return nil
	default:
		e.t.Fatalf("claim by %s: %d %s", id, status, data)
		return nil
	}
}

// progress reports an attempt's progress through the worker API.
func (e *env) progress(a *protocol.Assignment, stage string, done, total int) {
	e.t.Helper()
	body := protocol.ProgressRequest{Attempt: a.Attempt, Token: a.Token,
		Progress: protocol.Progress{Stage: stage, FramesDone: done, FramesTotal: total}}
	if status, data := e.call("POST", protocol.Path(protocol.ProgressRoute, a.JobID), internalKey, body, nil); status != http.StatusOK {
		e.t.Fatalf("progress: %d %s", status, data)
	}
}

// finish uploads content as the attempt's output and completes it. A
// control plane that wants the output's SHA-1 and size on complete (issue
// 12's fenced uploads) gets them on a second try.
func (e *env) finish(a *protocol.Assignment, content []byte) {
	e.t.Helper()
	if err := e.blobs.Put(context.Background(), a.OutputKey, bytes.NewReader(content), int64(len(content))); err != nil {
		e.t.Fatal(err)
	}
	path := protocol.Path(protocol.CompleteRoute, a.JobID)
	body := map[string]any{"attempt": a.Attempt, "token": a.Token, "output_key": a.OutputKey}
	status, data := e.call("POST", path, internalKey, body, nil)
	if status == http.StatusBadRequest && strings.Contains(string(data), "sha1") {
		sum := sha1.Sum(content)
		body["sha1"], body["size"] = hex.EncodeToString(sum[:]), len(content)
		status, data = e.call("POST", path, internalKey, body, nil)
	}
	if status != http.StatusOK {
		e.t.Fatalf("complete: %d %s", status, data)
	}
}

// fail reports a permanent failure of the attempt.
func (e *env) fail(a *protocol.Assignment, msg string) { e.failWith(a, msg, false) }

// failWith reports a failure of the attempt.
func (e *env) failWith(a *protocol.Assignment, msg string, retryable bool) {
	e.t.Helper()
	body := protocol.FailRequest{Attempt: a.Attempt, Token: a.Token, Error: msg, Retryable: retryable}
	if status, data := e.call("POST", protocol.Path(protocol.FailRoute, a.JobID), internalKey, body, nil); status != http.StatusOK {
		e.t.Fatalf("fail: %d %s", status, data)
	}
}

// job reads a job through the public API.
func (e *env) job(key, id string) protocol.JobView {
	e.t.Helper()
	var v protocol.JobView
	if status, data := e.call("GET", "/v1/jobs/"+id, key, nil, &v); status != http.StatusOK {
		e.t.Fatalf("get job %s: %d %s", id, status, data)
	}
	return v
}

// worker reads a worker through the public API.
func (e *env) worker(key, id string) protocol.WorkerView {
	e.t.Helper()
	var l protocol.WorkerList
	if status, data := e.call("GET", "/v1/workers", key, nil, &l); status != http.StatusOK {
		e.t.Fatalf("list workers: %d %s", status, data)
	}
	for _, w := range l.Workers {
		if w.ID == id {
			return w
		}
	}
	e.t.Fatalf("no worker %s", id)
	return protocol.WorkerView{}
}

// browserless is an HTTP client with a cookie jar that does not follow
// redirects: a browser's view of the dashboard, one request at a time.
type browserless struct {
	t *testing.T
	e *env
	c *http.Client
}

func (e *env) client() *browserless {
	jar, err := cookiejar.New(nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return &browserless{t: e.t, e: e, c: &http.Client{Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// do sends a request; form, when not nil, is sent url-encoded, and
// headers are added as given.
func (b *browserless) do(method, path string, form url.Values, headers ...string) (*http.Response, string) {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.e.ts.URL+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, string(data)
}

// login posts key to the login form and returns the answer.
func (b *browserless) login(key string) (*http.Response, string) {
	b.t.Helper()
	return b.do("POST", "/dashboard/login", url.Values{"key": {key}, "next": {"/dashboard/fleet"}})
}

// csrf reads the CSRF token out of a dashboard page.
func (b *browserless) csrf(path string) string {
	b.t.Helper()
	resp, page := b.do("GET", path, nil)
	if resp.StatusCode != http.StatusOK {
		b.t.Fatalf("GET %s: %d %s", path, resp.StatusCode, page)
	}
	const marker = `<meta name="csrf-token" content="`
	i := strings.Index(page, marker)
	if i < 0 {
		b.t.Fatalf("GET %s: no CSRF token in the page", path)
	}
	rest := page[i+len(marker):]
	return rest[:strings.IndexByte(rest, '"')]
}

package control

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"math/rand/v2"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/avatargen/musetalk/blob"
	"github.com/avatargen/musetalk/control/store/sqlite"
	"github.com/avatargen/musetalk/protocol"
)

const (
	testInternalKey = "internal-key-3f9c2a7d1e"
	testPublicKey   = "public-key-8b41d6e0c5"
	testInterval    = 5 * time.Second
)

// fakeClock is the Server's clock in tests; tests move it by hand.
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

// syncBuffer collects log output from concurrent handlers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type testBundle struct {
	t      *testing.T
	cfg    Config
	srv    *Server
	ts     *httptest.Server
	store  *sqlite.Store
	blobs  *blob.Dir
	clock  *fakeClock
	dbPath string
	logs   *syncBuffer
	stored bool // inputs() has stored its objects

	mu       sync.Mutex
	uploaded map[string][]byte // output key -> what upload stored there
}

// setup starts a Server over a real SQLite file and a real blob
// directory in t.TempDir(), served by httptest. mods adjust the config.
func setup(t *testing.T, mods ...func(*Config)) *testBundle {
	t.Helper()
	dir := t.TempDir()
	b := &testBundle{
		t:      t,
		clock:  &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
		dbPath: filepath.Join(dir, "control.db"),
		logs:   &syncBuffer{},
	}
	blobs, err := blob.NewDir(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatalf("opening blob dir: %v", err)
	}
	b.blobs = blobs
	t.Cleanup(func() { blobs.Close() })
	b.cfg = Config{
		Blob:              blobs,
		Logger:            slog.New(slog.NewTextHandler(b.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:               b.clock.Now,
		RandSource:        rand.NewPCG(1, 2),
		InternalAPIKey:    testInternalKey,
		PublicAPIKeys:     []string{testPublicKey},
		HeartbeatInterval: testInterval,
	}
	for _, m := range mods {
		m(&b.cfg)
	}
	b.start()
	return b
}

// start opens the store at dbPath and serves a new Server over it.
func (b *testBundle) start() {
	b.t.Helper()
	st, err := sqlite.Open(context.Background(), b.dbPath)
	if err != nil {
		b.t.Fatalf("opening sqlite store: %v", err)
	}
	b.store = st
	cfg := b.cfg
	cfg.Store = st
	srv, err := New(cfg)
	if err != nil {
		st.Close()
		b.t.Fatalf("New: %v", err)
	}
	b.srv = srv
	b.ts = httptest.NewServer(srv.Handler())
	ts := b.ts
	b.t.Cleanup(func() {
		ts.Close()
		st.Close()
	})
}

// restart stops the HTTP server and closes the store, then opens the same
// file again behind a new Server, as a process restart would.
func (b *testBundle) restart() {
	b.t.Helper()
	b.ts.Close()
	if err := b.store.Close(); err != nil {
		b.t.Fatalf("closing store: %v", err)
	}
	b.start()
}

// do sends a request and returns the status, body and headers. key ""
// sends no Authorization header.
func (b *testBundle) do(method, path, key, contentType string, body io.Reader) (int, []byte, http.Header) {
	b.t.Helper()
	req, err := http.NewRequest(method, b.ts.URL+path, body)
	if err != nil {
		b.t.Fatalf("new request: %v", err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := b.ts.Client().Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp.StatusCode, data, resp.Header
}

// call sends in as JSON (nil: no body) and decodes a 2xx answer into out.
func (b *testBundle) call(method, path, key string, in, out any) (int, []byte) {
	b.t.Helper()
	var body io.Reader
	ct := ""
	if in != nil {
		if raw, ok := in.(string); ok {
			body = strings.NewReader(raw)
		} else {
			data, err := json.Marshal(in)
			if err != nil {
				b.t.Fatalf("encoding request: %v", err)
			}
			body = bytes.NewReader(data)
		}
		ct = "application/json"
	}
	status, data, _ := b.do(method, path, key, ct, body)
	if out != nil && status >= 200 && status < 300 && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			b.t.Fatalf("%s %s: decoding %s: %v", method, path, data, err)
		}
	}
	return status, data
}

// errorBody decodes an error answer and checks its shape.
func errorBody(t *testing.T, data []byte) protocol.ErrorDetail {
	t.Helper()
	var e protocol.ErrorBody
	if err := json.Unmarshal(data, &e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
		t.Fatalf("not an error body: %s (%v)", data, err)
	}
	return e.Error
}

// wantError checks an answer's status, code and that its message names
// each of names.
func wantError(t *testing.T, status int, data []byte, wantStatus int, wantCode string, names ...string) {
	t.Helper()
	if status != wantStatus {
		t.Fatalf("status %d, want %d: %s", status, wantStatus, data)
	}
	e := errorBody(t, data)
	if wantCode != "" && e.Code != wantCode {
		t.Fatalf("code %q, want %q: %s", e.Code, wantCode, data)
	}
	for _, n := range names {
		if !strings.Contains(e.Message, n) {
			t.Fatalf("message %q does not name %q", e.Message, n)
		}
	}
}

func seedHeartbeat(status protocol.WorkerStatus) protocol.Heartbeat {
	return protocol.Heartbeat{Status: status, Provider: "salad", GPUClass: "RTX_3060", WorkerType: protocol.WorkerMain}
}

// heartbeat sends hb for worker id and requires 200.
func (b *testBundle) heartbeat(id string, hb protocol.Heartbeat) protocol.HeartbeatResponse {
	b.t.Helper()
	var resp protocol.HeartbeatResponse
	status, data := b.call("POST", protocol.Path(protocol.HeartbeatRoute, id), testInternalKey, hb, &resp)
	if status != http.StatusOK {
		b.t.Fatalf("heartbeat of %s: %d %s", id, status, data)
	}
	return resp
}

// busy is the heartbeat of a worker running a.
func busy(a *protocol.Assignment) protocol.Heartbeat {
	hb := seedHeartbeat(protocol.WorkerBusy)
	hb.JobID, hb.Attempt = a.JobID, a.Attempt
	return hb
}

// claim claims for worker id: the assignment on 200, nil on 204.
func (b *testBundle) claim(id string) *protocol.Assignment {
	b.t.Helper()
	var a protocol.Assignment
	status, data := b.call("POST", protocol.Path(protocol.ClaimRoute, id), testInternalKey, nil, &a)
	switch status {
	case http.StatusOK:
		return &a
	case http.StatusNoContent:
		return nil
	}
	b.t.Fatalf("claim by %s: %d %s", id, status, data)
	return nil
}

// upload puts an attempt's output through the internal blob route, fenced
// with the attempt and its token, and remembers its size and SHA-1 for
// complete.
func (b *testBundle) upload(a *protocol.Assignment, content []byte) {
	b.t.Helper()
	status, data := b.putOutput(a.OutputKey, a.Attempt, a.Token, bytes.NewReader(content))
	if status != http.StatusCreated {
		b.t.Fatalf("uploading %s: %d %s", a.OutputKey, status, data)
	}
	b.setUploaded(a.OutputKey, content)
}

// setUploaded records content as what was uploaded to key (complete sends
// its size and SHA-1).
func (b *testBundle) setUploaded(key string, content []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.uploaded == nil {
		b.uploaded = map[string][]byte{}
	}
	b.uploaded[key] = content
}

// putOutput PUTs body to key through the internal blob route with the
// fencing headers (attempt 0 leaves the attempt header out, token "" the
// token header).
func (b *testBundle) putOutput(key string, attempt int, token string, body io.Reader) (int, []byte) {
	b.t.Helper()
	req, err := http.NewRequest("PUT", b.ts.URL+protocol.InternalBlobPath+key, body)
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testInternalKey)
	req.Header.Set("Content-Type", "video/mp4")
	if attempt != 0 {
		req.Header.Set(protocol.AttemptHeader, strconv.Itoa(attempt))
	}
	if token != "" {
		req.Header.Set(protocol.TokenHeader, token)
	}
	resp, err := b.ts.Client().Do(req)
	if err != nil {
		b.t.Fatalf("PUT %s: %v", key, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

// digest is content's lower-case hex SHA-1 and size, as complete wants them.
func digest(content []byte) (string, int64) {
	sum := sha1.Sum(content)
	return hex.EncodeToString(sum[:]), int64(len(content))
}

// attemptCall posts an attempt call (progress, complete, fail, release).
func (b *testBundle) attemptCall(route, jobID string, body any) (int, []byte) {
	b.t.Helper()
	return b.call("POST", protocol.Path(route, jobID), testInternalKey, body, nil)
}

func (b *testBundle) complete(a *protocol.Assignment) (int, []byte) {
	b.t.Helper()
	return b.attemptCall(protocol.CompleteRoute, a.JobID, b.completeRequest(a))
}

// completeRequest is a's complete call, naming what upload stored for it
// ("x" when nothing was).
func (b *testBundle) completeRequest(a *protocol.Assignment) protocol.CompleteRequest {
	b.mu.Lock()
	content, ok := b.uploaded[a.OutputKey]
	b.mu.Unlock()
	if !ok {
		content = []byte("x")
	}
	sha, size := digest(content)
	return protocol.CompleteRequest{Attempt: a.Attempt, Token: a.Token, OutputKey: a.OutputKey, SHA1: sha, Size: size}
}

// inputs stores an avatar and an audio object directly in the blob store
// and returns their keys, for JSON submissions.
func (b *testBundle) inputs() (string, string) {
	b.t.Helper()
	if b.stored {
		return "uploads/avatar.mp4", "uploads/audio.wav"
	}
	b.stored = true
	ctx := context.Background()
	for key, content := range map[string]string{"uploads/avatar.mp4": "avatar-bytes", "uploads/audio.wav": "audio-bytes"} {
		if err := b.blobs.Put(ctx, key, strings.NewReader(content), int64(len(content))); err != nil {
			b.t.Fatalf("storing %s: %v", key, err)
		}
	}
	return "uploads/avatar.mp4", "uploads/audio.wav"
}

// submit creates a job by JSON and requires 201.
func (b *testBundle) submit(req protocol.SubmitRequest) protocol.JobView {
	b.t.Helper()
	if req.AvatarKey == "" {
		req.AvatarKey, req.AudioKey = b.inputs()
	}
	var v protocol.JobView
	status, data := b.call("POST", "/v1/jobs", testPublicKey, req, &v)
	if status != http.StatusCreated {
		b.t.Fatalf("submit: %d %s", status, data)
	}
	return v
}

// getJob reads a job through the public API.
func (b *testBundle) getJob(id string) protocol.JobView {
	b.t.Helper()
	var v protocol.JobView
	status, data := b.call("GET", protocol.Path(protocol.GetJobRoute, id), testPublicKey, nil, &v)
	if status != http.StatusOK {
		b.t.Fatalf("get job %s: %d %s", id, status, data)
	}
	return v
}

// sweep runs one sweeper pass and requires success.
func (b *testBundle) sweep() {
	b.t.Helper()
	if err := b.srv.Sweep(context.Background()); err != nil {
		b.t.Fatalf("sweep: %v", err)
	}
}

// multipartBody builds a multipart submission. files maps a field to
// {filename, content}; fields are plain form values, written first.
type filePart struct{ name, content string }

func multipartBody(t *testing.T, fields map[string]string, files map[string]filePart) (string, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, v := range fields {
		if err := mw.WriteField(k, v); err != nil {
			t.Fatal(err)
		}
	}
	for field, f := range files {
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", `form-data; name="`+field+`"; filename="`+f.name+`"`)
		h.Set("Content-Type", "application/octet-stream")
		w, err := mw.CreatePart(h)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(w, f.content); err != nil {
			t.Fatal(err)
		}
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return mw.FormDataContentType(), &buf
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// worker reads one registry entry through the public API.
func (b *testBundle) worker(id string) protocol.WorkerView {
	b.t.Helper()
	var list protocol.WorkerList
	b.call("GET", "/v1/workers", testPublicKey, nil, &list)
	for _, w := range list.Workers {
		if w.ID == id {
			return w
		}
	}
	b.t.Fatalf("worker %s not listed", id)
	return protocol.WorkerView{}
}

func (b *testBundle) metricsText() string {
	b.t.Helper()
	status, data, _ := b.do("GET", "/metrics", "", "", nil)
	if status != http.StatusOK {
		b.t.Fatalf("metrics: %d %s", status, data)
	}
	return string(data)
}

func grepLines(text, substr string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

package controlblob_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/blob"
	"github.com/avatargen/musetalk/control"
	"github.com/avatargen/musetalk/control/store/sqlite"
	"github.com/avatargen/musetalk/protocol"
	"github.com/avatargen/musetalk/worker/controlblob"
)

const key = "internal-key-s3cret"

// setup runs the real control plane over a local object directory.
func setup(t *testing.T) (*httptest.Server, *blob.Dir) {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	dir, err := blob.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dir.Close() })
	cp, err := control.New(control.Config{Store: st, Blob: dir, InternalAPIKey: key})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(cp.Handler())
	t.Cleanup(srv.Close)
	return srv, dir
}

func post(t *testing.T, url, auth string, body, out any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("POST %s: %d %s", url, resp.StatusCode, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	srv, dir := setup(t)
	ctx := context.Background()
	s, err := controlblob.New(srv.URL+"/", key, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Inputs: read what the control plane holds, odd characters included.
	odd := "inputs/we?ird#name%41;x.wav"
	for _, k := range []string{"inputs/j/avatar.png", odd} {
		if err := dir.Put(ctx, k, strings.NewReader("data of "+k), -1); err != nil {
			t.Fatal(err)
		}
		rc, err := s.Get(ctx, k)
		if err != nil {
			t.Fatalf("Get %s: %v", k, err)
		}
		got, _ := io.ReadAll(rc)
		rc.Close()
		if string(got) != "data of "+k {
			t.Errorf("Get %s = %q", k, got)
		}
		info, err := s.Stat(ctx, k)
		if err != nil || info.Size != int64(len("data of "+k)) || info.Key != k || info.Modified.IsZero() {
			t.Errorf("Stat %s = %+v, %v", k, info, err)
		}
	}
	if _, err := s.Get(ctx, "inputs/missing"); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Get of a missing key: %v, want ErrNotFound", err)
	}
	if _, err := s.Stat(ctx, "inputs/missing"); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Stat of a missing key: %v, want ErrNotFound", err)
	}
	if _, err := s.Get(ctx, "../etc/passwd"); err == nil || errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Get of an invalid key: %v, want a validation error", err)
	}

	// Outputs: the control plane accepts an attempt's output key from that
	// attempt (its number and fencing token) while it is the job's current
	// one.
	if err := dir.Put(ctx, "inputs/j/audio.wav", strings.NewReader("a"), 1); err != nil {
		t.Fatal(err)
	}
	var job protocol.JobView
	post(t, srv.URL+"/v1/jobs", "", protocol.SubmitRequest{AvatarKey: "inputs/j/avatar.png", AudioKey: "inputs/j/audio.wav"}, &job)
	out := "outputs/" + job.ID + "/1.mp4"
	err = s.PutAttempt(ctx, out, strings.NewReader("mp4"), 3, 1, "no-token-yet")
	var se *controlblob.StatusError
	if !errors.As(err, &se) || se.Status != http.StatusConflict || se.Code != protocol.CodeStaleToken {
		t.Errorf("PutAttempt before the claim: %v, want a 409 stale_token", err)
	}
	hb := protocol.Heartbeat{Status: protocol.WorkerIdle, Provider: "other", GPUClass: "x", WorkerType: protocol.WorkerMain}
	post(t, srv.URL+protocol.Path(protocol.HeartbeatRoute, "w1"), key, hb, nil)
	var a protocol.Assignment
	post(t, srv.URL+protocol.Path(protocol.ClaimRoute, "w1"), key, protocol.ClaimRequest{}, &a)
	if a.OutputKey != out {
		t.Fatalf("assignment output key %q, want %q", a.OutputKey, out)
	}
	body := bytes.Repeat([]byte("v"), 100_000)
	if err := s.PutAttempt(ctx, out, bytes.NewReader(body), int64(len(body)), a.Attempt, a.Token); err != nil {
		t.Fatalf("PutAttempt %s: %v", out, err)
	}
	if err := s.PutAttempt(ctx, out, io.MultiReader(bytes.NewReader(body)), -1, a.Attempt, a.Token); err != nil {
		t.Fatalf("PutAttempt %s of unknown size: %v", out, err)
	}
	// Without the fence, or with another token: refused, nothing stored.
	err = s.Put(ctx, out, strings.NewReader("unfenced"), 8)
	if !errors.As(err, &se) || se.Status != http.StatusBadRequest || !strings.Contains(se.Message, protocol.AttemptHeader) {
		t.Errorf("Put without a fence: %v, want a 400 naming %s", err, protocol.AttemptHeader)
	}
	err = s.PutAttempt(ctx, out, strings.NewReader("stale"), 5, a.Attempt, "another-token")
	if !errors.As(err, &se) || se.Status != http.StatusConflict || se.Code != protocol.CodeStaleToken {
		t.Errorf("PutAttempt with another token: %v, want a 409 stale_token", err)
	}
	if err := s.PutAttempt(ctx, out, strings.NewReader("x"), 1, 0, ""); err == nil {
		t.Errorf("PutAttempt without attempt and token was sent")
	}
	rc, err := dir.Get(ctx, out)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, body) {
		t.Errorf("stored %d bytes, want %d", len(got), len(body))
	}
	// Anything but an output key is refused.
	err = s.PutAttempt(ctx, "inputs/j/avatar.png", strings.NewReader("x"), 1, a.Attempt, a.Token)
	if !errors.As(err, &se) || se.Status != http.StatusForbidden || se.Temporary() {
		t.Errorf("Put of an input key: %v, want a permanent 403", err)
	}
	// The control plane offers no deletion.
	if err := s.Delete(ctx, out); err == nil {
		t.Errorf("Delete succeeded; the control plane has no delete route")
	}
}

func TestAuthAndConfig(t *testing.T) {
	t.Parallel()
	srv, dir := setup(t)
	ctx := context.Background()
	if err := dir.Put(ctx, "inputs/a", strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	s, err := controlblob.New(srv.URL, "wrong-"+key, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Get(ctx, "inputs/a")
	var se *controlblob.StatusError
	if !errors.As(err, &se) || se.Status != http.StatusUnauthorized {
		t.Errorf("Get with a wrong key: %v, want 401", err)
	}
	if strings.Contains(err.Error(), key) {
		t.Errorf("the error %q shows the key", err)
	}
	for _, base := range []string{"", "localhost:8080", "ftp://x", "http://user:pw@host"} {
		if _, err := controlblob.New(base, key, nil); err == nil {
			t.Errorf("New(%q) accepted", base)
		} else if strings.Contains(err.Error(), key) {
			t.Errorf("New(%q): error shows the key", base)
		}
	}
	if _, err := controlblob.New(srv.URL, "", nil); err == nil {
		t.Error("New without a key accepted")
	}
	// The control plane unreachable: a plain network error, not ErrNotFound.
	dead, _ := controlblob.New("http://127.0.0.1:1", key, nil)
	if _, err := dead.Stat(ctx, "inputs/a"); err == nil || errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Stat on a dead control plane: %v", err)
	}
}

package control

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/avatargen/musetalk/protocol"
)

func TestMetricsFamilies(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.submit(protocol.SubmitRequest{})
	b.submit(protocol.SubmitRequest{})
	b.heartbeat("w1", seedHeartbeat(protocol.WorkerIdle))
	b.claim("w1")
	b.sweep()
	status, data, hdr := b.do("GET", "/metrics", "", "", nil)
	if status != http.StatusOK || !strings.HasPrefix(hdr.Get("Content-Type"), "text/plain") {
		t.Fatalf("metrics: %d %q", status, hdr.Get("Content-Type"))
	}
	text := string(data)
	for _, want := range []string{
		`musetalk_jobs{state="queued"} 1`,
		`musetalk_jobs{state="running"} 1`,
		`musetalk_jobs{state="succeeded"} 0`,
		`musetalk_attempts{outcome="running"} 1`,
		`musetalk_workers{status="busy"} 1`,
		`musetalk_workers{status="offline"} 0`,
		`musetalk_claim_duration_seconds_bucket{result="claimed",le=`,
		`musetalk_claim_duration_seconds_count{result="claimed"} 1`,
		`musetalk_sweeper_interruptions_total{reason="worker_offline"} 0`,
		`musetalk_sweeper_runs_total{result="ok"} 1`,
		`musetalk_sweeper_workers_offline_total 0`,
		`musetalk_http_requests_total{code="201",method="POST",route="POST /v1/jobs"} 2`,
		`musetalk_http_request_duration_seconds_bucket{method="POST",route="POST /internal/main/workers/{id}/claim",le=`,
		`# TYPE musetalk_jobs gauge`,
		`go_goroutines `,
	} {
		if !strings.Contains(text, want) {
			t.Fatalf("metrics lack %q:\n%s", want, grepLines(text, "musetalk_"))
		}
	}
}

func TestHealthz(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if status, data, _ := b.do("GET", "/healthz", "", "", nil); status != http.StatusOK || !strings.Contains(string(data), "ok") {
		t.Fatalf("healthz: %d %s", status, data)
	}
	b.store.Close()
	status, data, _ := b.do("GET", "/healthz", "", "", nil)
	wantError(t, status, data, http.StatusServiceUnavailable, protocol.CodeUnavailable, "store")
	status, data, _ = b.do("GET", "/v1/jobs", testPublicKey, "", nil)
	wantError(t, status, data, http.StatusInternalServerError, protocol.CodeInternal)
	if strings.Contains(string(data), "sql") {
		t.Fatalf("an internal error leaked its detail: %s", data)
	}
	if err := b.srv.Sweep(context.Background()); err == nil {
		t.Fatal("Sweep on a closed store reported no error")
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) {
		c.BackoffBase = time.Second
		c.BackoffMax = 30 * time.Second
		c.RandSource = rand.NewPCG(7, 7)
	})
	seenLow, seenHigh := false, false
	for count := 1; count <= 10; count++ {
		d := min(time.Second<<(count-1), 30*time.Second)
		for i := 0; i < 200; i++ {
			got := b.srv.backoff(count)
			if got < d/2 || got > d {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v]", count, got, d/2, d)
			}
			seenLow = seenLow || got < d*3/5
			seenHigh = seenHigh || got > d*9/10
		}
	}
	if !seenLow || !seenHigh {
		t.Fatal("backoff shows no jitter")
	}
}

func TestInternalBlobPut(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.MaxOutputBytes = 1024 })
	job := b.submit(protocol.SubmitRequest{})
	b.heartbeat("w1", seedHeartbeat(protocol.WorkerIdle))
	a := b.claim("w1")
	// Over the limit, declared or streamed: 413 and nothing stored.
	big := bytes.Repeat([]byte("x"), 2048)
	status, data := b.putOutput(a.OutputKey, a.Attempt, a.Token, bytes.NewReader(big))
	wantError(t, status, data, http.StatusRequestEntityTooLarge, protocol.CodeTooLarge, "1024")
	status, data = b.putOutput(a.OutputKey, a.Attempt, a.Token, struct{ *bytes.Reader }{bytes.NewReader(big)})
	wantError(t, status, data, http.StatusRequestEntityTooLarge, protocol.CodeTooLarge, "1024")
	if _, err := b.blobs.Stat(context.Background(), a.OutputKey); err == nil {
		t.Fatal("an oversized upload was stored")
	}
	// An attempt that was never handed out cannot be uploaded.
	status, data = b.putOutput("outputs/"+job.ID+"/2.mp4", 2, a.Token, strings.NewReader("x"))
	wantError(t, status, data, http.StatusConflict, protocol.CodeStaleToken, "attempt 2")
	// An empty output cannot complete the job (it names a size of 0, or
	// a positive size the store does not hold).
	b.upload(a, nil)
	status, data = b.complete(a)
	wantError(t, status, data, http.StatusBadRequest, protocol.CodeBadRequest, "size")
	req := b.completeRequest(a)
	req.Size = 1
	status, data = b.attemptCall(protocol.CompleteRoute, a.JobID, req)
	wantError(t, status, data, http.StatusConflict, protocol.CodeOutputMismatch, "empty")
	b.upload(a, []byte("fine"))
	if status, data := b.complete(a); status != http.StatusOK {
		t.Fatalf("complete: %d %s", status, data)
	}
}

package control

import (
	"net/http"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/protocol"
)

func TestRetry(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.heartbeat("w1", seedHeartbeat(protocol.WorkerIdle))
	job := b.submit(protocol.SubmitRequest{})
	a := b.claim("w1")
	status, data := b.attemptCall(protocol.FailRoute, a.JobID,
		protocol.FailRequest{Attempt: a.Attempt, Token: a.Token, Error: "broken input", Retryable: false})
	if status != http.StatusOK {
		t.Fatalf("fail: %d %s", status, data)
	}
	if got := b.getJob(job.ID); got.State != protocol.JobFailed || got.Failures != 1 {
		t.Fatalf("before retry: %s, %d failures", got.State, got.Failures)
	}

	var v protocol.JobView
	status, data = b.call("POST", protocol.Path(protocol.RetryJobRoute, job.ID), testPublicKey, nil, &v)
	if status != http.StatusOK || v.State != protocol.JobQueued || v.Failures != 0 || v.Error != "" || v.FinishedAt != nil {
		t.Fatalf("retry: %d %s", status, data)
	}
	// The next claim is a new attempt; the history keeps the failed one.
	next := b.claim("w1")
	if next == nil || next.JobID != job.ID || next.Attempt != 2 {
		t.Fatalf("claim after retry: %+v", next)
	}
	got := b.getJob(job.ID)
	if len(got.Attempts) != 2 || got.Attempts[0].Outcome != protocol.OutcomeFailed {
		t.Fatalf("attempts after retry: %+v", got.Attempts)
	}
	if !strings.Contains(b.logs.String(), "job queued again by an operator") {
		t.Error("the retry was not logged")
	}

	// Only a failed job can be retried.
	status, data = b.call("POST", protocol.Path(protocol.RetryJobRoute, job.ID), testPublicKey, nil, nil)
	wantError(t, status, data, http.StatusConflict, protocol.CodeConflict, job.ID, "running", "only a failed job")
	status, data = b.call("POST", protocol.Path(protocol.RetryJobRoute, "nope"), testPublicKey, nil, nil)
	wantError(t, status, data, http.StatusNotFound, protocol.CodeNotFound, "nope")
}

// TestDashboardIsServed: the control plane serves the dashboard under
// /dashboard/ with its own login, beside the APIs.
func TestDashboardIsServed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for path, want := range map[string]int{
		"/dashboard":                   http.StatusSeeOther,
		"/dashboard/login":             http.StatusOK,
		"/dashboard/fleet":             http.StatusSeeOther, // to the login page
		"/dashboard/api/fleet":         http.StatusUnauthorized,
		"/dashboard/static/app.js":     http.StatusOK,
		"/dashboard/static/app.css":    http.StatusOK,
		"/dashboard/no-such-page":      http.StatusNotFound,
		"/dashboard/static/missing.js": http.StatusNotFound,
	} {
		req, _ := http.NewRequest("GET", b.ts.URL+path, nil)
		resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
}

package control

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/avatargen/musetalk/protocol"
)

func TestSeedHeartbeatRegistersWorker(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// The deployed fleet's exact body, byte for byte, and nothing else.
	const seed = `{
  "status": "idle",
  "provider": "salad",
  "gpu_class": "RTX_3060", 
  "worker_type": "main"
}`
	req, _ := http.NewRequest("POST", b.ts.URL+"/internal/main/workers/salad-abc123/heartbeat", strings.NewReader(seed))
	req.Header.Set("Authorization", "Bearer "+testInternalKey)
	resp, err := b.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("seed heartbeat: status %d", resp.StatusCode)
	}
	var list protocol.WorkerList
	if status, data := b.call("GET", "/v1/workers", testPublicKey, nil, &list); status != http.StatusOK {
		t.Fatalf("list workers: %d %s", status, data)
	}
	if len(list.Workers) != 1 {
		t.Fatalf("workers: %+v", list.Workers)
	}
	w := list.Workers[0]
	if w.ID != "salad-abc123" || w.Status != protocol.WorkerIdle || w.Provider != "salad" ||
		w.GPUClass != "RTX_3060" || w.WorkerType != protocol.WorkerMain || !w.LastSeen.Equal(b.clock.Now()) {
		t.Fatalf("registered worker: %+v", w)
	}
	// The registered worker can claim with an empty body.
	if a := b.claim("salad-abc123"); a != nil {
		t.Fatalf("claim with no jobs: %+v", a)
	}
}

// Heartbeats ignore fields they do not know, so a fleet running a newer (or
// older) worker image never loses its registration over a field; the known
// fields are still checked.
func TestHeartbeatIgnoresUnknownFields(t *testing.T) {
	t.Parallel()
	b := setup(t)
	body := `{"status":"busy","provider":"vast","gpu_class":"RTX_4090","worker_type":"transient","gpu_temp_c":71,"extra":{"a":1}}`
	req, _ := http.NewRequest("POST", b.ts.URL+"/internal/main/workers/vast-1/heartbeat", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testInternalKey)
	resp, err := b.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("heartbeat with extra fields: status %d", resp.StatusCode)
	}
	var list protocol.WorkerList
	b.call("GET", "/v1/workers", testPublicKey, nil, &list)
	if len(list.Workers) != 1 || list.Workers[0].Status != protocol.WorkerBusy || list.Workers[0].WorkerType != protocol.WorkerTransient {
		t.Fatalf("workers: %+v", list.Workers)
	}
}

func TestClaimAssignment(t *testing.T) {
	t.Parallel()
	b := setup(t)
	job := b.submit(protocol.SubmitRequest{Params: protocol.JobParams{BatchSize: 8, Version: "v15"}})
	b.heartbeat("w1", seedHeartbeat(protocol.WorkerIdle))
	a := b.claim("w1")
	if a == nil {
		t.Fatal("no assignment")
	}
	if a.JobID != job.ID || a.Attempt != 1 || len(a.Token) != 64 || a.OutputKey != "outputs/"+job.ID+"/1.mp4" ||
		a.Inputs.AvatarKey != "uploads/avatar.mp4" || a.Inputs.AudioKey != "uploads/audio.wav" ||
		a.Params.BatchSize != 8 || !a.LeaseExpiresAt.Equal(b.clock.Now().Add(3*testInterval)) {
		t.Fatalf("assignment: %+v", a)
	}
	if strings.Trim(a.Token, "0123456789abcdef") != "" {
		t.Fatalf("token %q is not hex", a.Token)
	}
	b.heartbeat("w2", seedHeartbeat(protocol.WorkerIdle))
	if b.claim("w2") != nil {
		t.Fatal("second claim got the same job")
	}
	v := b.getJob(job.ID)
	if v.State != protocol.JobRunning || v.WorkerID != "w1" || len(v.Attempts) != 1 || v.Attempts[0].Outcome != protocol.OutcomeRunning {
		t.Fatalf("job after claim: %+v", v)
	}
	if strings.Contains(string(mustJSON(t, v)), a.Token) {
		t.Fatal("the public job view shows the fencing token")
	}
}

func TestClaimRegistersUnknownWorker(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.submit(protocol.SubmitRequest{})
	// No heartbeat and no worker_type: rejected, naming the field.
	status, data := b.call("POST", protocol.Path(protocol.ClaimRoute, "fresh"), testInternalKey, nil, nil)
	wantError(t, status, data, http.StatusBadRequest, protocol.CodeBadRequest, "worker_type")
	var a protocol.Assignment
	status, data = b.call("POST", protocol.Path(protocol.ClaimRoute, "fresh"), testInternalKey,
		protocol.ClaimRequest{WorkerType: protocol.WorkerTransient, Provider: "vast", GPUClass: "RTX_4090"}, &a)
	if status != http.StatusOK || a.Attempt != 1 {
		t.Fatalf("claim with worker_type: %d %s", status, data)
	}
	var list protocol.WorkerList
	b.call("GET", "/v1/workers?worker_type=transient", testPublicKey, nil, &list)
	if len(list.Workers) != 1 || list.Workers[0].ID != "fresh" || list.Workers[0].Status != protocol.WorkerBusy ||
		list.Workers[0].Provider != "vast" || list.Workers[0].JobID != a.JobID {
		t.Fatalf("worker registered by claim: %+v", list.Workers)
	}
}

func TestStaleTokenChangesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	job := b.submit(protocol.SubmitRequest{})
	b.heartbeat("w1", seedHeartbeat(protocol.WorkerIdle))
	b.heartbeat("w2", seedHeartbeat(protocol.WorkerIdle))
	old := b.claim("w1")
	// w1 goes silent; its lease lapses and the sweeper takes the attempt.
	b.clock.Advance(3*testInterval + 1e9)
	b.heartbeat("w2", seedHeartbeat(protocol.WorkerIdle))
	b.sweep()
	b.clock.Advance(DefaultBackoffMax)
	b.heartbeat("w2", seedHeartbeat(protocol.WorkerIdle))
	cur := b.claim("w2")
	if cur == nil || cur.JobID != job.ID || cur.Attempt != 2 {
		t.Fatalf("second attempt: %+v", cur)
	}
	// The old worker wakes up and tries to upload its output to its own
	// key: the upload is fenced like the attempt calls.
	status, data := b.putOutput(old.OutputKey, old.Attempt, old.Token, strings.NewReader("stale output"))
	wantError(t, status, data, http.StatusConflict, protocol.CodeStaleToken, "attempt 1")
	b.setUploaded(old.OutputKey, []byte("stale output"))
	before := b.getJob(job.ID)

	calls := []struct {
		name  string
		route string
		body  any
	}{
		{"progress", protocol.ProgressRoute, protocol.ProgressRequest{Attempt: old.Attempt, Token: old.Token, Progress: protocol.Progress{Stage: "unet", FramesDone: 1}}},
		{"complete", protocol.CompleteRoute, b.completeRequest(old)},
		{"fail", protocol.FailRoute, protocol.FailRequest{Attempt: old.Attempt, Token: old.Token, Error: "boom"}},
		{"release", protocol.ReleaseRoute, protocol.ReleaseRequest{Attempt: old.Attempt, Token: old.Token}},
		// The current attempt's number with the old token.
		{"complete current attempt, old token", protocol.CompleteRoute, withToken(b.completeRequest(cur), old.Token)},
		{"fail current attempt, old token", protocol.FailRoute, protocol.FailRequest{Attempt: cur.Attempt, Token: old.Token, Error: "boom"}},
		{"progress current attempt, old token", protocol.ProgressRoute, protocol.ProgressRequest{Attempt: cur.Attempt, Token: old.Token}},
		{"release current attempt, old token", protocol.ReleaseRoute, protocol.ReleaseRequest{Attempt: cur.Attempt, Token: old.Token}},
	}
	for _, c := range calls {
		status, data := b.attemptCall(c.route, job.ID, c.body)
		if status != http.StatusConflict || errorBody(t, data).Code != protocol.CodeStaleToken {
			t.Fatalf("%s with a stale token: %d %s", c.name, status, data)
		}
	}
	after := b.getJob(job.ID)
	if after.State != protocol.JobRunning || after.Attempt != 2 || after.WorkerID != "w2" || after.Progress != nil ||
		after.Failures != before.Failures || after.Interruptions != before.Interruptions || after.OutputKey != "" ||
		!after.UpdatedAt.Equal(before.UpdatedAt) || len(after.Attempts) != 2 {
		t.Fatalf("stale calls changed the job:\nbefore %+v\nafter  %+v", before, after)
	}

	// The current attempt must name its own output key, and it must exist.
	wrongKey := b.completeRequest(cur)
	wrongKey.OutputKey = old.OutputKey
	status, data = b.attemptCall(protocol.CompleteRoute, job.ID, wrongKey)
	wantError(t, status, data, http.StatusBadRequest, protocol.CodeBadRequest, "output_key", cur.OutputKey)
	status, data = b.complete(cur)
	wantError(t, status, data, http.StatusConflict, protocol.CodeOutputMismatch, "output_key", "upload")
	if v := b.getJob(job.ID); v.State != protocol.JobRunning {
		t.Fatalf("complete without an output changed the job: %+v", v)
	}
	b.upload(cur, []byte("current output"))
	if status, data := b.complete(cur); status != http.StatusOK {
		t.Fatalf("complete: %d %s", status, data)
	}
	// A retried complete of the same attempt is answered again.
	if status, data := b.complete(cur); status != http.StatusOK {
		t.Fatalf("retried complete: %d %s", status, data)
	}
	// Only the completed attempt's output is published; the stale one
	// still cannot complete, and the published output cannot be replaced.
	if status, data := b.attemptCall(protocol.CompleteRoute, job.ID, b.completeRequest(old)); status != http.StatusConflict {
		t.Fatalf("stale complete after success: %d %s", status, data)
	}
	status, data = b.putOutput(cur.OutputKey, cur.Attempt, cur.Token, strings.NewReader("overwrite"))
	wantError(t, status, data, http.StatusConflict, protocol.CodeConflict, "published")
	status, body, _ := b.do("GET", protocol.Path(protocol.JobResultRoute, job.ID), testPublicKey, "", nil)
	if status != http.StatusOK || string(body) != "current output" {
		t.Fatalf("result: %d %q", status, body)
	}
}

func TestFailureBudgetKeepsAttempts(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.MaxFailures = 3 })
	job := b.submit(protocol.SubmitRequest{})
	b.heartbeat("w1", seedHeartbeat(protocol.WorkerIdle))
	for i := 1; i <= 3; i++ {
		a := b.claim("w1")
		if a == nil || a.Attempt != i {
			t.Fatalf("claim %d: %+v", i, a)
		}
		status, data := b.attemptCall(protocol.FailRoute, job.ID, protocol.FailRequest{
			Attempt: a.Attempt, Token: a.Token, Error: fmt.Sprintf("cuda error %d", i), Retryable: true})
		if status != http.StatusOK {
			t.Fatalf("fail %d: %d %s", i, status, data)
		}
		if i < 3 {
			// Backoff: not claimable at once, claimable after BackoffMax.
			if a := b.claim("w1"); a != nil {
				t.Fatalf("claimed during backoff: %+v", a)
			}
			b.clock.Advance(DefaultBackoffMax)
			b.heartbeat("w1", seedHeartbeat(protocol.WorkerIdle))
		}
	}
	v := b.getJob(job.ID)
	if v.State != protocol.JobFailed || v.Failures != 3 || !strings.Contains(v.Error, "cuda error 3") ||
		!strings.Contains(v.Error, "budget") || v.FinishedAt == nil {
		t.Fatalf("job after 3 failures: %+v", v)
	}
	if len(v.Attempts) != 3 {
		t.Fatalf("attempts kept: %+v", v.Attempts)
	}
	for i, at := range v.Attempts {
		if at.Attempt != i+1 || at.Outcome != protocol.OutcomeFailed || at.Error != fmt.Sprintf("cuda error %d", i+1) || at.EndedAt == nil {
			t.Fatalf("attempt %d: %+v", i+1, at)
		}
	}
	if a := b.claim("w1"); a != nil {
		t.Fatalf("a failed job was claimed: %+v", a)
	}

	// A permanent failure ends the job at once.
	job2 := b.submit(protocol.SubmitRequest{})
	a := b.claim("w1")
	if status, data := b.attemptCall(protocol.FailRoute, job2.ID, protocol.FailRequest{Attempt: a.Attempt, Token: a.Token, Error: "bad avatar"}); status != http.StatusOK {
		t.Fatalf("permanent fail: %d %s", status, data)
	}
	if v := b.getJob(job2.ID); v.State != protocol.JobFailed || !strings.Contains(v.Error, "bad avatar") || v.Failures != 1 {
		t.Fatalf("job after a permanent failure: %+v", v)
	}
}

func TestProgressAndRelease(t *testing.T) {
	t.Parallel()
	b := setup(t)
	job := b.submit(protocol.SubmitRequest{})
	b.heartbeat("w1", seedHeartbeat(protocol.WorkerIdle))
	a := b.claim("w1")
	b.clock.Advance(testInterval)
	var ack protocol.AttemptAck
	status, data := b.call("POST", protocol.Path(protocol.ProgressRoute, job.ID), testInternalKey,
		protocol.ProgressRequest{Attempt: a.Attempt, Token: a.Token, Progress: protocol.Progress{Stage: "unet", FramesDone: 25, FramesTotal: 100}}, &ack)
	if status != http.StatusOK || ack.State != protocol.JobRunning || ack.LeaseExpiresAt == nil ||
		!ack.LeaseExpiresAt.Equal(b.clock.Now().Add(3*testInterval)) {
		t.Fatalf("progress: %d %s", status, data)
	}
	if v := b.getJob(job.ID); v.Progress == nil || v.Progress.FramesDone != 25 || v.ProgressFraction != 0.25 {
		t.Fatalf("progress not shown: %+v", v)
	}
	// Bad progress is rejected.
	status, data = b.attemptCall(protocol.ProgressRoute, job.ID,
		protocol.ProgressRequest{Attempt: a.Attempt, Token: a.Token, Progress: protocol.Progress{FramesDone: 5, FramesTotal: 2}})
	wantError(t, status, data, http.StatusBadRequest, protocol.CodeBadRequest, "frames_done")

	status, data = b.attemptCall(protocol.ReleaseRoute, job.ID, protocol.ReleaseRequest{Attempt: a.Attempt, Token: a.Token, Reason: "draining"})
	if status != http.StatusOK {
		t.Fatalf("release: %d %s", status, data)
	}
	v := b.getJob(job.ID)
	if v.State != protocol.JobQueued || v.Interruptions != 1 || v.Attempts[0].Outcome != protocol.OutcomeReleased {
		t.Fatalf("after release: %+v", v)
	}
}

func TestCancelReachesWorkerInNextHeartbeat(t *testing.T) {
	t.Parallel()
	b := setup(t)
	job := b.submit(protocol.SubmitRequest{})
	b.heartbeat("w1", seedHeartbeat(protocol.WorkerIdle))
	a := b.claim("w1")
	if resp := b.heartbeat("w1", busy(a)); resp.Cancel != nil {
		t.Fatalf("cancel before cancelling: %+v", resp.Cancel)
	}
	var v protocol.JobView
	status, data := b.call("POST", protocol.Path(protocol.CancelJobRoute, job.ID), testPublicKey, nil, &v)
	if status != http.StatusOK || v.State != protocol.JobCancelled {
		t.Fatalf("cancel: %d %s", status, data)
	}
	resp := b.heartbeat("w1", busy(a))
	if resp.Cancel == nil || resp.Cancel.JobID != job.ID || resp.Cancel.Attempt != a.Attempt || !strings.Contains(resp.Cancel.Reason, "cancel") {
		t.Fatalf("heartbeat after cancel: %+v", resp)
	}
	if resp.LeaseExpiresAt != nil {
		t.Fatalf("a cancelled attempt's lease was extended: %v", resp.LeaseExpiresAt)
	}
	// Its upload is refused (fenced), and so is its complete.
	status, data = b.putOutput(a.OutputKey, a.Attempt, a.Token, strings.NewReader("late"))
	wantError(t, status, data, http.StatusConflict, protocol.CodeStaleToken)
	if status, data := b.complete(a); status != http.StatusConflict {
		t.Fatalf("complete of a cancelled job: %d %s", status, data)
	}
	// Cancelling again answers the same; a succeeded job cannot be cancelled.
	if status, _ := b.call("POST", protocol.Path(protocol.CancelJobRoute, job.ID), testPublicKey, nil, nil); status != http.StatusOK {
		t.Fatalf("second cancel: %d", status)
	}
	done := b.submit(protocol.SubmitRequest{})
	a2 := b.claim("w1")
	b.upload(a2, []byte("out"))
	if status, data := b.complete(a2); status != http.StatusOK {
		t.Fatalf("complete: %d %s", status, data)
	}
	status, data = b.call("POST", protocol.Path(protocol.CancelJobRoute, done.ID), testPublicKey, nil, nil)
	wantError(t, status, data, http.StatusConflict, protocol.CodeConflict, "succeeded")
	// A queued job cancelled is never claimed.
	queued := b.submit(protocol.SubmitRequest{})
	b.call("POST", protocol.Path(protocol.CancelJobRoute, queued.ID), testPublicKey, nil, nil)
	if a := b.claim("w1"); a != nil {
		t.Fatalf("claimed a cancelled job: %+v", a)
	}
}

func TestDrainStopsClaims(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.submit(protocol.SubmitRequest{})
	b.heartbeat("w1", seedHeartbeat(protocol.WorkerIdle))
	var wv protocol.WorkerView
	status, data := b.call("POST", protocol.Path(protocol.DrainWorkerRoute, "w1"), testPublicKey, nil, &wv)
	if status != http.StatusOK || !wv.DrainRequest {
		t.Fatalf("drain: %d %s", status, data)
	}
	if a := b.claim("w1"); a != nil {
		t.Fatalf("a drained worker claimed: %+v", a)
	}
	if resp := b.heartbeat("w1", seedHeartbeat(protocol.WorkerIdle)); !resp.Drain {
		t.Fatalf("heartbeat answer does not say drain: %+v", resp)
	}
	var uv protocol.WorkerView
	status, _ = b.call("POST", protocol.Path(protocol.UndrainWorkerRoute, "w1"), testPublicKey, nil, &uv)
	if status != http.StatusOK || uv.DrainRequest || uv.ID != "w1" {
		t.Fatalf("undrain: %d %+v", status, uv)
	}
	if resp := b.heartbeat("w1", seedHeartbeat(protocol.WorkerIdle)); resp.Drain {
		t.Fatalf("heartbeat answer still says drain: %+v", resp)
	}
	// A worker that reports itself draining gets nothing either.
	b.heartbeat("w1", seedHeartbeat(protocol.WorkerDraining))
	if a := b.claim("w1"); a != nil {
		t.Fatalf("a draining worker claimed: %+v", a)
	}
	b.heartbeat("w1", seedHeartbeat(protocol.WorkerIdle))
	if a := b.claim("w1"); a == nil {
		t.Fatal("claim after undrain got nothing")
	}
	status, data = b.call("POST", protocol.Path(protocol.DrainWorkerRoute, "nobody"), testPublicKey, nil, nil)
	wantError(t, status, data, http.StatusNotFound, protocol.CodeNotFound, "nobody")
}

func TestClaimOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	low := b.submit(protocol.SubmitRequest{Priority: -5})
	high := b.submit(protocol.SubmitRequest{Priority: 50})
	mid := b.submit(protocol.SubmitRequest{Priority: 10})
	pinned := b.submit(protocol.SubmitRequest{Priority: 100, WorkerType: protocol.WorkerTransient})
	plain := b.submit(protocol.SubmitRequest{Priority: -5, AvatarID: "face-a"})
	cachedOne := b.submit(protocol.SubmitRequest{Priority: -5, AvatarID: "face-b"})

	hb := seedHeartbeat(protocol.WorkerIdle)
	hb.CachedAvatars = []string{"face-b"}
	b.heartbeat("w1", hb)
	var got []string
	for {
		a := b.claim("w1")
		if a == nil {
			break
		}
		got = append(got, a.JobID)
		b.upload(a, []byte("x"))
		if status, data := b.complete(a); status != http.StatusOK {
			t.Fatalf("complete: %d %s", status, data)
		}
	}
	// Priority first; among equals the worker's cached avatar first, then
	// submission order. The transient-only job is not for a main worker.
	want := []string{high.ID, mid.ID, cachedOne.ID, low.ID, plain.ID}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("claim order\n got  %v\n want %v", got, want)
	}
	b.heartbeat("v1", protocol.Heartbeat{Status: protocol.WorkerIdle, Provider: "vast", GPUClass: "RTX_4090", WorkerType: protocol.WorkerTransient})
	if a := b.claim("v1"); a == nil || a.JobID != pinned.ID {
		t.Fatalf("transient worker's claim: %+v", a)
	}
	// Cached avatars sent in the claim body count too.
	x := b.submit(protocol.SubmitRequest{AvatarID: "face-x"})
	y := b.submit(protocol.SubmitRequest{AvatarID: "face-y"})
	var a protocol.Assignment
	status, data := b.call("POST", protocol.Path(protocol.ClaimRoute, "w2"), testInternalKey,
		protocol.ClaimRequest{WorkerType: protocol.WorkerMain, CachedAvatars: []string{"face-y"}}, &a)
	if status != http.StatusOK || a.JobID != y.ID || a.AvatarID != "face-y" {
		t.Fatalf("claim with cached avatars in the body: %d %s (x=%s)", status, data, x.ID)
	}
}

// TestConcurrentClaimsOverHTTP runs 20 workers over HTTP against 200 jobs:
// each job is claimed exactly once and every job ends succeeded.
func TestConcurrentClaimsOverHTTP(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const jobs, workers = 200, 20
	want := map[string]bool{}
	for i := 0; i < jobs; i++ {
		want[b.submit(protocol.SubmitRequest{Priority: i % 7}).ID] = true
	}
	for w := 0; w < workers; w++ {
		b.heartbeat(fmt.Sprintf("cw%d", w), seedHeartbeat(protocol.WorkerIdle))
	}
	var (
		mu      sync.Mutex
		claims  = map[string]int{}
		wg      sync.WaitGroup
		errs    = make(chan error, workers)
		client  = b.ts.Client()
		authHdr = "Bearer " + testInternalKey
	)
	post := func(path string, body []byte) (int, []byte, error) {
		req, err := http.NewRequest("POST", b.ts.URL+path, bytes.NewReader(body))
		if err != nil {
			return 0, nil, err
		}
		req.Header.Set("Authorization", authHdr)
		resp, err := client.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		var buf bytes.Buffer
		_, err = buf.ReadFrom(resp.Body)
		return resp.StatusCode, buf.Bytes(), err
	}
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("cw%d", w)
			for {
				status, data, err := post(protocol.Path(protocol.ClaimRoute, id), nil)
				if err != nil {
					errs <- err
					return
				}
				if status == http.StatusNoContent {
					return
				}
				var a protocol.Assignment
				if status != http.StatusOK || json.Unmarshal(data, &a) != nil {
					errs <- fmt.Errorf("claim by %s: %d %s", id, status, data)
					return
				}
				mu.Lock()
				claims[a.JobID]++
				mu.Unlock()
				req, _ := http.NewRequest("PUT", b.ts.URL+protocol.InternalBlobPath+a.OutputKey, strings.NewReader("mp4"))
				req.Header.Set("Authorization", authHdr)
				req.Header.Set(protocol.AttemptHeader, strconv.Itoa(a.Attempt))
				req.Header.Set(protocol.TokenHeader, a.Token)
				resp, err := client.Do(req)
				if err != nil {
					errs <- err
					return
				}
				resp.Body.Close()
				sha, size := digest([]byte("mp4"))
				body, _ := json.Marshal(protocol.CompleteRequest{Attempt: a.Attempt, Token: a.Token, OutputKey: a.OutputKey, SHA1: sha, Size: size})
				if status, data, err := post(protocol.Path(protocol.CompleteRoute, a.JobID), body); err != nil || status != http.StatusOK {
					errs <- fmt.Errorf("complete %s: %d %s %v", a.JobID, status, data, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(claims) != jobs {
		t.Fatalf("%d distinct jobs claimed, want %d", len(claims), jobs)
	}
	for id, n := range claims {
		if !want[id] || n != 1 {
			t.Fatalf("job %s claimed %d times (known %v)", id, n, want[id])
		}
	}
	var list protocol.JobList
	b.call("GET", "/v1/jobs?state=succeeded&limit=1000", testPublicKey, nil, &list)
	if len(list.Jobs) != jobs {
		t.Fatalf("%d jobs succeeded, want %d", len(list.Jobs), jobs)
	}
	for _, j := range list.Jobs {
		if j.Attempt != 1 {
			t.Fatalf("job %s took %d attempts", j.ID, j.Attempt)
		}
	}
}

func TestTruncate(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"abcdef", 3, "abc"},
		{"ab€", 4, "ab"}, // € is 3 bytes: never cut inside it
		{"ab€", 5, "ab€"},
	} {
		if got := truncate(c.in, c.n); got != c.want {
			t.Errorf("truncate(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}

// TestClaimIsASignOfLife: a worker back from a gap long enough to be
// marked offline claims before its next heartbeat; the next sweep must not
// take its new attempt.
func TestClaimIsASignOfLife(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.heartbeat("w1", seedHeartbeat(protocol.WorkerIdle))
	b.clock.Advance(4 * testInterval)
	b.sweep()
	if w := b.worker("w1"); w.Status != protocol.WorkerOffline {
		t.Fatalf("w1 after a gap: %s", w.Status)
	}
	job := b.submit(protocol.SubmitRequest{})
	a := b.claim("w1")
	if a == nil || a.JobID != job.ID {
		t.Fatalf("claim after the gap: %+v", a)
	}
	b.clock.Advance(time.Second)
	b.sweep()
	if v := b.getJob(job.ID); v.State != protocol.JobRunning || v.Attempt != 1 {
		t.Fatalf("the new attempt was swept: %+v", v)
	}
	if w := b.worker("w1"); w.Status != protocol.WorkerBusy || w.Provider != "salad" {
		t.Fatalf("w1 after its claim: %+v", w)
	}
}

// withToken is r with another token.
func withToken(r protocol.CompleteRequest, token string) protocol.CompleteRequest {
	r.Token = token
	return r
}

package control

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/protocol"
)

// staleAndCurrent runs a job's first attempt on w1 until its lease lapses
// and the sweeper hands the job to w2: it returns the stale assignment and
// the current one.
func (b *testBundle) staleAndCurrent() (old, cur *protocol.Assignment) {
	b.t.Helper()
	job := b.submit(protocol.SubmitRequest{})
	b.heartbeat("w1", seedHeartbeat(protocol.WorkerIdle))
	old = b.claim("w1")
	b.clock.Advance(3*testInterval + 1e9)
	b.heartbeat("w2", seedHeartbeat(protocol.WorkerIdle))
	b.sweep()
	b.clock.Advance(DefaultBackoffMax)
	b.heartbeat("w2", seedHeartbeat(protocol.WorkerIdle))
	cur = b.claim("w2")
	if old == nil || cur == nil || cur.JobID != job.ID || cur.Attempt != 2 {
		b.t.Fatalf("attempts: %+v then %+v", old, cur)
	}
	return old, cur
}

// The fault: a worker whose lease expired overwrote the current
// attempt's object after that attempt uploaded it, and the current
// attempt's complete published the stale bytes. Uploads are fenced now:
// every way the stale worker can try is refused, nothing in the store
// changes, and the published result is the current attempt's.
func TestStaleUploadCannotReplaceCurrentOutput(t *testing.T) {
	t.Parallel()
	b := setup(t)
	old, cur := b.staleAndCurrent()
	current := []byte("the current attempt's output")
	b.upload(cur, current)

	garbage := "22 bytes of garbage!!!"
	for _, c := range []struct {
		name       string
		key        string
		attempt    int
		token      string
		wantStatus int
		wantCode   string
		names      []string
	}{
		{"no fence", cur.OutputKey, 0, "", 400, protocol.CodeBadRequest, []string{protocol.AttemptHeader}},
		{"no token", cur.OutputKey, cur.Attempt, "", 400, protocol.CodeBadRequest, []string{protocol.TokenHeader}},
		{"bad attempt header", cur.OutputKey, -1, old.Token, 400, protocol.CodeBadRequest, []string{protocol.AttemptHeader}},
		{"stale attempt on the current key", cur.OutputKey, old.Attempt, old.Token, 400, protocol.CodeBadRequest, []string{"attempt 1", old.OutputKey}},
		{"current attempt, stale token", cur.OutputKey, cur.Attempt, old.Token, 409, protocol.CodeStaleToken, []string{"attempt 2"}},
		{"stale attempt on its own key", old.OutputKey, old.Attempt, old.Token, 409, protocol.CodeStaleToken, []string{"attempt 1"}},
		{"attempt not handed out", strings.Replace(cur.OutputKey, "/2.mp4", "/3.mp4", 1), 3, cur.Token, 409, protocol.CodeStaleToken, []string{"attempt 3"}},
		{"unknown job", "outputs/nojob/1.mp4", 1, cur.Token, 404, protocol.CodeNotFound, []string{"nojob"}},
	} {
		var status int
		var data []byte
		if c.attempt == -1 {
			status, data = b.putOutputHeader(c.key, "first", c.token)
		} else {
			status, data = b.putOutput(c.key, c.attempt, c.token, strings.NewReader(garbage))
		}
		if status != c.wantStatus {
			t.Errorf("%s: PUT %s: %d %s, want %d", c.name, c.key, status, data, c.wantStatus)
			continue
		}
		wantError(t, status, data, c.wantStatus, c.wantCode, c.names...)
	}
	if _, err := b.blobs.Stat(context.Background(), old.OutputKey); err == nil {
		t.Errorf("the stale attempt's upload to its own key was stored")
	}
	if status, data := b.complete(cur); status != http.StatusOK {
		t.Fatalf("complete of the current attempt: %d %s", status, data)
	}
	status, got, _ := b.do("GET", protocol.Path(protocol.JobResultRoute, cur.JobID), testPublicKey, "", nil)
	if status != http.StatusOK || !bytes.Equal(got, current) {
		t.Fatalf("published result: %d %q, want the current attempt's %q", status, got, current)
	}
}

// putOutputHeader PUTs to key with a raw attempt header value.
func (b *testBundle) putOutputHeader(key, attemptHeader, token string) (int, []byte) {
	b.t.Helper()
	req, _ := http.NewRequest("PUT", b.ts.URL+protocol.InternalBlobPath+key, strings.NewReader("x"))
	req.Header.Set("Authorization", "Bearer "+testInternalKey)
	req.Header.Set(protocol.AttemptHeader, attemptHeader)
	req.Header.Set(protocol.TokenHeader, token)
	resp, err := b.ts.Client().Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.Bytes()
}

// Workers that write to the object store directly (B2) cannot be fenced
// there: complete names the SHA-1 and size of what the attempt uploaded,
// and the control plane publishes the object only if the store holds
// exactly that. Here a stale writer replaces the current attempt's object
// in the store itself, after that attempt uploaded it.
func TestCompleteChecksTheObjectsSHA1AndSize(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, cur := b.staleAndCurrent()
	current := []byte("the current attempt's output")
	ctx := context.Background()
	if err := b.blobs.Put(ctx, cur.OutputKey, bytes.NewReader(current), int64(len(current))); err != nil {
		t.Fatal(err)
	}
	b.setUploaded(cur.OutputKey, current)
	good := b.completeRequest(cur)

	garbage := []byte("22 bytes of garbage!!!")
	if err := b.blobs.Put(ctx, cur.OutputKey, bytes.NewReader(garbage), int64(len(garbage))); err != nil {
		t.Fatal(err)
	}
	status, data := b.attemptCall(protocol.CompleteRoute, cur.JobID, good)
	wantError(t, status, data, http.StatusConflict, protocol.CodeOutputMismatch, "SHA-1", good.SHA1, "22 bytes", "upload it again")
	if v := b.getJob(cur.JobID); v.State != protocol.JobRunning || v.OutputKey != "" {
		t.Fatalf("a mismatched complete changed the job: %s %q", v.State, v.OutputKey)
	}
	if !strings.Contains(b.logs.String(), "level=WARN") || !strings.Contains(b.logs.String(), "not published") {
		t.Errorf("the refused output is not logged as a warning:\n%s", b.logs.String())
	}

	// Same bytes as claimed but another size claimed, and the reverse.
	wrongSize := good
	wrongSize.Size++
	wrongSHA := good
	wrongSHA.SHA1 = strings.Repeat("0", 40)
	if err := b.blobs.Put(ctx, cur.OutputKey, bytes.NewReader(current), int64(len(current))); err != nil {
		t.Fatal(err)
	}
	for _, req := range []protocol.CompleteRequest{wrongSize, wrongSHA} {
		status, data := b.attemptCall(protocol.CompleteRoute, cur.JobID, req)
		wantError(t, status, data, http.StatusConflict, protocol.CodeOutputMismatch, "nothing was published")
	}
	// Malformed or missing digests are bad requests.
	for name, req := range map[string]protocol.CompleteRequest{
		"no sha1":        withSHA1(good, ""),
		"upper-case":     withSHA1(good, strings.ToUpper(good.SHA1)),
		"short":          withSHA1(good, good.SHA1[:39]),
		"no size":        withSize(good, 0),
		"negative size":  withSize(good, -5),
		"not hex digits": withSHA1(good, strings.Repeat("g", 40)),
	} {
		status, data := b.attemptCall(protocol.CompleteRoute, cur.JobID, req)
		if status != http.StatusBadRequest {
			t.Errorf("%s: %d %s, want 400", name, status, data)
		}
	}

	// The worker uploads again (here: the store holds its bytes again) and
	// completes: published, and the result is its bytes.
	status, data = b.attemptCall(protocol.CompleteRoute, cur.JobID, good)
	if status != http.StatusOK {
		t.Fatalf("complete: %d %s", status, data)
	}
	status, got, _ := b.do("GET", protocol.Path(protocol.JobResultRoute, cur.JobID), testPublicKey, "", nil)
	if status != http.StatusOK || !bytes.Equal(got, current) {
		t.Fatalf("published result: %d %q", status, got)
	}
}

func withSHA1(r protocol.CompleteRequest, sha string) protocol.CompleteRequest {
	r.SHA1 = sha
	return r
}

func withSize(r protocol.CompleteRequest, n int64) protocol.CompleteRequest {
	r.Size = n
	return r
}

package control

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/avatargen/musetalk/protocol"
)

func TestMultipartSubmitToResult(t *testing.T) {
	t.Parallel()
	b := setup(t)
	avatar := strings.Repeat("avatar-video-frame;", 1000)
	ct, body := multipartBody(t, map[string]string{
		"params": `{"batch_size":4,"version":"v1","bbox_shift":-7}`, "priority": "3", "worker_type": "main",
	}, map[string]filePart{
		"avatar": {"Face Clip.MP4", avatar},
		"audio":  {"speech.wav", "RIFF-speech"},
	})
	status, data, hdr := b.do("POST", "/v1/jobs", testPublicKey, ct, body)
	if status != http.StatusCreated {
		t.Fatalf("submit: %d %s", status, data)
	}
	var v protocol.JobView
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(avatar))
	if v.State != protocol.JobQueued || v.Priority != 3 || v.WorkerType != protocol.WorkerMain ||
		v.Inputs.AvatarKey != "inputs/"+v.ID+"/avatar.mp4" || v.Inputs.AudioKey != "inputs/"+v.ID+"/audio.wav" ||
		v.AvatarID != hex.EncodeToString(sum[:])[:32] || v.Params.BatchSize != 4 || v.Params.BBoxShift != -7 ||
		hdr.Get("Location") != "/v1/jobs/"+v.ID {
		t.Fatalf("submitted job: %+v (Location %q)", v, hdr.Get("Location"))
	}
	if !protocol.ValidID(v.ID) {
		t.Fatalf("job id %q is not a valid id", v.ID)
	}
	status, data, _ = b.do("GET", protocol.Path(protocol.JobResultRoute, v.ID), testPublicKey, "", nil)
	wantError(t, status, data, http.StatusConflict, protocol.CodeNotReady, "queued")

	b.heartbeat("w1", seedHeartbeat(protocol.WorkerIdle))
	a := b.claim("w1")
	if a == nil || a.JobID != v.ID || a.Params.Version != "v1" || a.AvatarID != v.AvatarID {
		t.Fatalf("assignment: %+v", a)
	}
	// The worker downloads its inputs through the control plane.
	status, got, _ := b.do("GET", protocol.InternalBlobPath+a.Inputs.AvatarKey, testInternalKey, "", nil)
	if status != http.StatusOK || string(got) != avatar {
		t.Fatalf("avatar download: %d, %d bytes", status, len(got))
	}
	video := bytes.Repeat([]byte{0, 0, 0, 0x20, 'f', 't', 'y', 'p'}, 4096)
	b.upload(a, video)
	if status, data := b.complete(a); status != http.StatusOK {
		t.Fatalf("complete: %d %s", status, data)
	}
	status, got, hdr = b.do("GET", protocol.Path(protocol.JobResultRoute, v.ID), testPublicKey, "", nil)
	if status != http.StatusOK || !bytes.Equal(got, video) || hdr.Get("Content-Type") != "video/mp4" {
		t.Fatalf("result: %d, %d bytes, %q", status, len(got), hdr.Get("Content-Type"))
	}
	final := b.getJob(v.ID)
	if final.State != protocol.JobSucceeded || final.OutputKey != a.OutputKey || final.ResultPath != "/v1/jobs/"+v.ID+"/result" ||
		len(final.Attempts) != 1 || final.Attempts[0].Outcome != protocol.OutcomeSucceeded || final.Attempts[0].OutputKey != a.OutputKey {
		t.Fatalf("final job: %+v", final)
	}
}

func TestIdempotentSubmit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	first := b.submit(protocol.SubmitRequest{IdempotencyKey: "order-42"})
	avatarKey, audioKey := b.inputs()
	var again protocol.JobView
	status, data := b.call("POST", "/v1/jobs", testPublicKey,
		protocol.SubmitRequest{AvatarKey: avatarKey, AudioKey: audioKey, IdempotencyKey: "order-42", Priority: 9}, &again)
	if status != http.StatusOK || again.ID != first.ID || again.Priority != first.Priority {
		t.Fatalf("repeat submit: %d %s", status, data)
	}
	// A multipart repeat answers the first job too and leaves no inputs behind.
	submitForm := func() (int, protocol.JobView) {
		ct, body := multipartBody(t, map[string]string{"idempotency_key": "upload-7"},
			map[string]filePart{"avatar": {"a.png", "png"}, "audio": {"b.mp3", "mp3"}})
		status, data, _ := b.do("POST", "/v1/jobs", testPublicKey, ct, body)
		var v protocol.JobView
		if err := json.Unmarshal(data, &v); err != nil {
			t.Fatalf("%d %s: %v", status, data, err)
		}
		return status, v
	}
	s1, v1 := submitForm()
	s2, v2 := submitForm()
	if s1 != http.StatusCreated || s2 != http.StatusOK || v1.ID != v2.ID {
		t.Fatalf("multipart repeat: %d %s / %d %s", s1, v1.ID, s2, v2.ID)
	}
	dirs := inputDirs(t, b)
	if len(dirs) != 1 || dirs[0] != v1.ID {
		t.Fatalf("input directories after a repeated upload: %v (want only %s)", dirs, v1.ID)
	}
	var list protocol.JobList
	b.call("GET", "/v1/jobs", testPublicKey, nil, &list)
	if len(list.Jobs) != 2 {
		t.Fatalf("jobs: %d, want 2", len(list.Jobs))
	}
}

// inputDirs lists the job directories under inputs/ that hold files.
func inputDirs(t *testing.T, b *testBundle) []string {
	t.Helper()
	var out []string
	root := filepath.Join(b.blobs.Path(), "inputs")
	entries, err := fs.ReadDir(os.DirFS(root), ".")
	if err != nil {
		return nil
	}
	for _, e := range entries {
		files, _ := fs.ReadDir(os.DirFS(filepath.Join(root, e.Name())), ".")
		if len(files) > 0 {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) {
		c.MaxUploadBytes = 64 << 10
		c.MaxAvatarBytes = 32 << 10
		c.MaxAudioBytes = 8 << 10
	})
	avatarKey, audioKey := b.inputs()
	hb := protocol.Path(protocol.HeartbeatRoute, "w1")
	jobs := "/v1/jobs"
	cases := []struct {
		name        string
		method      string
		path, key   string
		body        string
		status      int
		code        string
		mentions    []string
		contentType string
	}{
		{"malformed heartbeat", "POST", hb, testInternalKey, `{"status":"idle",`, 400, protocol.CodeBadRequest, []string{"malformed JSON"}, ""},
		{"heartbeat syntax error", "POST", hb, testInternalKey, `{"status" "idle"}`, 400, protocol.CodeBadRequest, []string{"malformed JSON", "byte"}, ""},
		{"progress unknown field", "POST", protocol.Path(protocol.ProgressRoute, "job1"), testInternalKey, `{"attempt":1,"token":"t","speed":2}`, 400, protocol.CodeBadRequest, []string{`"speed"`, "unknown field"}, ""},
		{"heartbeat wrong type", "POST", hb, testInternalKey, `{"status":"idle","provider":"salad","gpu_class":"x","worker_type":"main","attempt":"one"}`, 400, protocol.CodeBadRequest, []string{"attempt", "integer"}, ""},
		{"heartbeat unknown worker type", "POST", hb, testInternalKey, `{"status":"idle","provider":"salad","gpu_class":"x","worker_type":"spot"}`, 400, protocol.CodeBadRequest, []string{"worker_type", "spot"}, ""},
		{"heartbeat bad status", "POST", hb, testInternalKey, `{"status":"offline","provider":"salad","gpu_class":"x","worker_type":"main"}`, 400, protocol.CodeBadRequest, []string{"status", "offline"}, ""},
		{"heartbeat empty body", "POST", hb, testInternalKey, ``, 400, protocol.CodeBadRequest, []string{"empty"}, ""},
		{"heartbeat trailing data", "POST", hb, testInternalKey, `{"status":"idle","provider":"p","gpu_class":"g","worker_type":"main"} {}`, 400, protocol.CodeBadRequest, []string{"after the JSON object"}, ""},
		{"heartbeat array", "POST", hb, testInternalKey, `[1,2]`, 400, protocol.CodeBadRequest, []string{"object"}, ""},
		{"heartbeat bad worker id", "POST", "/internal/main/workers/-bad/heartbeat", testInternalKey, `{}`, 400, protocol.CodeBadRequest, []string{"worker id"}, ""},
		{"heartbeat oversized", "POST", hb, testInternalKey, `{"version":"` + strings.Repeat("v", 2<<20) + `"}`, 413, protocol.CodeTooLarge, []string{"limit"}, ""},
		{"claim unknown worker type", "POST", protocol.Path(protocol.ClaimRoute, "w9"), testInternalKey, `{"worker_type":"gpu"}`, 400, protocol.CodeBadRequest, []string{"worker_type", "gpu"}, ""},
		{"complete missing token", "POST", protocol.Path(protocol.CompleteRoute, "job1"), testInternalKey, `{"attempt":1}`, 400, protocol.CodeBadRequest, []string{"token"}, ""},
		{"progress unknown job", "POST", protocol.Path(protocol.ProgressRoute, "nojob"), testInternalKey, `{"attempt":1,"token":"t","progress":{"stage":"x"}}`, 404, protocol.CodeNotFound, []string{"nojob"}, ""},
		{"fail without error", "POST", protocol.Path(protocol.FailRoute, "job1"), testInternalKey, `{"attempt":1,"token":"t"}`, 400, protocol.CodeBadRequest, []string{"error"}, ""},
		{"claim bad cached avatar", "POST", protocol.Path(protocol.ClaimRoute, "w9"), testInternalKey, `{"cached_avatars":["a b"]}`, 400, protocol.CodeBadRequest, []string{"cached_avatars"}, ""},
		{"submit bad avatar id", "POST", jobs, testPublicKey, `{"avatar_key":"` + avatarKey + `","audio_key":"` + audioKey + `","avatar_id":"../x"}`, 400, protocol.CodeBadRequest, []string{"avatar_id"}, "application/json"},
		{"fail wrong type", "POST", protocol.Path(protocol.FailRoute, "job1"), testInternalKey, `{"attempt":1,"token":"t","error":"x","retryable":"yes"}`, 400, protocol.CodeBadRequest, []string{"retryable"}, ""},
		{"submit unknown field", "POST", jobs, testPublicKey, `{"avatar_key":"` + avatarKey + `","audio_key":"` + audioKey + `","colour":"red"}`, 400, protocol.CodeBadRequest, []string{`"colour"`}, "application/json"},
		{"submit nested unknown field", "POST", jobs, testPublicKey, `{"avatar_key":"` + avatarKey + `","audio_key":"` + audioKey + `","params":{"fast":true}}`, 400, protocol.CodeBadRequest, []string{`"fast"`}, "application/json"},
		{"submit wrong type", "POST", jobs, testPublicKey, `{"avatar_key":"` + avatarKey + `","audio_key":"` + audioKey + `","priority":"high"}`, 400, protocol.CodeBadRequest, []string{"priority", "integer"}, "application/json"},
		{"submit wrong nested type", "POST", jobs, testPublicKey, `{"avatar_key":"` + avatarKey + `","audio_key":"` + audioKey + `","params":{"batch_size":"big"}}`, 400, protocol.CodeBadRequest, []string{"params.batch_size"}, "application/json"},
		{"submit unknown worker type", "POST", jobs, testPublicKey, `{"avatar_key":"` + avatarKey + `","audio_key":"` + audioKey + `","worker_type":"spot"}`, 400, protocol.CodeBadRequest, []string{"worker_type", "spot"}, "application/json"},
		{"submit bad params", "POST", jobs, testPublicKey, `{"avatar_key":"` + avatarKey + `","audio_key":"` + audioKey + `","params":{"version":"v9"}}`, 400, protocol.CodeBadRequest, []string{"params.version"}, "application/json"},
		{"submit priority range", "POST", jobs, testPublicKey, `{"avatar_key":"` + avatarKey + `","audio_key":"` + audioKey + `","priority":1000}`, 400, protocol.CodeBadRequest, []string{"priority"}, "application/json"},
		{"submit missing object", "POST", jobs, testPublicKey, `{"avatar_key":"uploads/none.mp4","audio_key":"` + audioKey + `"}`, 400, protocol.CodeBadRequest, []string{"avatar_key", "uploads/none.mp4"}, "application/json"},
		{"submit bad key", "POST", jobs, testPublicKey, `{"avatar_key":"../etc/passwd","audio_key":"` + audioKey + `"}`, 400, protocol.CodeBadRequest, []string{"avatar_key"}, "application/json"},
		{"submit missing audio", "POST", jobs, testPublicKey, `{"avatar_key":"` + avatarKey + `"}`, 400, protocol.CodeBadRequest, []string{"audio_key"}, "application/json"},
		{"submit malformed", "POST", jobs, testPublicKey, `{"avatar_key":`, 400, protocol.CodeBadRequest, []string{"malformed JSON"}, "application/json"},
		{"submit text", "POST", jobs, testPublicKey, `hello`, 415, protocol.CodeBadRequest, []string{"Content-Type"}, "text/plain"},
		{"list bad state", "GET", "/v1/jobs?state=done", testPublicKey, ``, 400, protocol.CodeBadRequest, []string{"state", "done"}, ""},
		{"list bad limit", "GET", "/v1/jobs?limit=0", testPublicKey, ``, 400, protocol.CodeBadRequest, []string{"limit"}, ""},
		{"list bad cursor", "GET", "/v1/jobs?cursor=zzz", testPublicKey, ``, 400, protocol.CodeBadRequest, []string{"cursor"}, ""},
		{"list unknown parameter", "GET", "/v1/jobs?colour=red", testPublicKey, ``, 400, protocol.CodeBadRequest, []string{"colour"}, ""},
		{"list unknown worker type", "GET", "/v1/jobs?worker_type=spot", testPublicKey, ``, 400, protocol.CodeBadRequest, []string{"worker_type", "spot"}, ""},
		{"workers unknown worker type", "GET", "/v1/workers?worker_type=spot", testPublicKey, ``, 400, protocol.CodeBadRequest, []string{"worker_type", "spot"}, ""},
		{"unknown job", "GET", "/v1/jobs/nope", testPublicKey, ``, 404, protocol.CodeNotFound, []string{"nope"}, ""},
		{"unknown route", "GET", "/v2/things", "", ``, 404, protocol.CodeNotFound, []string{"/v2/things"}, ""},
		{"wrong method", "DELETE", "/v1/jobs", testPublicKey, ``, 405, protocol.CodeMethodInvalid, []string{"DELETE"}, ""},
		{"blob put outside outputs", "PUT", protocol.InternalBlobPath + "inputs/x/avatar.mp4", testInternalKey, `x`, 403, protocol.CodeBadRequest, []string{"outputs/"}, ""},
		{"blob put without its attempt", "PUT", protocol.InternalBlobPath + "outputs/nojob/1.mp4", testInternalKey, `x`, 400, protocol.CodeBadRequest, []string{protocol.AttemptHeader}, ""},
		{"blob get backslash", "GET", protocol.InternalBlobPath + "inputs/a%5Cb", testInternalKey, ``, 400, protocol.CodeBadRequest, []string{"key"}, ""},
		{"blob get missing", "GET", protocol.InternalBlobPath + "inputs/none", testInternalKey, ``, 404, protocol.CodeNotFound, []string{"inputs/none"}, ""},
	}
	for _, c := range cases {
		var body *strings.Reader
		if c.body != "" {
			body = strings.NewReader(c.body)
		}
		var status int
		var data []byte
		if body != nil {
			status, data, _ = b.do(c.method, c.path, c.key, c.contentType, body)
		} else {
			status, data, _ = b.do(c.method, c.path, c.key, c.contentType, nil)
		}
		t.Run(c.name, func(t *testing.T) {
			wantError(t, status, data, c.status, c.code, c.mentions...)
		})
	}

	// Multipart: unknown worker type, bad params, unknown fields, missing
	// files, oversized files and bodies.
	big := strings.Repeat("x", 40<<10)
	forms := []struct {
		name     string
		fields   map[string]string
		files    map[string]filePart
		status   int
		mentions []string
	}{
		{"unknown worker type", map[string]string{"worker_type": "spot"}, nil, 400, []string{"worker_type", "spot"}},
		{"bad params JSON", map[string]string{"params": `{"batch_size":`}, nil, 400, []string{"params", "malformed"}},
		{"params unknown field", map[string]string{"params": `{"speed":2}`}, nil, 400, []string{"params", `"speed"`}},
		{"params wrong type", map[string]string{"params": `{"fps":25}`}, nil, 400, []string{"params", "fps"}},
		{"priority not a number", map[string]string{"priority": "urgent"}, nil, 400, []string{"priority", "urgent"}},
		{"unknown form field", map[string]string{"colour": "red"}, nil, 400, []string{"colour"}},
		{"missing audio", nil, map[string]filePart{"avatar": {"a.mp4", "v"}}, 400, []string{"audio", "missing"}},
		{"empty avatar", nil, map[string]filePart{"avatar": {"a.mp4", ""}, "audio": {"a.wav", "a"}}, 400, []string{"avatar", "empty"}},
		{"bad extension", nil, map[string]filePart{"avatar": {"a.m p4", "v"}, "audio": {"a.wav", "a"}}, 400, []string{"avatar", "extension"}},
		{"audio over its limit", nil, map[string]filePart{"audio": {"a.wav", strings.Repeat("a", 9<<10)}}, 413, []string{"audio", "8192"}},
		{"avatar over its limit", nil, map[string]filePart{"avatar": {"a.mp4", big}}, 413, []string{"avatar", "32768"}},
	}
	for _, f := range forms {
		ct, body := multipartBody(t, f.fields, f.files)
		status, data, _ := b.do("POST", jobs, testPublicKey, ct, body)
		t.Run("multipart "+f.name, func(t *testing.T) {
			code := protocol.CodeBadRequest
			if f.status == 413 {
				code = protocol.CodeTooLarge
			}
			wantError(t, status, data, f.status, code, f.mentions...)
		})
	}
	// The whole body over MaxUploadBytes (each file within its own
	// limit), declared up front and streamed.
	padded := "{" + strings.Repeat(" ", 60<<10) + "}"
	ct, body := multipartBody(t, map[string]string{"params": padded},
		map[string]filePart{"avatar": {"a.mp4", big[:30<<10]}, "audio": {"a.wav", "RIFF"}})
	status, data, _ := b.do("POST", jobs, testPublicKey, ct, bytes.NewReader(body.Bytes()))
	wantError(t, status, data, 413, protocol.CodeTooLarge, "65536")
	status, data, _ = b.do("POST", jobs, testPublicKey, ct, struct{ *bytes.Reader }{bytes.NewReader(body.Bytes())})
	wantError(t, status, data, 413, protocol.CodeTooLarge, "65536")

	// Nothing was stored by any rejected submission, and the server is up.
	if dirs := inputDirs(t, b); len(dirs) != 0 {
		t.Fatalf("rejected submissions left inputs: %v", dirs)
	}
	if status, data, _ := b.do("GET", "/healthz", "", "", nil); status != http.StatusOK {
		t.Fatalf("healthz after bad input: %d %s", status, data)
	}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	b := setup(t)
	job := b.submit(protocol.SubmitRequest{})
	routes := []struct{ method, path string }{
		{"POST", protocol.Path(protocol.HeartbeatRoute, "w1")},
		{"POST", protocol.Path(protocol.ClaimRoute, "w1")},
		{"POST", protocol.Path(protocol.ProgressRoute, job.ID)},
		{"POST", protocol.Path(protocol.CompleteRoute, job.ID)},
		{"POST", protocol.Path(protocol.FailRoute, job.ID)},
		{"POST", protocol.Path(protocol.ReleaseRoute, job.ID)},
		{"GET", protocol.InternalBlobPath + "uploads/avatar.mp4"},
		{"PUT", protocol.InternalBlobPath + "outputs/" + job.ID + "/1.mp4"},
	}
	public := []struct{ method, path string }{
		{"POST", "/v1/jobs"},
		{"GET", "/v1/jobs"},
		{"GET", protocol.Path(protocol.GetJobRoute, job.ID)},
		{"POST", protocol.Path(protocol.CancelJobRoute, job.ID)},
		{"GET", protocol.Path(protocol.JobResultRoute, job.ID)},
		{"GET", "/v1/workers"},
		{"POST", protocol.Path(protocol.DrainWorkerRoute, "w1")},
		{"POST", protocol.Path(protocol.UndrainWorkerRoute, "w1")},
		{"POST", protocol.Path(protocol.RetryJobRoute, job.ID)},
	}
	check := func(method, path, key, authHeader string) {
		t.Helper()
		req, _ := http.NewRequest(method, b.ts.URL+path, strings.NewReader("{}"))
		if authHeader != "" {
			req.Header.Set("Authorization", authHeader)
		} else if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := b.ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var buf bytes.Buffer
		buf.ReadFrom(resp.Body)
		if resp.StatusCode != http.StatusUnauthorized || errorBody(t, buf.Bytes()).Code != protocol.CodeUnauthorized ||
			!strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Fatalf("%s %s with key %q / header %q: %d %s", method, path, key, authHeader, resp.StatusCode, buf.Bytes())
		}
	}
	for _, r := range routes {
		check(r.method, r.path, "", "")
		check(r.method, r.path, "wrong", "")
		check(r.method, r.path, testPublicKey, "") // the public key is not a worker key
		check(r.method, r.path, "", "Basic "+testInternalKey)
		check(r.method, r.path, testInternalKey+"x", "")
	}
	for _, r := range public {
		check(r.method, r.path, "", "")
		check(r.method, r.path, "wrong", "")
		check(r.method, r.path, testInternalKey, "") // the worker key is not a public key
	}
	// The job was not touched by any of that.
	if v := b.getJob(job.ID); v.State != protocol.JobQueued {
		t.Fatalf("job changed by unauthorised calls: %+v", v)
	}
	// The right keys work; the scheme is case-insensitive.
	if status, _, _ := b.do("GET", "/v1/jobs", testPublicKey, "", nil); status != http.StatusOK {
		t.Fatalf("public key refused: %d", status)
	}
	req, _ := http.NewRequest("GET", b.ts.URL+"/v1/workers", nil)
	req.Header.Set("Authorization", "bearer "+testPublicKey)
	if resp, err := b.ts.Client().Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("lower-case bearer: %v %v", resp, err)
	}
	// /healthz and /metrics need no key.
	for _, p := range []string{"/healthz", "/metrics"} {
		if status, data, _ := b.do("GET", p, "", "", nil); status != http.StatusOK {
			t.Fatalf("%s: %d %s", p, status, data)
		}
	}
	// Without public keys the public API is open; the worker API never is.
	open := setup(t, func(c *Config) { c.PublicAPIKeys = nil })
	if status, _, _ := open.do("GET", "/v1/jobs", "", "", nil); status != http.StatusOK {
		t.Fatalf("open public API: %d", status)
	}
	if status, _, _ := open.do("POST", protocol.Path(protocol.ClaimRoute, "w1"), "", "", nil); status != http.StatusUnauthorized {
		t.Fatalf("worker API without key on an open server: %d", status)
	}
	// Keys and tokens never reach the logs.
	b.heartbeat("w1", seedHeartbeat(protocol.WorkerIdle))
	a := b.claim("w1")
	b.complete(a)
	logs := b.logs.String()
	for _, secret := range []string{testInternalKey, testPublicKey, a.Token} {
		if strings.Contains(logs, secret) {
			t.Fatalf("a secret reached the logs:\n%s", logs)
		}
	}
	if !strings.Contains(logs, "http request") || !strings.Contains(logs, "status=401") {
		t.Fatalf("requests are not logged:\n%s", logs)
	}
}

func TestListJobs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var ids []string
	for i := 0; i < 5; i++ {
		ids = append(ids, b.submit(protocol.SubmitRequest{WorkerType: []protocol.WorkerType{"", protocol.WorkerMain}[i%2]}).ID)
		b.clock.Advance(1e9)
	}
	// Pages of 2, newest first, via the cursor.
	var got []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("cursor does not end")
		}
		path := "/v1/jobs?limit=2"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		var list protocol.JobList
		if status, data := b.call("GET", path, testPublicKey, nil, &list); status != http.StatusOK {
			t.Fatalf("list: %d %s", status, data)
		}
		for _, j := range list.Jobs {
			got = append(got, j.ID)
		}
		if list.NextCursor == "" {
			break
		}
		cursor = list.NextCursor
	}
	want := []string{ids[4], ids[3], ids[2], ids[1], ids[0]}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("pages\n got  %v\n want %v", got, want)
	}
	b.heartbeat("w1", seedHeartbeat(protocol.WorkerIdle))
	a := b.claim("w1")
	var list protocol.JobList
	b.call("GET", "/v1/jobs?state=running", testPublicKey, nil, &list)
	if len(list.Jobs) != 1 || list.Jobs[0].ID != a.JobID {
		t.Fatalf("state=running: %+v", list.Jobs)
	}
	b.call("GET", "/v1/jobs?state=queued,running&worker_id=w1", testPublicKey, nil, &list)
	if len(list.Jobs) != 1 || list.Jobs[0].ID != a.JobID {
		t.Fatalf("worker_id=w1: %+v", list.Jobs)
	}
	b.call("GET", "/v1/jobs?worker_type=main", testPublicKey, nil, &list)
	if len(list.Jobs) != 2 {
		t.Fatalf("worker_type=main: %d jobs", len(list.Jobs))
	}
	var workers protocol.WorkerList
	b.call("GET", "/v1/workers?status=busy", testPublicKey, nil, &workers)
	if len(workers.Workers) != 1 || workers.Workers[0].JobID != a.JobID {
		t.Fatalf("busy workers: %+v", workers.Workers)
	}
	b.call("GET", "/v1/workers?status=offline", testPublicKey, nil, &workers)
	if len(workers.Workers) != 0 {
		t.Fatalf("offline workers: %+v", workers.Workers)
	}
}

func TestTraceContextReachesWorker(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	b := setup(t, func(c *Config) { c.TracerProvider = tp })
	// The client's own trace is continued.
	ctx, parent := tp.Tracer("client").Start(context.Background(), "client submit")
	hdr := propagation.HeaderCarrier{}
	propagation.TraceContext{}.Inject(ctx, hdr)
	parent.End()
	avatarKey, audioKey := b.inputs()
	req, _ := http.NewRequest("POST", b.ts.URL+"/v1/jobs", bytes.NewReader(mustJSON(t, protocol.SubmitRequest{AvatarKey: avatarKey, AudioKey: audioKey})))
	req.Header.Set("Authorization", "Bearer "+testPublicKey)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", hdr.Get("traceparent"))
	resp, err := b.ts.Client().Do(req)
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("submit: %v %v", resp, err)
	}
	resp.Body.Close()
	b.heartbeat("w1", seedHeartbeat(protocol.WorkerIdle))
	a := b.claim("w1")
	tc := propagation.TraceContext{}
	got := tc.Extract(context.Background(), propagation.MapCarrier(a.TraceContext))
	want := parent.SpanContext().TraceID()
	if sc := trace.SpanContextFromContext(got); !sc.IsValid() || sc.TraceID() != want {
		t.Fatalf("assignment trace context %v does not continue trace %s", a.TraceContext, want)
	}
	names := map[string]bool{}
	for _, s := range rec.Ended() {
		names[s.Name()] = true
		if s.Name() == protocol.SubmitRoute && s.SpanContext().TraceID() != want {
			t.Fatalf("the submit span is not in the client's trace")
		}
	}
	for _, n := range []string{protocol.SubmitRoute, protocol.ClaimRoute, "job.submitted", "job.claimed"} {
		if !names[n] {
			t.Fatalf("no span %q among %v", n, names)
		}
	}
}

// TestStorageProbeIsNotAnError: a worker probes storage at start with a
// HEAD of an object that does not exist; the answer is a 404, logged as a
// quiet debug line without an error, not an INFO line with one.
func TestStorageProbeIsNotAnError(t *testing.T) {
	t.Parallel()
	b := setup(t)
	status, _, _ := b.do("HEAD", protocol.InternalBlobPath+"selfcheck/w1", testInternalKey, "", nil)
	if status != http.StatusNotFound {
		t.Fatalf("HEAD of a missing object: %d", status)
	}
	for _, line := range strings.Split(b.logs.String(), "\n") {
		if strings.Contains(line, "selfcheck/w1") && (strings.Contains(line, "error=") || !strings.Contains(line, "level=DEBUG")) {
			t.Fatalf("the probe is logged as an error: %s", line)
		}
	}
	if !strings.Contains(b.logs.String(), "selfcheck/w1") {
		t.Fatalf("the probe is not logged at all:\n%s", b.logs.String())
	}
}

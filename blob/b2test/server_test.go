package b2test

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// client speaks the B2 API to a test server directly.
type client struct {
	t        *testing.T
	srv      *Server
	tok      string
	account  string
	bucketID string
}

func newClient(t *testing.T, cfg Config) *client {
	t.Helper()
	srv := NewServer(cfg)
	t.Cleanup(srv.Close)
	c := &client{t: t, srv: srv}
	c.authorize()
	st, out := c.call("b2_list_buckets", map[string]any{"accountId": c.account, "bucketName": srv.Bucket})
	if st != 200 {
		t.Fatalf("b2_list_buckets: %d %v", st, out)
	}
	c.bucketID = out["buckets"].([]any)[0].(map[string]any)["bucketId"].(string)
	return c
}

func (c *client) authorize() {
	req, _ := http.NewRequest("GET", c.srv.URL+"/b2api/v3/b2_authorize_account", nil)
	req.SetBasicAuth(c.srv.KeyID, c.srv.AppKey)
	st, out := c.do(req)
	if st != 200 {
		c.t.Fatalf("authorize: %d %v", st, out)
	}
	c.tok = out["authorizationToken"].(string)
	c.account = out["accountId"].(string)
}

func (c *client) do(req *http.Request) (int, map[string]any) {
	c.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func (c *client) call(op string, body any) (int, map[string]any) {
	c.t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", c.srv.URL+"/b2api/v3/"+op, bytes.NewReader(b))
	req.Header.Set("Authorization", c.tok)
	return c.do(req)
}

func sha(b []byte) string {
	h := sha1.Sum(b)
	return hex.EncodeToString(h[:])
}

// upload sends data to an upload or part URL with the given SHA1 header.
func (c *client) upload(url, tok string, hdr map[string]string, data []byte) (int, map[string]any) {
	c.t.Helper()
	req, _ := http.NewRequest("POST", url, bytes.NewReader(data))
	req.Header.Set("Authorization", tok)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return c.do(req)
}

func (c *client) uploadURL() (string, string) {
	c.t.Helper()
	st, out := c.call("b2_get_upload_url", map[string]any{"bucketId": c.bucketID})
	if st != 200 {
		c.t.Fatalf("b2_get_upload_url: %d %v", st, out)
	}
	return out["uploadUrl"].(string), out["authorizationToken"].(string)
}

func (c *client) putFile(name string, data []byte) string {
	c.t.Helper()
	u, tok := c.uploadURL()
	st, out := c.upload(u, tok, map[string]string{"X-Bz-File-Name": name, "X-Bz-Content-Sha1": sha(data), "Content-Type": "b2/x-auto"}, data)
	if st != 200 {
		c.t.Fatalf("upload %s: %d %v", name, st, out)
	}
	return out["fileId"].(string)
}

func wantErr(t *testing.T, what string, st int, out map[string]any, status int, code string) {
	t.Helper()
	if st != status || out["code"] != code {
		t.Fatalf("%s: got %d %v, want %d %s", what, st, out, status, code)
	}
}

func TestAuthorization(t *testing.T) {
	c := newClient(t, Config{KeyID: "kid", AppKey: "secret"})
	req, _ := http.NewRequest("GET", c.srv.URL+"/b2api/v3/b2_authorize_account", nil)
	req.SetBasicAuth("kid", "wrong")
	st, out := c.do(req)
	wantErr(t, "wrong key", st, out, 401, "unauthorized")
	if strings.Contains(fmt.Sprint(out), "wrong") {
		t.Fatalf("error echoes the key: %v", out)
	}

	// v2 answers flat.
	req, _ = http.NewRequest("GET", c.srv.URL+"/b2api/v2/b2_authorize_account", nil)
	req.SetBasicAuth("kid", "secret")
	st, out = c.do(req)
	if st != 200 || out["apiUrl"] != c.srv.URL || out["absoluteMinimumPartSize"] != float64(5_000_000) {
		t.Fatalf("v2 authorize: %d %v", st, out)
	}

	good := c.tok
	c.tok = "nonsense"
	st, out = c.call("b2_list_buckets", map[string]any{"accountId": c.account})
	wantErr(t, "bad token", st, out, 401, "bad_auth_token")
	c.tok = good
	c.srv.ExpireTokens()
	st, out = c.call("b2_list_buckets", map[string]any{"accountId": c.account})
	wantErr(t, "expired token", st, out, 401, "expired_auth_token")
	c.authorize()
	if st, out := c.call("b2_list_buckets", map[string]any{"accountId": c.account}); st != 200 {
		t.Fatalf("after re-authorizing: %d %v", st, out)
	}
}

func TestUploadChecks(t *testing.T) {
	c := newClient(t, Config{})
	data := []byte("hello, b2")
	u, tok := c.uploadURL()
	st, out := c.upload(u, tok, map[string]string{"X-Bz-File-Name": "a/b.txt", "X-Bz-Content-Sha1": sha([]byte("other"))}, data)
	wantErr(t, "wrong SHA1", st, out, 400, "bad_request")

	// Upload tokens work only at their own URL.
	u2, _ := c.uploadURL()
	st, out = c.upload(u2, tok, map[string]string{"X-Bz-File-Name": "a/b.txt", "X-Bz-Content-Sha1": sha(data)}, data)
	wantErr(t, "token at another URL", st, out, 401, "bad_auth_token")

	body := append(append([]byte{}, data...), sha(data)...)
	st, out = c.upload(u, tok, map[string]string{"X-Bz-File-Name": "a%2Fb.txt", "X-Bz-Content-Sha1": "hex_digits_at_end", "X-Bz-Info-Note": "x%20y"}, body)
	if st != 200 || out["contentSha1"] != sha(data) || out["fileName"] != "a/b.txt" || out["contentLength"] != float64(len(data)) {
		t.Fatalf("hex_digits_at_end upload: %d %v", st, out)
	}
	if got, ok := c.srv.Object(c.srv.Bucket, "a/b.txt"); !ok || string(got) != string(data) {
		t.Fatalf("stored %q", got)
	}
	body[0] ^= 1
	st, out = c.upload(u, tok, map[string]string{"X-Bz-File-Name": "a/b.txt", "X-Bz-Content-Sha1": "hex_digits_at_end"}, body)
	wantErr(t, "hex_digits_at_end mismatch", st, out, 400, "bad_request")
	st, out = c.upload(u, tok, map[string]string{"X-Bz-File-Name": "/abs", "X-Bz-Content-Sha1": sha(data)}, data)
	wantErr(t, "bad name", st, out, 400, "bad_request")

	// Download: headers, info, ranges, HEAD.
	req, _ := http.NewRequest("GET", c.srv.URL+"/file/"+c.srv.Bucket+"/a/b.txt", nil)
	req.Header.Set("Authorization", c.tok)
	req.Header.Set("Range", "bytes=2-4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 206 || string(got) != "llo" || resp.Header.Get("Content-Range") != "bytes 2-4/9" ||
		resp.Header.Get("X-Bz-Content-Sha1") != sha(data) || resp.Header.Get("X-Bz-Info-note") != "x+y" {
		t.Fatalf("range download: %d %q %v", resp.StatusCode, got, resp.Header)
	}
	req.Header.Set("Range", "bytes=9-")
	resp, _ = http.DefaultClient.Do(req)
	resp.Body.Close()
	if resp.StatusCode != 416 {
		t.Fatalf("range past the end: %d, want 416", resp.StatusCode)
	}
	req.Header.Del("Range")
	req.URL.Path = "/file/" + c.srv.Bucket + "/missing"
	resp, _ = http.DefaultClient.Do(req)
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("missing file: %d, want 404", resp.StatusCode)
	}
}

func TestLargeFileRules(t *testing.T) {
	c := newClient(t, Config{MinPartSize: 10})
	p1, p2 := []byte("0123456789AB"), []byte("tail")
	start := func(info map[string]string) (string, string, string) {
		st, out := c.call("b2_start_large_file", map[string]any{"bucketId": c.bucketID, "fileName": "big", "contentType": "b2/x-auto", "fileInfo": info})
		if st != 200 {
			t.Fatalf("start: %d %v", st, out)
		}
		id := out["fileId"].(string)
		st, out = c.call("b2_get_upload_part_url", map[string]any{"fileId": id})
		if st != 200 {
			t.Fatalf("part url: %d %v", st, out)
		}
		return id, out["uploadUrl"].(string), out["authorizationToken"].(string)
	}
	part := func(u, tok string, n int, data []byte) {
		t.Helper()
		if st, out := c.upload(u, tok, map[string]string{"X-Bz-Part-Number": fmt.Sprint(n), "X-Bz-Content-Sha1": sha(data)}, data); st != 200 {
			t.Fatalf("part %d: %d %v", n, st, out)
		}
	}
	finish := func(id string, shas ...string) (int, map[string]any) {
		return c.call("b2_finish_large_file", map[string]any{"fileId": id, "partSha1Array": shas})
	}

	id, u, tok := start(nil)
	part(u, tok, 1, p1)
	st, out := finish(id, sha(p1))
	wantErr(t, "one part", st, out, 400, "bad_request")
	part(u, tok, 2, p2)
	st, out = finish(id, sha(p1), sha(p1))
	wantErr(t, "wrong part SHA1", st, out, 400, "bad_request")
	if got := c.srv.Unfinished(c.srv.Bucket); len(got) != 1 {
		t.Fatalf("unfinished = %v", got)
	}
	st, out = finish(id, sha(p1), sha(p2))
	if st != 200 || out["contentSha1"] != "none" || out["contentLength"] != float64(16) {
		t.Fatalf("finish: %d %v", st, out)
	}
	if got, _ := c.srv.Object(c.srv.Bucket, "big"); string(got) != "0123456789ABtail" {
		t.Fatalf("assembled %q", got)
	}

	id, u, tok = start(nil)
	part(u, tok, 1, p2)
	part(u, tok, 2, p1)
	st, out = finish(id, sha(p2), sha(p1))
	wantErr(t, "small first part", st, out, 400, "bad_request")
	if st, out := c.call("b2_cancel_large_file", map[string]any{"fileId": id}); st != 200 {
		t.Fatalf("cancel: %d %v", st, out)
	}
	if got := c.srv.Unfinished(c.srv.Bucket); len(got) != 0 {
		t.Fatalf("unfinished after cancel = %v", got)
	}

	id, u, tok = start(map[string]string{"large_file_sha1": sha([]byte("something else"))})
	part(u, tok, 1, p1)
	part(u, tok, 2, p2)
	st, out = finish(id, sha(p1), sha(p2))
	wantErr(t, "large_file_sha1 mismatch", st, out, 400, "bad_request")
}

func TestListingAndVersions(t *testing.T) {
	c := newClient(t, Config{})
	for _, n := range []string{"d/a", "d/b", "d/sub/x", "d/sub/y", "e"} {
		c.putFile(n, []byte(n))
	}
	old := c.putFile("d/a", []byte("v1"))
	newest := c.putFile("d/a", []byte("v2"))

	st, out := c.call("b2_list_file_names", map[string]any{"bucketId": c.bucketID, "prefix": "d/", "maxFileCount": 2})
	files := out["files"].([]any)
	if st != 200 || len(files) != 2 || files[0].(map[string]any)["fileId"] != newest || out["nextFileName"] != "d/sub/x" {
		t.Fatalf("first page: %d %v", st, out)
	}
	st, out = c.call("b2_list_file_names", map[string]any{"bucketId": c.bucketID, "prefix": "d/", "delimiter": "/"})
	var names []string
	for _, f := range out["files"].([]any) {
		names = append(names, f.(map[string]any)["fileName"].(string)+":"+f.(map[string]any)["action"].(string))
	}
	if st != 200 || strings.Join(names, ",") != "d/a:upload,d/b:upload,d/sub/:folder" {
		t.Fatalf("delimited listing: %v", names)
	}
	st, out = c.call("b2_list_file_versions", map[string]any{"bucketId": c.bucketID, "prefix": "d/a", "maxFileCount": 2})
	files = out["files"].([]any)
	if st != 200 || len(files) != 2 || files[0].(map[string]any)["fileId"] != newest || files[1].(map[string]any)["fileId"] != old || out["nextFileName"] != "d/a" {
		t.Fatalf("versions newest first: %v", out)
	}

	st, out = c.call("b2_delete_file_version", map[string]any{"fileName": "d/a", "fileId": newest})
	if st != 200 {
		t.Fatalf("delete: %d %v", st, out)
	}
	if got, _ := c.srv.Object(c.srv.Bucket, "d/a"); string(got) != "v1" {
		t.Fatalf("after deleting the newest version the current one is %q, want v1", got)
	}
	st, out = c.call("b2_delete_file_version", map[string]any{"fileName": "d/a", "fileId": newest})
	wantErr(t, "delete again", st, out, 400, "file_not_present")

	if st, out := c.call("b2_hide_file", map[string]any{"bucketId": c.bucketID, "fileName": "e"}); st != 200 || out["action"] != "hide" {
		t.Fatalf("hide: %d %v", st, out)
	}
	if _, ok := c.srv.Object(c.srv.Bucket, "e"); ok {
		t.Fatal("hidden file still visible")
	}
	if n := c.srv.Versions(c.srv.Bucket, "e"); n != 2 {
		t.Fatalf("versions of e = %d, want the upload and the hide marker", n)
	}
}

func TestFaultPlan(t *testing.T) {
	c := newClient(t, Config{})
	c.srv.ResetCalls()
	c.srv.Inject(Fault{Op: "b2_list_buckets", Skip: 1, Count: 2, Status: 503, RetryAfter: 7})
	body := map[string]any{"accountId": c.account}
	var got []int
	for range 5 {
		st, _ := c.call("b2_list_buckets", body)
		got = append(got, st)
	}
	if fmt.Sprint(got) != "[200 503 503 200 200]" {
		t.Fatalf("statuses = %v, want one pass, two faults, then passes", got)
	}
	if n := c.srv.Calls("b2_list_buckets"); n != 5 {
		t.Fatalf("Calls = %d, want 5", n)
	}

	c.srv.Inject(Fault{Op: "*", Status: 500, Code: "misc_error", Count: 1})
	st, out := c.call("b2_get_upload_url", map[string]any{"bucketId": c.bucketID})
	wantErr(t, "wildcard fault", st, out, 500, "misc_error")

	c.srv.Inject(Fault{Op: "b2_list_buckets", Drop: true, Count: 1})
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", c.srv.URL+"/b2api/v3/b2_list_buckets", bytes.NewReader(b))
	req.Header.Set("Authorization", c.tok)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("dropped connection gave a response")
	}

	// Admin API, as a test driving a separate process would use it.
	post := func(path, body string) int {
		resp, err := http.Post(c.srv.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := post("/_b2test/faults", `{"op":"b2_list_buckets","status":429,"count":1}`); st != 200 {
		t.Fatalf("adding a fault: %d", st)
	}
	if st, _ := c.call("b2_list_buckets", body); st != 429 {
		t.Fatalf("admin fault not applied: %d", st)
	}
	if st := post("/_b2test/faults", `{"status":429}`); st != 400 {
		t.Fatalf("fault without op accepted: %d", st)
	}
	post("/_b2test/expire-tokens", "")
	st, out = c.call("b2_list_buckets", body)
	wantErr(t, "after admin expire", st, out, 401, "expired_auth_token")
	resp, err := http.Get(c.srv.URL + "/_b2test/calls")
	if err != nil {
		t.Fatal(err)
	}
	var calls map[string]int
	json.NewDecoder(resp.Body).Decode(&calls)
	resp.Body.Close()
	if calls["b2_list_buckets"] != c.srv.Calls("b2_list_buckets") || calls["b2_list_buckets"] < 8 {
		t.Fatalf("admin calls = %v", calls)
	}
}

func TestDownloadFaults(t *testing.T) {
	c := newClient(t, Config{})
	data := bytes.Repeat([]byte("0123456789"), 1000)
	c.putFile("f", data)
	get := func() (*http.Response, []byte, error) {
		req, _ := http.NewRequest("GET", c.srv.URL+"/file/"+c.srv.Bucket+"/f", nil)
		req.Header.Set("Authorization", c.tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp, b, err
	}
	c.srv.Inject(Fault{Op: "b2_download_file_by_name", Truncate: true, TruncateAfter: 1234, Count: 1})
	resp, b, err := get()
	if err != io.ErrUnexpectedEOF || len(b) != 1234 || resp.ContentLength != int64(len(data)) {
		t.Fatalf("truncated: %d of %d bytes, %v", len(b), resp.ContentLength, err)
	}
	c.srv.Inject(Fault{Op: "b2_download_file_by_name", Corrupt: true, Count: 1})
	if _, b, err = get(); err != nil || len(b) != len(data) || bytes.Equal(b, data) {
		t.Fatalf("corrupt: %d bytes, equal %v, %v", len(b), bytes.Equal(b, data), err)
	}
	c.srv.Inject(Fault{Op: "b2_download_file_by_name", BytesPerSecond: 50_000, Count: 1})
	start := time.Now()
	if _, b, err = get(); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("throttled: %d bytes, %v", len(b), err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("10 kB at 50 kB/s took %v", d)
	}
}

func TestListenAndServe(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *Server, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- ListenAndServe(ctx, "127.0.0.1:0", Config{KeyID: "k", AppKey: "s", Buckets: []string{"one", "two"}}, func(s *Server) { ready <- s })
	}()
	var s *Server
	select {
	case s = <-ready:
	case err := <-errc:
		t.Fatal(err)
	}
	if s.Bucket != "one" || !strings.HasPrefix(s.URL, "http://127.0.0.1:") {
		t.Fatalf("server = %+v", s)
	}
	req, _ := http.NewRequest("GET", s.URL+"/b2api/v3/b2_authorize_account", nil)
	req.SetBasicAuth("k", "s")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("authorize: %v %v", resp, err)
	}
	resp.Body.Close()
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("ListenAndServe after cancel: %v", err)
	}
	if _, err := http.Get(s.URL + "/_b2test/calls"); err == nil {
		t.Fatal("server still answering after cancel")
	}
}

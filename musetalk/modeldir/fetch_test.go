package modeldir

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/avatargen/musetalk/musetalk/model/weights"
)

func randomBytes(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func gitBlobSHA1(b []byte) string {
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", len(b))
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

// fakeHub imitates the Hugging Face hub: resolve URLs of LFS files
// redirect to a CDN path with X-Linked-Etag/X-Linked-Size; small files are
// served directly with their git blob id as ETag. The CDN honours Range
// unless a test hooks in.
type fakeHub struct {
	t     *testing.T
	srv   *httptest.Server
	mu    sync.Mutex
	lfs   map[string][]byte // repo path → content
	small map[string][]byte
	// declared overrides the sha256 the hub declares for an LFS file.
	declared map[string]string
	// cdn, when set, serves the CDN request instead of http.ServeContent.
	cdn      func(w http.ResponseWriter, r *http.Request, content []byte) bool
	requests []string // "path range"
}

func newFakeHub(t *testing.T) *fakeHub {
	h := &fakeHub{t: t, lfs: map[string][]byte{}, small: map[string][]byte{}, declared: map[string]string{}}
	h.srv = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *fakeHub) serve(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.requests = append(h.requests, r.URL.Path+" "+r.Header.Get("Range"))
	h.mu.Unlock()
	if p, ok := strings.CutPrefix(r.URL.Path, "/org/repo/resolve/main/"); ok {
		if c, ok := h.small[p]; ok {
			w.Header().Set("ETag", `"`+gitBlobSHA1(c)+`"`)
			http.ServeContent(w, r, p, time.Time{}, bytes.NewReader(c))
			return
		}
		if c, ok := h.lfs[p]; ok {
			sum := sha256Hex(c)
			if d, ok := h.declared[p]; ok {
				sum = d
			}
			w.Header().Set("X-Linked-Etag", `"`+sum+`"`)
			w.Header().Set("X-Linked-Size", fmt.Sprint(len(c)))
			w.Header().Set("ETag", `W/"not-the-digest"`)
			http.Redirect(w, r, "/cdn/"+p, http.StatusFound)
			return
		}
	}
	if p, ok := strings.CutPrefix(r.URL.Path, "/cdn/"); ok {
		if c, ok := h.lfs[p]; ok {
			w.Header().Set("ETag", `"0123456789abcdef0123456789abcdef"`) // a CDN's own ETag
			if h.cdn != nil && h.cdn(w, r, c) {
				return
			}
			http.ServeContent(w, r, p, time.Time{}, bytes.NewReader(c))
			return
		}
	}
	if c, ok := h.lfs[strings.TrimPrefix(r.URL.Path, "/direct/")]; ok && strings.HasPrefix(r.URL.Path, "/direct/") {
		w.Header().Set("ETag", `"`+strings.Repeat("ab", 32)+`"`) // not a digest off the hub
		http.ServeContent(w, r, "f", time.Time{}, bytes.NewReader(c))
		return
	}
	http.NotFound(w, r)
}

func (h *fakeHub) rangesFor(prefix string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.requests {
		if strings.HasPrefix(r, prefix) {
			out = append(out, strings.TrimSpace(strings.TrimPrefix(r, prefix)))
		}
	}
	return out
}

func (h *fakeHub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.requests)
}

func hubFile(path, repoPath string, weightFile bool) File {
	return File{Path: path, Kind: weights.KindUNet, Weights: weightFile, Repo: "org/repo", RepoPath: repoPath}
}

func (h *fakeHub) opts(files ...File) FetchOptions {
	return FetchOptions{Endpoint: h.srv.URL, Client: h.srv.Client(), Files: files, RetryDelay: time.Millisecond}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFetchFromHub(t *testing.T) {
	hub := newFakeHub(t)
	big := randomBytes(3<<20+123, 1)
	cfg := []byte(`{"in_channels": 8}`)
	hub.lfs["sub/big.bin"] = big
	hub.small["sub/config.json"] = cfg
	dir := t.TempDir()
	var mu sync.Mutex
	done := map[string]FetchProgress{}
	downloads := 0
	opts := hub.opts(hubFile("m/big.bin", "sub/big.bin", true), hubFile("m/config.json", "sub/config.json", false))
	opts.Progress = func(p FetchProgress) {
		mu.Lock()
		defer mu.Unlock()
		switch p.Phase {
		case FetchDone, FetchPresent:
			done[p.File] = p
		case FetchDownload:
			downloads++
			if p.Total != int64(len(big)) && p.File == "m/big.bin" {
				t.Errorf("progress total %d, want %d", p.Total, len(big))
			}
		}
	}
	if err := Fetch(context.Background(), dir, opts); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dir, "m", "big.bin")); !bytes.Equal(got, big) {
		t.Fatal("big.bin differs")
	}
	if got := readFile(t, filepath.Join(dir, "m", "config.json")); !bytes.Equal(got, cfg) {
		t.Fatal("config.json differs")
	}
	if done["m/big.bin"].Verified != "sha256" || done["m/config.json"].Verified != "git-sha1" {
		t.Errorf("verified: %+v", done)
	}
	if downloads < 4 {
		t.Errorf("%d download progress reports for 3 MiB", downloads)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "m", "*.part")); len(m) != 0 {
		t.Errorf("left %v", m)
	}

	// A second run finds both present and asks nothing.
	n := hub.count()
	clear(done)
	if err := Fetch(context.Background(), dir, opts); err != nil {
		t.Fatal(err)
	}
	if hub.count() != n || done["m/big.bin"].Phase != FetchPresent || done["m/config.json"].Phase != FetchPresent {
		t.Errorf("second run: %d new requests, reports %+v", hub.count()-n, done)
	}
	// A safetensors form counts as present too.
	os.Remove(filepath.Join(dir, "m", "big.bin"))
	os.WriteFile(filepath.Join(dir, "m", "big.safetensors"), []byte("x"), 0o644)
	if err := Fetch(context.Background(), dir, opts); err != nil || hub.count() != n {
		t.Errorf("with big.safetensors: %v, %d new requests", err, hub.count()-n)
	}
}

func TestFetchResumesAfterDroppedConnection(t *testing.T) {
	hub := newFakeHub(t)
	big := randomBytes(2<<20, 2)
	hub.lfs["big.bin"] = big
	var dropped bool
	hub.cdn = func(w http.ResponseWriter, r *http.Request, c []byte) bool {
		if dropped {
			return false
		}
		dropped = true
		w.Header().Set("Content-Length", fmt.Sprint(len(c)))
		w.WriteHeader(http.StatusOK)
		w.Write(c[:len(c)/2])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // drop the connection mid-body
	}
	dir := t.TempDir()
	if err := Fetch(context.Background(), dir, hub.opts(hubFile("big.bin", "big.bin", true))); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dir, "big.bin")); !bytes.Equal(got, big) {
		t.Fatal("content differs after the resume")
	}
	ranges := hub.rangesFor("/cdn/big.bin")
	if len(ranges) != 2 || ranges[0] != "" || !strings.HasPrefix(ranges[1], "bytes=") || ranges[1] == "bytes=0-" {
		t.Fatalf("CDN requests' ranges: %q; want a full request, then a resume", ranges)
	}
}

func TestFetchStartsOverWhenRangeIgnored(t *testing.T) {
	hub := newFakeHub(t)
	big := randomBytes(1<<20, 3)
	hub.lfs["big.bin"] = big
	hub.cdn = func(w http.ResponseWriter, r *http.Request, c []byte) bool {
		w.Write(c) // 200 with everything, whatever the Range
		return true
	}
	dir := t.TempDir()
	// A stale .part whose bytes are not the file's start.
	if err := os.WriteFile(filepath.Join(dir, "big.bin.part"), randomBytes(1000, 4), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Fetch(context.Background(), dir, hub.opts(hubFile("big.bin", "big.bin", true))); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dir, "big.bin")); !bytes.Equal(got, big) {
		t.Fatal("content differs")
	}
	if r := hub.rangesFor("/cdn/big.bin"); len(r) != 1 || r[0] != "bytes=1000-" {
		t.Fatalf("ranges %q; want one request resuming at 1000", r)
	}
}

func TestFetchCompletePartFile(t *testing.T) {
	hub := newFakeHub(t)
	big := randomBytes(5000, 5)
	hub.lfs["big.bin"] = big
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "big.bin.part"), big, 0o644)
	if err := Fetch(context.Background(), dir, hub.opts(hubFile("big.bin", "big.bin", true))); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dir, "big.bin")); !bytes.Equal(got, big) {
		t.Fatal("content differs")
	}
}

func TestFetchChecksumMismatch(t *testing.T) {
	hub := newFakeHub(t)
	big := randomBytes(4096, 6)
	hub.lfs["big.bin"] = big
	hub.declared["big.bin"] = sha256Hex([]byte("something else"))
	dir := t.TempDir()
	err := Fetch(context.Background(), dir, hub.opts(hubFile("m/big.bin", "big.bin", true)))
	var ce *ChecksumError
	if !errors.As(err, &ce) {
		t.Fatalf("want a ChecksumError, got %v", err)
	}
	msg := err.Error()
	for _, s := range []string{"m/big.bin", sha256Hex([]byte("something else")), sha256Hex(big)} {
		if !strings.Contains(msg, s) {
			t.Errorf("error does not name %s: %s", s, msg)
		}
	}
	for _, p := range []string{"big.bin", "big.bin.part"} {
		if _, err := os.Stat(filepath.Join(dir, "m", p)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: %v, want it gone", p, err)
		}
	}
	if n := len(hub.rangesFor("/cdn/big.bin")); n != 1 {
		t.Errorf("%d downloads; a checksum mismatch must not be retried", n)
	}

	// A pinned digest the hub contradicts fails before the body is read.
	hub2 := newFakeHub(t)
	hub2.lfs["big.bin"] = big
	f := hubFile("big.bin", "big.bin", true)
	f.SHA256 = strings.Repeat("0", 64)
	dir2 := t.TempDir()
	err = Fetch(context.Background(), dir2, hub2.opts(f))
	if !errors.As(err, &ce) || ce.Want != f.SHA256 || !strings.Contains(ce.Got, sha256Hex(big)) {
		t.Fatalf("pinned digest: %v", err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir2, "*")); len(m) != 0 {
		t.Errorf("left %v", m)
	}
}

func TestFetchDirectURLPinnedPrefix(t *testing.T) {
	hub := newFakeHub(t)
	c := randomBytes(3000, 7)
	hub.lfs["s3fd.pth"] = c
	good := File{Path: "s3fd/s3fd.pth", Weights: true, Kind: weights.KindS3FD, URL: hub.srv.URL + "/direct/s3fd.pth", SHA256: sha256Hex(c)[:10]}
	dir := t.TempDir()
	var verified string
	opts := hub.opts(good)
	opts.Progress = func(p FetchProgress) {
		if p.Phase == FetchDone {
			verified = p.Verified
		}
	}
	if err := Fetch(context.Background(), dir, opts); err != nil {
		t.Fatal(err)
	}
	if verified != "sha256" {
		t.Errorf("verified %q", verified)
	}
	// A pinned size the server contradicts fails before the body is read.
	sized := good
	sized.Path, sized.Size = "s3fd/sized.pth", int64(len(c))+1
	err := Fetch(context.Background(), dir, hub.opts(sized))
	var ce *ChecksumError
	if !errors.As(err, &ce) || ce.Algorithm != "size" || ce.Got != fmt.Sprint(len(c)) {
		t.Fatalf("size mismatch: %v", err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "s3fd", "sized.pth*")); len(m) != 0 {
		t.Errorf("left %v", m)
	}
	bad := good
	bad.Path, bad.SHA256 = "s3fd/other.pth", "619a316812"
	err = Fetch(context.Background(), dir, hub.opts(bad))
	if !errors.As(err, &ce) || ce.Want != "619a316812" || ce.Got != sha256Hex(c) || !strings.Contains(err.Error(), bad.URL) {
		t.Fatalf("prefix mismatch: %v", err)
	}
}

func TestFetchNotFound(t *testing.T) {
	hub := newFakeHub(t)
	hub.small["ok.json"] = []byte("{}")
	dir := t.TempDir()
	missing := hubFile("m/missing.bin", "missing.bin", true)
	err := Fetch(context.Background(), dir, hub.opts(missing, hubFile("m/ok.json", "ok.json", false)))
	var he *HTTPError
	if !errors.As(err, &he) || he.StatusCode != http.StatusNotFound {
		t.Fatalf("want a 404 HTTPError, got %v", err)
	}
	if url := missing.DownloadURL(hub.srv.URL); !strings.Contains(err.Error(), url) || !strings.Contains(err.Error(), "m/missing.bin") {
		t.Errorf("error does not name %s: %v", url, err)
	}
	if n := len(hub.rangesFor("/org/repo/resolve/main/missing.bin")); n != 1 {
		t.Errorf("%d requests for a 404; want no retry", n)
	}
	// The other file was fetched all the same.
	if got := readFile(t, filepath.Join(dir, "m", "ok.json")); string(got) != "{}" {
		t.Errorf("ok.json = %q", got)
	}
}

func TestFetchRetriesServerErrors(t *testing.T) {
	hub := newFakeHub(t)
	big := randomBytes(1000, 8)
	hub.lfs["big.bin"] = big
	fails := 2
	hub.cdn = func(w http.ResponseWriter, r *http.Request, c []byte) bool {
		if fails > 0 {
			fails--
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return true
		}
		return false
	}
	dir := t.TempDir()
	if err := Fetch(context.Background(), dir, hub.opts(hubFile("big.bin", "big.bin", true))); err != nil {
		t.Fatal(err)
	}
	// With one attempt the 503 is the answer.
	fails = 1
	opts := hub.opts(hubFile("again.bin", "big.bin", true))
	opts.Attempts = 1
	var he *HTTPError
	if err := Fetch(context.Background(), dir, opts); !errors.As(err, &he) || he.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("one attempt: %v", err)
	}
}

func TestFetchCancelKeepsPartForResume(t *testing.T) {
	hub := newFakeHub(t)
	big := randomBytes(3<<20, 9)
	hub.lfs["big.bin"] = big
	stall := true
	hub.cdn = func(w http.ResponseWriter, r *http.Request, c []byte) bool {
		if !stall {
			return false
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(c)))
		w.Write(c[:2<<20])
		w.(http.Flusher).Flush()
		<-r.Context().Done() // hold the rest until the client gives up
		return true
	}
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := hub.opts(hubFile("big.bin", "big.bin", true))
	opts.Progress = func(p FetchProgress) {
		if p.Phase == FetchDownload && p.Done >= 1<<20 {
			cancel()
		}
	}
	err := Fetch(ctx, dir, opts)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("want context.Canceled, got %v", err)
	}
	st, err := os.Stat(filepath.Join(dir, "big.bin.part"))
	if err != nil || st.Size() == 0 {
		t.Fatalf(".part after cancel: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "big.bin")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("final file after cancel: %v", err)
	}
	stall = false
	if err := Fetch(context.Background(), dir, hub.opts(hubFile("big.bin", "big.bin", true))); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dir, "big.bin")); !bytes.Equal(got, big) {
		t.Fatal("content differs after resuming")
	}
	if r := hub.rangesFor("/cdn/big.bin"); len(r) != 2 || r[1] != fmt.Sprintf("bytes=%d-", st.Size()) {
		t.Fatalf("ranges %q; want the second to resume at %d", r, st.Size())
	}
}

func TestFetchEndpoint(t *testing.T) {
	f := hubFile("x", "dir/a b.json", false)
	t.Setenv("HF_ENDPOINT", "https://mirror.example/")
	ft, err := newFetcher(t.TempDir(), FetchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := f.DownloadURL(ft.endpoint); got != "https://mirror.example/org/repo/resolve/main/dir/a%20b.json" {
		t.Errorf("URL with HF_ENDPOINT = %s", got)
	}
	t.Setenv("HF_ENDPOINT", "")
	if ft, _ := newFetcher(t.TempDir(), FetchOptions{}); ft.endpoint != DefaultEndpoint {
		t.Errorf("default endpoint %s", ft.endpoint)
	}
	if _, err := newFetcher(t.TempDir(), FetchOptions{Endpoint: "ftp://x"}); err == nil {
		t.Error("an ftp endpoint was accepted")
	}
	files, _ := Files(V15)
	for _, f := range files {
		u := f.DownloadURL(DefaultEndpoint)
		if !strings.HasPrefix(u, "https://") || !strings.HasSuffix(u, filepath.Base(f.Path)) {
			t.Errorf("%s downloads from %s", f.Path, u)
		}
	}
}

func TestParseContentRange(t *testing.T) {
	for _, c := range []struct {
		in           string
		start, total int64
		ok           bool
	}{
		{"bytes 10-99/100", 10, 100, true},
		{"bytes */100", -1, 100, true},
		{"bytes 10-99/*", 0, 0, false},
		{"items 1-2/3", 0, 0, false},
		{"", 0, 0, false},
	} {
		start, total, ok := parseContentRange(c.in)
		if ok != c.ok || (ok && (start != c.start || total != c.total)) {
			t.Errorf("parseContentRange(%q) = %d, %d, %v", c.in, start, total, ok)
		}
	}
	if etagDigest(`W/"ABCDEF"`) != "abcdef" || etagDigest(`"3a-5f"`) != "" {
		t.Error("etagDigest")
	}
}

// TestFetchResumesAfterStalledConnection: a CDN that sends half the file
// and then nothing, holding the connection open, would hang the download
// forever; the stall timeout ends the attempt and the next one resumes.
func TestFetchResumesAfterStalledConnection(t *testing.T) {
	hub := newFakeHub(t)
	big := randomBytes(2<<20, 3)
	hub.lfs["big.bin"] = big
	release := make(chan struct{})
	defer close(release)
	var stalled bool
	hub.cdn = func(w http.ResponseWriter, r *http.Request, c []byte) bool {
		if stalled {
			return false
		}
		stalled = true
		w.Header().Set("Content-Length", fmt.Sprint(len(c)))
		w.WriteHeader(http.StatusOK)
		w.Write(c[:len(c)/2])
		w.(http.Flusher).Flush()
		select { // silence, with the connection open
		case <-release:
		case <-r.Context().Done():
		}
		return true
	}
	dir := t.TempDir()
	opts := hub.opts(hubFile("big.bin", "big.bin", true))
	opts.StallTimeout = 300 * time.Millisecond
	var retries []error
	opts.Progress = func(p FetchProgress) {
		if p.Phase == FetchRetry {
			retries = append(retries, p.Err)
		}
	}
	if err := Fetch(context.Background(), dir, opts); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dir, "big.bin")); !bytes.Equal(got, big) {
		t.Fatal("content differs after the resume")
	}
	if len(retries) != 1 || !strings.Contains(retries[0].Error(), "nothing received for 300ms") {
		t.Fatalf("retries %v; want one, after the stall", retries)
	}
	ranges := hub.rangesFor("/cdn/big.bin")
	if len(ranges) != 2 || ranges[1] == "" || ranges[1] == "bytes=0-" {
		t.Fatalf("CDN requests' ranges: %q; want a full request, then a resume", ranges)
	}
}

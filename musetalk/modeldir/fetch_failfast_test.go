package modeldir

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/avatargen/musetalk/musetalk/model/weights"
)

// countingTransport counts the requests sent to each host (host:port).
type countingTransport struct {
	base  http.RoundTripper
	mu    sync.Mutex
	hosts map[string]int
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.hosts[r.URL.Host]++
	c.mu.Unlock()
	return c.base.RoundTrip(r)
}

func (c *countingTransport) count(host string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hosts[host]
}

// countingClient is a client without proxies that counts its requests per
// host; a non-nil resolver replaces the system's.
func countingClient(resolver *net.Resolver) (*http.Client, *countingTransport) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	if resolver != nil {
		tr.DialContext = (&net.Dialer{Resolver: resolver}).DialContext
	}
	ct := &countingTransport{base: tr, hosts: map[string]int{}}
	return &http.Client{Transport: ct}, ct
}

// nxdomainResolver resolves through a DNS server of its own that answers
// every query with NXDOMAIN, so a name fails to resolve exactly as an
// unknown name does, without the network.
func nxdomainResolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
		client, server := net.Pipe()
		go answerNXDOMAIN(server)
		return client, nil
	}}
}

// answerNXDOMAIN reads one DNS query framed as over TCP (a net.Pipe is a
// stream) and answers "no such name".
func answerNXDOMAIN(c net.Conn) {
	defer c.Close()
	var n [2]byte
	if _, err := io.ReadFull(c, n[:]); err != nil {
		return
	}
	q := make([]byte, binary.BigEndian.Uint16(n[:]))
	if _, err := io.ReadFull(c, q); err != nil || len(q) < 12 {
		return
	}
	end := 12 // the question: length-prefixed labels, a zero, type and class
	for end < len(q) && q[end] != 0 {
		end += int(q[end]) + 1
	}
	end += 5
	if end > len(q) {
		return
	}
	resp := append([]byte(nil), q[:end]...)
	resp[2] = 0x80 | q[2]&0x01 // a response; recursion desired as asked
	resp[3] = 0x80 | 3         // recursion available; NXDOMAIN
	binary.BigEndian.PutUint16(resp[4:], 1)
	clear(resp[6:12]) // no answer, authority or additional records
	c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(resp))), resp...))
}

// dirEntries lists every file and directory under dir, slash-separated.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out = append(out, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func TestFetchUnresolvableHostFailsFast(t *testing.T) {
	hub := newFakeHub(t)
	c := randomBytes(3000, 11)
	hub.lfs["other.pth"] = c
	client, counts := countingClient(nxdomainResolver())
	files := []File{
		hubFile("m/a.json", "a.json", false),
		hubFile("m/b.bin", "b.bin", true),
		// From another host, which answers: it is still fetched.
		{Path: "o/other.pth", Weights: true, URL: hub.srv.URL + "/direct/other.pth", SHA256: sha256Hex(c)},
		hubFile("m/c.bin", "c.bin", true),
	}
	dir := t.TempDir()
	err := Fetch(context.Background(), dir, FetchOptions{Endpoint: "http://hub.invalid", Client: client, Files: files, RetryDelay: time.Millisecond})
	if err == nil {
		t.Fatal("Fetch from an unresolvable host succeeded")
	}
	if n := counts.count("hub.invalid"); n != 1 {
		t.Errorf("%d requests to hub.invalid; want 1: a name that does not resolve is neither retried nor tried for the other files", n)
	}
	msg := err.Error()
	if n := strings.Count(msg, "no such host"); n != 1 {
		t.Errorf("the failure is reported %d times, want once:\n%s", n, msg)
	}
	for _, s := range []string{"hub.invalid", "m/a.json", "m/b.bin", "m/c.bin"} {
		if !strings.Contains(msg, s) {
			t.Errorf("the error does not name %s:\n%s", s, msg)
		}
	}
	if got := dirEntries(t, dir); strings.Join(got, " ") != "o o/other.pth" {
		t.Errorf("the directory holds %q; want only the file from the other host", got)
	}
	var ue *UnreachableError
	if !errors.As(err, &ue) || ue.Host != "hub.invalid" || ue.File != "m/a.json" || strings.Join(ue.Skipped, " ") != "m/b.bin m/c.bin" {
		t.Errorf("want an UnreachableError for hub.invalid met by m/a.json, skipping m/b.bin and m/c.bin; got %#v", ue)
	}
}

func TestFetchConnectionRefusedFailsFast(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: connections are refused
	client, counts := countingClient(nil)
	files := []File{hubFile("m/a.json", "a.json", false), hubFile("m/b.bin", "b.bin", true), hubFile("m/c.bin", "c.bin", true)}
	dir := t.TempDir()
	var reports []string
	err = Fetch(context.Background(), dir, FetchOptions{Endpoint: "http://" + addr, Client: client, Files: files, RetryDelay: time.Millisecond,
		Progress: func(p FetchProgress) {
			reports = append(reports, p.File+" "+string(p.Phase))
			if (p.Phase == FetchStart) != (p.URL != "") || (p.Phase == FetchFailed) != (p.Err != nil) {
				t.Errorf("report %+v", p)
			}
		}})
	if err == nil {
		t.Fatal("Fetch from a closed port succeeded")
	}
	if n := counts.count(addr); n != 1 {
		t.Errorf("%d requests to a host that refuses connections; want 1", n)
	}
	if n := strings.Count(err.Error(), "connection refused"); n != 1 {
		t.Errorf("the refusal is reported %d times, want once:\n%v", n, err)
	}
	if got := dirEntries(t, dir); len(got) != 0 {
		t.Errorf("left %q", got)
	}
	// The first file starts and fails; the skipped ones are not reported.
	if got := strings.Join(reports, ", "); got != "m/a.json start, m/a.json failed" {
		t.Errorf("progress reports: %s", got)
	}
}

func TestFetchTLSFailureNotRetried(t *testing.T) {
	served := 0
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { served++ }))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
	srv.StartTLS()
	defer srv.Close()
	client, counts := countingClient(nil) // does not trust the test server's certificate
	files := []File{hubFile("m/a.json", "a.json", false), hubFile("m/b.bin", "b.bin", true)}
	dir := t.TempDir()
	err := Fetch(context.Background(), dir, FetchOptions{Endpoint: srv.URL, Client: client, Files: files, RetryDelay: time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("want a certificate error, got %v", err)
	}
	host := strings.TrimPrefix(srv.URL, "https://")
	if n := counts.count(host); n != 1 || served != 0 {
		t.Errorf("%d requests (%d served) to a host whose certificate is not trusted; want 1 (0)", n, served)
	}
	if got := dirEntries(t, dir); len(got) != 0 {
		t.Errorf("left %q", got)
	}
}

func TestFetchPermanentAnswersNotRetried(t *testing.T) {
	for _, tc := range []struct {
		name  string
		serve func(w http.ResponseWriter, r *http.Request)
		want  string
	}{
		{"401", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", http.StatusUnauthorized) }, "401"},
		{"403", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", http.StatusForbidden) }, "403"},
		{"bad redirect", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Location", "ftp://elsewhere/f")
			w.WriteHeader(http.StatusFound)
		}, "ftp://elsewhere/f"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			requests := 0
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				requests++
				mu.Unlock()
				tc.serve(w, r)
			}))
			defer srv.Close()
			dir := t.TempDir()
			err := Fetch(context.Background(), dir, FetchOptions{Endpoint: srv.URL, Client: srv.Client(),
				Files: []File{hubFile("m/a.bin", "a.bin", true)}, RetryDelay: time.Millisecond})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error naming %q, got %v", tc.want, err)
			}
			if requests != 1 {
				t.Errorf("%d requests; want 1, no retry", requests)
			}
			if got := dirEntries(t, dir); len(got) != 0 {
				t.Errorf("left %q", got)
			}
		})
	}
}

func TestFetchRetriesTooManyRequests(t *testing.T) {
	hub := newFakeHub(t)
	hub.lfs["big.bin"] = randomBytes(1000, 12)
	fails := 2
	hub.cdn = func(w http.ResponseWriter, r *http.Request, c []byte) bool {
		if fails > 0 {
			fails--
			http.Error(w, "slow down", http.StatusTooManyRequests)
			return true
		}
		return false
	}
	opts := hub.opts(hubFile("big.bin", "big.bin", true))
	var retries []int
	opts.Progress = func(p FetchProgress) {
		if p.Phase == FetchRetry {
			if p.Err == nil || !strings.Contains(p.Err.Error(), "429") {
				t.Errorf("retry report without the 429: %+v", p)
			}
			retries = append(retries, p.Attempt)
		}
	}
	if err := Fetch(context.Background(), t.TempDir(), opts); err != nil {
		t.Fatalf("429 twice, then the file: %v", err)
	}
	if fmt.Sprint(retries) != "[1 2]" {
		t.Errorf("retry reports after attempts %v, want [1 2]", retries)
	}
}

func TestFetchS3FDURL(t *testing.T) {
	hub := newFakeHub(t)
	c := randomBytes(5000, 14)
	hub.lfs["s3fd.pth"] = c
	official := File{Path: "s3fd/s3fd.pth", Weights: true, Kind: weights.KindS3FD, URL: "https://official.invalid/s3fd.pth", SHA256: sha256Hex(c)[:10], Size: int64(len(c))}
	dir := t.TempDir()
	opts := hub.opts(official)
	opts.S3FDURL = hub.srv.URL + "/direct/s3fd.pth"
	var from string
	opts.Progress = func(p FetchProgress) {
		if p.Phase == FetchStart {
			from = p.URL
		}
	}
	if err := Fetch(context.Background(), dir, opts); err != nil {
		t.Fatal(err)
	}
	if from != opts.S3FDURL || len(hub.rangesFor("/direct/s3fd.pth")) != 1 {
		t.Errorf("fetched from %s (%d requests to the mirror)", from, len(hub.rangesFor("/direct/s3fd.pth")))
	}
	// The pinned digest holds for the mirror too.
	pinned := official
	pinned.Path, pinned.SHA256 = "s3fd/other.pth", "619a316812"
	opts.Files = []File{pinned}
	var ce *ChecksumError
	if err := Fetch(context.Background(), dir, opts); !errors.As(err, &ce) || ce.Want != "619a316812" || !strings.Contains(err.Error(), opts.S3FDURL) {
		t.Errorf("a mirror's S3FD with another digest: %v", err)
	}
	// The default file list's S3FD comes from the official address unless
	// replaced, and a replacement must be an http(s) URL.
	files, _ := Files(V15)
	n := 0
	for _, f := range files {
		if f.Kind == weights.KindS3FD {
			n++
			if f.URL != DefaultS3FDURL || f.Repo != "" {
				t.Errorf("S3FD from %s", f.URL)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d S3FD files", n)
	}
	for _, bad := range []string{"ftp://x/s3fd.pth", "s3fd.pth", "http://"} {
		if _, err := newFetcher(t.TempDir(), FetchOptions{S3FDURL: bad}); err == nil || !strings.Contains(err.Error(), "S3FD") {
			t.Errorf("S3FDURL %q: %v", bad, err)
		}
	}
}

func TestFetchRemovesEmptyPartKeepsStarted(t *testing.T) {
	hub := newFakeHub(t)
	big := randomBytes(1<<20, 13)
	hub.lfs["empty.bin"] = big
	hub.lfs["half.bin"] = big
	hub.cdn = func(w http.ResponseWriter, r *http.Request, c []byte) bool {
		w.Header().Set("Content-Length", fmt.Sprint(len(c)))
		w.WriteHeader(http.StatusOK)
		if strings.HasSuffix(r.URL.Path, "half.bin") {
			w.Write(c[:len(c)/2])
		}
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // drop the connection
	}
	dir := t.TempDir()
	opts := hub.opts(hubFile("m/empty.bin", "empty.bin", true), hubFile("m/half.bin", "half.bin", true))
	opts.Attempts = 2
	err := Fetch(context.Background(), dir, opts)
	if err == nil {
		t.Fatal("Fetch of dropped downloads succeeded")
	}
	if n := len(hub.rangesFor("/cdn/empty.bin")); n != 2 {
		t.Errorf("%d downloads of a dropped file; want 2 (a dropped connection is retried)", n)
	}
	if got := dirEntries(t, dir); strings.Join(got, " ") != "m m/half.bin.part" {
		t.Errorf("the directory holds %q; want only the started download's .part", got)
	}
	if st, err := os.Stat(filepath.Join(dir, "m", "half.bin.part")); err != nil || st.Size() != int64(len(big)/2) {
		t.Errorf("half.bin.part: %v", err)
	}
	if errors.Is(err, context.Canceled) {
		t.Errorf("unexpected %v", err)
	}
}

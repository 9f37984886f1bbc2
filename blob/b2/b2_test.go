package b2_test

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/avatargen/musetalk/blob"
	"github.com/avatargen/musetalk/blob/b2"
	"github.com/avatargen/musetalk/blob/b2test"
	"github.com/avatargen/musetalk/blob/blobtest"
)

const testPart = 64 << 10 // client part size in most tests

// newServer starts a test server that accepts small parts.
func newServer(t *testing.T) *b2test.Server {
	t.Helper()
	srv := b2test.NewServer(b2test.Config{MinPartSize: 16 << 10})
	t.Cleanup(srv.Close)
	return srv
}

func testConfig(srv *b2test.Server) b2.Config {
	return b2.Config{
		KeyID: srv.KeyID, AppKey: srv.AppKey, Bucket: srv.Bucket, Endpoint: srv.URL,
		PartSize: testPart, ConcurrentUploads: 3,
		MaxRetries: 10, RetryBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond,
	}
}

func newStore(t *testing.T, srv *b2test.Server, mod ...func(*b2.Config)) *b2.B2 {
	t.Helper()
	cfg := testConfig(srv)
	for _, m := range mod {
		m(&cfg)
	}
	s, err := b2.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("b2.New: %v", err)
	}
	t.Cleanup(func() {
		s.Close()
		if u := srv.Unfinished(srv.Bucket); len(u) > 0 {
			t.Errorf("unfinished large files left in the bucket: %v", u)
		}
	})
	return s
}

func put(t *testing.T, s blob.Store, key string, data []byte) {
	t.Helper()
	if err := s.Put(context.Background(), key, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("Put(%q, %d bytes): %v", key, len(data), err)
	}
}

func get(ctx context.Context, s blob.Store, key string) ([]byte, error) {
	rc, err := s.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func mustGet(t *testing.T, s blob.Store, key string, want []byte) {
	t.Helper()
	got, err := get(context.Background(), s, key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Get(%q): %d bytes that differ from the %d put", key, len(got), len(want))
	}
}

func TestConformance(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store {
		return newStore(t, newServer(t))
	}, testPart, testPart+1, 5*testPart+123)
}

// Parts of B2's real minimum size, against a server enforcing it.
func TestLargeObjectRealPartSize(t *testing.T) {
	srv := b2test.NewServer(b2test.Config{})
	t.Cleanup(srv.Close)
	s := newStore(t, srv, func(c *b2.Config) { c.PartSize = 5_000_000 })
	data := blobtest.Data(11_000_000, 11)
	put(t, s, "big/11mb.bin", data)
	if n := srv.Calls("b2_upload_part"); n != 3 {
		t.Errorf("b2_upload_part calls = %d, want 3 parts", n)
	}
	if n := srv.Calls("b2_upload_file"); n != 0 {
		t.Errorf("b2_upload_file calls = %d, want 0 for a large file", n)
	}
	if got, ok := srv.Object(srv.Bucket, "big/11mb.bin"); !ok || !bytes.Equal(got, data) {
		t.Fatal("server holds different data than was put")
	}
	mustGet(t, s, "big/11mb.bin", data)
	info, err := s.Stat(context.Background(), "big/11mb.bin")
	if err != nil || info.Size != int64(len(data)) {
		t.Fatalf("Stat = %+v, %v", info, err)
	}
}

// Stat reports the SHA-1 B2 recorded, for simple and large files alike,
// so that blob.Digest needs no download (the control plane checks a
// completing attempt's object with it).
func TestStatReportsRecordedSHA1(t *testing.T) {
	srv := newServer(t)
	s := newStore(t, srv)
	for _, n := range []int{1, testPart, 3*testPart + 7} {
		data := blobtest.Data(n, uint64(n))
		key := fmt.Sprintf("sha/%d", n)
		put(t, s, key, data)
		sum := sha1.Sum(data)
		info, err := s.Stat(context.Background(), key)
		if err != nil || info.SHA1 != hex.EncodeToString(sum[:]) {
			t.Fatalf("Stat(%s) = %+v, %v; want SHA-1 %x", key, info, err, sum)
		}
	}
	before := srv.Calls("b2_download_file_by_name")
	if _, err := blob.Digest(context.Background(), s, "sha/1"); err != nil {
		t.Fatal(err)
	}
	if n := srv.Calls("b2_download_file_by_name"); n != before {
		t.Errorf("Digest downloaded the object (%d downloads); B2's record should do", n-before)
	}
}

func TestSizeAtPartSizeIsOneUpload(t *testing.T) {
	srv := newServer(t)
	s := newStore(t, srv)
	put(t, s, "edge", blobtest.Data(testPart, 1))
	if srv.Calls("b2_upload_file") != 1 || srv.Calls("b2_start_large_file") != 0 {
		t.Fatalf("object of exactly PartSize: calls %v, want one b2_upload_file", srv.AllCalls())
	}
	put(t, s, "edge2", blobtest.Data(testPart+1, 2))
	if srv.Calls("b2_start_large_file") != 1 || srv.Calls("b2_upload_part") != 2 {
		t.Fatalf("object of PartSize+1: calls %v, want a large file of 2 parts", srv.AllCalls())
	}
}

// Each operation fails with 503 a few times, then works: data stays intact.
func TestTransient503sAreRetried(t *testing.T) {
	small, large := blobtest.Data(1000, 1), blobtest.Data(3*testPart+5, 2)
	cases := []struct {
		op  string
		run func(t *testing.T, s *b2.B2)
	}{
		{"b2_upload_file", func(t *testing.T, s *b2.B2) { put(t, s, "k", small); mustGet(t, s, "k", small) }},
		{"b2_get_upload_url", func(t *testing.T, s *b2.B2) { put(t, s, "k", small); mustGet(t, s, "k", small) }},
		{"b2_start_large_file", func(t *testing.T, s *b2.B2) { put(t, s, "k", large); mustGet(t, s, "k", large) }},
		{"b2_get_upload_part_url", func(t *testing.T, s *b2.B2) { put(t, s, "k", large); mustGet(t, s, "k", large) }},
		{"b2_upload_part", func(t *testing.T, s *b2.B2) { put(t, s, "k", large); mustGet(t, s, "k", large) }},
		{"b2_finish_large_file", func(t *testing.T, s *b2.B2) { put(t, s, "k", large); mustGet(t, s, "k", large) }},
		{"b2_download_file_by_name", func(t *testing.T, s *b2.B2) { mustGet(t, s, "seed", small) }},
		{"b2_list_file_names", func(t *testing.T, s *b2.B2) {
			if info, err := s.Stat(context.Background(), "seed"); err != nil || info.Size != int64(len(small)) {
				t.Fatalf("Stat = %+v, %v", info, err)
			}
		}},
		{"b2_list_file_versions", func(t *testing.T, s *b2.B2) {
			if err := s.Delete(context.Background(), "seed"); err != nil {
				t.Fatal(err)
			}
		}},
		{"b2_delete_file_version", func(t *testing.T, s *b2.B2) {
			if err := s.Delete(context.Background(), "seed"); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range cases {
		for _, status := range []int{503, 500, 429} {
			t.Run(fmt.Sprintf("%s/%d", tc.op, status), func(t *testing.T) {
				srv := newServer(t)
				s := newStore(t, srv)
				if err := srv.PutObject(srv.Bucket, "seed", small, nil); err != nil {
					t.Fatal(err)
				}
				srv.Inject(b2test.Fault{Op: tc.op, Status: status, Count: 3})
				tc.run(t, s)
				if n := srv.Calls(tc.op); n < 4 {
					t.Fatalf("%s called %d times, want the 3 failures and a success", tc.op, n)
				}
			})
		}
	}
}

// A B2 that keeps failing makes calls fail with ErrRetriesExhausted after
// a bounded number of requests, storing nothing.
func TestPersistentFailureGivesUp(t *testing.T) {
	for _, tc := range []struct {
		op  string
		run func(s *b2.B2) error
	}{
		{"b2_upload_file", func(s *b2.B2) error { return s.Put(context.Background(), "new", strings.NewReader("abc"), 3) }},
		{"b2_upload_part", func(s *b2.B2) error {
			return s.Put(context.Background(), "new", bytes.NewReader(blobtest.Data(3*testPart, 1)), -1)
		}},
		{"b2_list_file_names", func(s *b2.B2) error { _, err := s.Stat(context.Background(), "seed"); return err }},
		{"b2_download_file_by_name", func(s *b2.B2) error { _, err := get(context.Background(), s, "seed"); return err }},
	} {
		t.Run(tc.op, func(t *testing.T) {
			srv := newServer(t)
			s := newStore(t, srv, func(c *b2.Config) { c.MaxRetries = 3 })
			put(t, s, "seed", []byte("seed"))
			srv.ResetCalls()
			srv.Inject(b2test.Fault{Op: tc.op, Status: 503})
			start := time.Now()
			err := tc.run(s)
			if !errors.Is(err, b2.ErrRetriesExhausted) {
				t.Fatalf("error = %v, want ErrRetriesExhausted", err)
			}
			if !strings.Contains(err.Error(), "503") {
				t.Errorf("error %q does not say what failed (503)", err)
			}
			if n := srv.Calls(tc.op); n > 3+3 {
				t.Errorf("%s called %d times with MaxRetries 3", tc.op, n)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("giving up took %v", d)
			}
			if _, ok := srv.Object(srv.Bucket, "new"); ok {
				t.Error("a failed Put stored an object")
			}
		})
	}
}

func TestDroppedConnectionsAreRetried(t *testing.T) {
	srv := newServer(t)
	s := newStore(t, srv)
	data := blobtest.Data(2*testPart+10, 3)
	srv.Inject(b2test.Fault{Op: "b2_start_large_file", Drop: true, Count: 2})
	srv.Inject(b2test.Fault{Op: "b2_download_file_by_name", Drop: true, Count: 2})
	srv.Inject(b2test.Fault{Op: "b2_list_file_names", Drop: true, Count: 2})
	put(t, s, "k", data)
	mustGet(t, s, "k", data)
	if _, err := s.Stat(context.Background(), "k"); err != nil {
		t.Fatal(err)
	}
}

// Tokens expire in the middle of a large upload and of a download; both
// complete after one re-authorization.
func TestExpiredTokensReauthorize(t *testing.T) {
	srv := newServer(t)
	s := newStore(t, srv, func(c *b2.Config) { c.ConcurrentUploads = 1 })
	data := blobtest.Data(4*testPart, 4)
	srv.ResetCalls()
	srv.Inject(b2test.Fault{Op: "b2_upload_part", Skip: 1, Count: 1, ExpireTokens: true})
	put(t, s, "k", data)
	if n := srv.Calls("b2_authorize_account"); n != 1 {
		t.Errorf("b2_authorize_account calls during the upload = %d, want 1", n)
	}
	// The first URL, the one refused for the expired account token, and
	// its replay: the part token expired too, so blazer needed a new URL.
	if n := srv.Calls("b2_get_upload_part_url"); n != 3 {
		t.Errorf("b2_get_upload_part_url calls = %d, want 3", n)
	}
	if n := srv.Calls("b2_upload_part"); n != 5 {
		t.Errorf("b2_upload_part calls = %d, want 4 parts and 1 refused", n)
	}

	srv.ResetCalls()
	srv.Inject(b2test.Fault{Op: "b2_download_file_by_name", Count: 1, ExpireTokens: true})
	mustGet(t, s, "k", data)
	if n := srv.Calls("b2_authorize_account"); n != 1 {
		t.Errorf("b2_authorize_account calls during the download = %d, want 1", n)
	}
}

// Many calls meeting one expired token re-authorize once between them.
func TestConcurrentReauthorizeOnce(t *testing.T) {
	srv := newServer(t)
	s := newStore(t, srv)
	data := blobtest.Data(5000, 5)
	put(t, s, "k", data)
	srv.ExpireTokens()
	srv.ResetCalls()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				if _, err := s.Stat(context.Background(), "k"); err != nil {
					t.Error(err)
				}
				return
			}
			got, err := get(context.Background(), s, "k")
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("Get: %d bytes, %v", len(got), err)
			}
		}()
	}
	wg.Wait()
	if n := srv.Calls("b2_authorize_account"); n != 1 {
		t.Fatalf("b2_authorize_account calls = %d, want 1", n)
	}
	// Small uploads use pooled upload URLs whose tokens expired too.
	put(t, s, "k2", data)
	mustGet(t, s, "k2", data)
}

func TestTruncatedDownloadResumesSameVersion(t *testing.T) {
	srv := newServer(t)
	s := newStore(t, srv)
	data := blobtest.Data(200_000, 6)
	put(t, s, "k", data)
	srv.Inject(b2test.Fault{Op: "b2_download_file_by_name", Truncate: true, TruncateAfter: 70_000, Count: 1})
	srv.Inject(b2test.Fault{Op: "b2_download_file_by_id", Truncate: true, TruncateAfter: 50_000, Count: 1})
	mustGet(t, s, "k", data)
	if n := srv.Calls("b2_download_file_by_id"); n != 2 {
		t.Fatalf("b2_download_file_by_id calls = %d, want 2 resumptions", n)
	}

	// The object is replaced while a download is broken: no mixing.
	srv.Inject(b2test.Fault{Op: "b2_download_file_by_name", Truncate: true, TruncateAfter: 1000, Count: 1})
	rc, err := s.Get(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	buf := make([]byte, 1000)
	if _, err := io.ReadFull(rc, buf); err != nil {
		t.Fatal(err)
	}
	put(t, s, "k", blobtest.Data(200_000, 7))
	if err := s.Delete(context.Background(), "k"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(rc); !errors.Is(err, b2.ErrChanged) {
		t.Fatalf("reading on after the version was deleted: %v, want ErrChanged", err)
	}
}

func TestTruncatedForeverFails(t *testing.T) {
	srv := newServer(t)
	s := newStore(t, srv, func(c *b2.Config) { c.MaxRetries = 2 })
	data := blobtest.Data(100_000, 8)
	put(t, s, "k", data)
	srv.Inject(b2test.Fault{Op: "*", Truncate: true, TruncateAfter: 10})
	got, err := get(context.Background(), s, "k")
	if !errors.Is(err, b2.ErrRetriesExhausted) {
		t.Fatalf("error = %v, want ErrRetriesExhausted", err)
	}
	if !bytes.Equal(got, data[:len(got)]) {
		t.Fatal("bytes returned before the error are not a prefix of the object")
	}
}

func TestCorruptDownloadIsAnError(t *testing.T) {
	for _, size := range []int{1000, 3 * testPart} { // small (contentSha1) and large (large_file_sha1)
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			srv := newServer(t)
			s := newStore(t, srv)
			put(t, s, "k", blobtest.Data(size, 9))
			srv.Inject(b2test.Fault{Op: "b2_download_file_by_name", Corrupt: true, Count: 1})
			if _, err := get(context.Background(), s, "k"); !errors.Is(err, b2.ErrCorrupt) {
				t.Fatalf("reading a corrupted download: %v, want ErrCorrupt", err)
			}
		})
	}
}

func TestSlowServerHonoursDeadline(t *testing.T) {
	srv := newServer(t)
	s := newStore(t, srv)
	data := blobtest.Data(100_000, 10)
	put(t, s, "k", data)
	check := func(name string, f func(ctx context.Context) error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := f(ctx)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: error = %v, want context.DeadlineExceeded", name, err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("%s returned after %v, long past its deadline", name, d)
		}
	}
	srv.Inject(b2test.Fault{Op: "b2_list_file_names", Delay: 10 * time.Second, Count: 1})
	check("Stat", func(ctx context.Context) error { _, err := s.Stat(ctx, "k"); return err })
	srv.Inject(b2test.Fault{Op: "b2_download_file_by_name", BytesPerSecond: 20_000, Count: 1})
	check("Get", func(ctx context.Context) error { _, err := get(ctx, s, "k"); return err })
	srv.Inject(b2test.Fault{Op: "b2_upload_file", BytesPerSecond: 8000, Count: 1})
	check("Put", func(ctx context.Context) error {
		return s.Put(ctx, "slow", bytes.NewReader(data[:8000]), 8000)
	})
	srv.Inject(b2test.Fault{Op: "b2_upload_part", Delay: 10 * time.Second})
	check("Put large", func(ctx context.Context) error {
		return s.Put(ctx, "slow", bytes.NewReader(blobtest.Data(3*testPart, 1)), -1)
	})
	srv.ClearFaults()
	if _, ok := srv.Object(srv.Bucket, "slow"); ok {
		t.Error("a Put past its deadline stored an object")
	}
}

// A request that gets no response headers in time is retried.
func TestResponseTimeoutIsRetried(t *testing.T) {
	srv := newServer(t)
	s := newStore(t, srv, func(c *b2.Config) { c.ResponseHeaderTimeout = 100 * time.Millisecond })
	put(t, s, "k", []byte("x"))
	srv.ResetCalls()
	srv.Inject(b2test.Fault{Op: "b2_list_file_names", Delay: 2 * time.Second, Count: 1})
	if _, err := s.Stat(context.Background(), "k"); err != nil {
		t.Fatal(err)
	}
	if n := srv.Calls("b2_list_file_names"); n != 2 {
		t.Fatalf("b2_list_file_names calls = %d, want 2", n)
	}
}

// A failure starting a large file must not leave a truncated object: blazer's
// Writer.Close would upload the first chunk as the whole object.
func TestFailedLargeStartStoresNothing(t *testing.T) {
	srv := newServer(t)
	s := newStore(t, srv)
	old := []byte("old version")
	put(t, s, "k", old)
	srv.Inject(b2test.Fault{Op: "b2_start_large_file", Status: 400, Count: 1})
	err := s.Put(context.Background(), "k", bytes.NewReader(blobtest.Data(3*testPart, 1)), -1)
	if err == nil {
		t.Fatal("Put succeeded although b2_start_large_file failed")
	}
	mustGet(t, s, "k", old)
	if n := srv.Versions(srv.Bucket, "k"); n != 1 {
		t.Fatalf("versions of k = %d, want 1", n)
	}
}

// Failed and cancelled large uploads cancel their unfinished large file
// (newStore's cleanup checks none is left).
func TestFailedLargeUploadIsCancelled(t *testing.T) {
	srv := newServer(t)
	s := newStore(t, srv)
	srv.Inject(b2test.Fault{Op: "b2_upload_part", Skip: 1, Status: 400})
	err := s.Put(context.Background(), "k", bytes.NewReader(blobtest.Data(4*testPart, 1)), -1)
	if err == nil {
		t.Fatal("Put succeeded although a part upload failed")
	}
	if n := srv.Calls("b2_cancel_large_file"); n != 1 {
		t.Fatalf("b2_cancel_large_file calls = %d, want 1", n)
	}
	srv.ClearFaults()

	ctx, cancel := context.WithCancel(context.Background())
	srv.Inject(b2test.Fault{Op: "b2_upload_part", Skip: 1, Delay: 10 * time.Second})
	time.AfterFunc(300*time.Millisecond, cancel)
	err = s.Put(ctx, "k", bytes.NewReader(blobtest.Data(4*testPart, 1)), -1)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Put: %v, want context.Canceled", err)
	}
	if n := srv.Calls("b2_cancel_large_file"); n != 2 {
		t.Fatalf("b2_cancel_large_file calls = %d, want 2", n)
	}
	if _, ok := srv.Object(srv.Bucket, "k"); ok {
		t.Fatal("failed Puts stored an object")
	}
}

// B2 finishes the large file but the answer is lost: Put still succeeds,
// with one version.
func TestLostFinishResponse(t *testing.T) {
	srv := newServer(t)
	s := newStore(t, srv)
	data := blobtest.Data(3*testPart, 12)
	srv.Inject(b2test.Fault{Op: "b2_finish_large_file", DropResponse: true, Count: 1})
	put(t, s, "k", data)
	mustGet(t, s, "k", data)
	if n := srv.Versions(srv.Bucket, "k"); n != 1 {
		t.Fatalf("versions = %d, want 1", n)
	}
}

func TestNonSeekableInputIsSpooled(t *testing.T) {
	srv := newServer(t)
	spool := t.TempDir()
	s := newStore(t, srv, func(c *b2.Config) { c.SpoolDir = spool; c.PartSize = 1 << 20 })
	data := blobtest.Data(4<<20+100_000, 13) // over the 4 MiB kept in memory
	if err := s.Put(context.Background(), "k", io.MultiReader(bytes.NewReader(data)), -1); err != nil {
		t.Fatal(err)
	}
	mustGet(t, s, "k", data)
	if left, _ := os.ReadDir(spool); len(left) != 0 {
		t.Fatalf("spool files left: %v", left)
	}
	if err := s.Put(context.Background(), "k", io.MultiReader(bytes.NewReader(data)), int64(len(data))+1); err == nil {
		t.Fatal("Put with a wrong size succeeded")
	}
	if left, _ := os.ReadDir(spool); len(left) != 0 {
		t.Fatalf("spool files left after a failed Put: %v", left)
	}
}

func TestSeekableInputFromItsOffset(t *testing.T) {
	srv := newServer(t)
	s := newStore(t, srv)
	f, err := os.CreateTemp(t.TempDir(), "in")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data := blobtest.Data(3*testPart, 14)
	f.Write(data)
	f.Seek(100, io.SeekStart)
	if err := s.Put(context.Background(), "k", f, int64(len(data)-100)); err != nil {
		t.Fatal(err)
	}
	mustGet(t, s, "k", data[100:])
}

func TestDeleteRemovesEveryVersion(t *testing.T) {
	srv := newServer(t)
	s := newStore(t, srv)
	for i := range 3 {
		put(t, s, "k", blobtest.Data(100, uint64(i)))
	}
	put(t, s, "k.other", []byte("x"))
	if n := srv.Versions(srv.Bucket, "k"); n != 3 {
		t.Fatalf("versions = %d, want 3", n)
	}
	if err := s.Delete(context.Background(), "k"); err != nil {
		t.Fatal(err)
	}
	if n := srv.Versions(srv.Bucket, "k"); n != 0 {
		t.Fatalf("versions after Delete = %d, want 0", n)
	}
	if _, ok := srv.Object(srv.Bucket, "k.other"); !ok {
		t.Fatal("Delete of k removed k.other")
	}
}

func TestConcurrentLargePuts(t *testing.T) {
	srv := newServer(t)
	s := newStore(t, srv)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("c/%d", i)
			data := blobtest.Data(3*testPart+i, uint64(i))
			if err := s.Put(context.Background(), key, bytes.NewReader(data), -1); err != nil {
				t.Error(err)
				return
			}
			got, err := get(context.Background(), s, key)
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("Get(%s): %d bytes, %v", key, len(got), err)
			}
		}()
	}
	wg.Wait()
}

func TestNewErrors(t *testing.T) {
	srv := newServer(t)
	ctx := context.Background()
	fast := func(c b2.Config) b2.Config {
		c.MaxRetries, c.RetryBackoff, c.MaxBackoff = 2, time.Millisecond, 5*time.Millisecond
		return c
	}

	t.Run("WrongAppKey", func(t *testing.T) {
		cfg := fast(testConfig(srv))
		cfg.AppKey = "K-wrong-secret-123"
		_, err := b2.New(ctx, cfg)
		if !errors.Is(err, b2.ErrUnauthorized) {
			t.Fatalf("error = %v, want ErrUnauthorized", err)
		}
		msg := err.Error()
		if !strings.Contains(msg, cfg.KeyID) {
			t.Errorf("error %q does not name the key id", msg)
		}
		if strings.Contains(msg, cfg.AppKey) || strings.Contains(msg, srv.AppKey) {
			t.Errorf("error %q contains an application key", msg)
		}
	})
	t.Run("WrongKeyID", func(t *testing.T) {
		cfg := fast(testConfig(srv))
		cfg.KeyID = "no-such-key"
		if _, err := b2.New(ctx, cfg); !errors.Is(err, b2.ErrUnauthorized) || strings.Contains(err.Error(), srv.AppKey) {
			t.Fatalf("error = %v, want ErrUnauthorized without the key", err)
		}
	})
	t.Run("MissingBucket", func(t *testing.T) {
		cfg := fast(testConfig(srv))
		cfg.Bucket = "no-such-bucket"
		_, err := b2.New(ctx, cfg)
		if !errors.Is(err, b2.ErrNoBucket) || !strings.Contains(err.Error(), "no-such-bucket") {
			t.Fatalf("error = %v, want ErrNoBucket naming the bucket", err)
		}
	})
	t.Run("Unreachable", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		cfg := fast(testConfig(srv))
		cfg.Endpoint = "http://" + addr
		_, err = b2.New(ctx, cfg)
		if !errors.Is(err, b2.ErrRetriesExhausted) || !strings.Contains(err.Error(), "cannot reach") || !strings.Contains(err.Error(), addr) {
			t.Fatalf("error = %v, want ErrRetriesExhausted saying it cannot reach %s", err, addr)
		}
		if strings.Contains(err.Error(), srv.AppKey) {
			t.Fatalf("error %q contains the application key", err)
		}
	})
	t.Run("AuthorizeDeadline", func(t *testing.T) {
		srv.Inject(b2test.Fault{Op: "b2_authorize_account", Delay: 10 * time.Second, Count: 1})
		defer srv.ClearFaults()
		ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		if _, err := b2.New(ctx, testConfig(srv)); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("error = %v, want context.DeadlineExceeded", err)
		}
	})
	t.Run("BadConfig", func(t *testing.T) {
		for field, mod := range map[string]func(*b2.Config){
			"KeyID":    func(c *b2.Config) { c.KeyID = "" },
			"AppKey":   func(c *b2.Config) { c.AppKey = "" },
			"Bucket":   func(c *b2.Config) { c.Bucket = "" },
			"PartSize": func(c *b2.Config) { c.PartSize = 6_000_000_000 },
			"Endpoint": func(c *b2.Config) { c.Endpoint = "ftp://x" },
		} {
			cfg := testConfig(srv)
			mod(&cfg)
			if _, err := b2.New(ctx, cfg); err == nil || !strings.Contains(err.Error(), field) {
				t.Errorf("bad %s: error = %v, want one naming it", field, err)
			}
		}
	})
}

func TestConfigNeverShowsAppKey(t *testing.T) {
	cfg := b2.Config{KeyID: "kid", AppKey: "SECRET-app-key", Bucket: "b"}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("cfg", "b2", cfg)
	for _, s := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), logged.String()} {
		if strings.Contains(s, "SECRET") {
			t.Fatalf("application key shown: %s", s)
		}
		if !strings.Contains(s, "kid") {
			t.Fatalf("key id not shown: %s", s)
		}
	}
}

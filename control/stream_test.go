package control

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/avatargen/musetalk/blob"
	"github.com/avatargen/musetalk/protocol"
)

// publish runs a job to success with content as its result.
func (b *testBundle) publish(content []byte) protocol.JobView {
	b.t.Helper()
	job := b.submit(protocol.SubmitRequest{})
	b.heartbeat("w1", seedHeartbeat(protocol.WorkerIdle))
	a := b.claim("w1")
	b.upload(a, content)
	if status, data := b.complete(a); status != http.StatusOK {
		b.t.Fatalf("complete: %d %s", status, data)
	}
	return job
}

// streamWarnings returns the log lines about a failed object stream at
// WARN or above.
func streamWarnings(logs string) string {
	var out []string
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, "stream") && (strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR")) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// A client that cancels its download (or hangs up once it has what it
// wants) is no failure of the control plane: it is logged at DEBUG, never
// as WARN "streaming object failed ... context canceled".
func TestResultDownloadCancelledIsNotAWarning(t *testing.T) {
	t.Parallel()
	b := setup(t)
	content := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB: more than the socket buffers
	job := b.publish(content)

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", b.ts.URL+"/v1/jobs/"+job.ID+"/result", nil)
	req.Header.Set("Authorization", "Bearer "+testPublicKey)
	resp, err := b.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 1024)); err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	b.ts.Close() // waits for the handler to see the cancellation
	logs := b.logs.String()
	if w := streamWarnings(logs); w != "" {
		t.Errorf("a cancelled download was logged as a warning:\n%s", w)
	}
	if !strings.Contains(logs, "level=DEBUG") || !strings.Contains(logs, "client went away") {
		t.Errorf("no DEBUG line about the client going away:\n%s", logs)
	}
}

// A store that fails mid-stream is still a warning.
func TestResultStreamStoreFailureIsAWarning(t *testing.T) {
	t.Parallel()
	fs := &failingStore{}
	b := setup(t, func(c *Config) { fs.Store = c.Blob; c.Blob = fs })
	job := b.publish(bytes.Repeat([]byte("x"), 100))
	fs.armed.Store(true)
	req, _ := http.NewRequest("GET", b.ts.URL+"/v1/jobs/"+job.ID+"/result", nil)
	req.Header.Set("Authorization", "Bearer "+testPublicKey)
	resp, err := b.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || err == nil || len(data) >= 100 {
		t.Fatalf("download: %d, %d bytes, %v; want 200 cut short", resp.StatusCode, len(data), err)
	}
	b.ts.Close()
	if w := streamWarnings(b.logs.String()); !strings.Contains(w, "disk on fire") {
		t.Errorf("a store failure mid-stream was not logged as a warning:\n%s", b.logs.String())
	}
}

// failingStore's readers fail after 10 bytes once it is armed.
type failingStore struct {
	blob.Store
	armed atomic.Bool
}

func (f *failingStore) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	rc, err := f.Store.Get(ctx, key)
	if err != nil || !f.armed.Load() {
		return rc, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.MultiReader(io.LimitReader(rc, 10), errReader{}), rc}, nil
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errDiskOnFire }

var errDiskOnFire = &diskErr{}

type diskErr struct{}

func (*diskErr) Error() string { return "disk on fire" }

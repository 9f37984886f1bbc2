package loadgen_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/avatargen/musetalk/blob"
	"github.com/avatargen/musetalk/control"
	"github.com/avatargen/musetalk/control/loadgen"
	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/control/store/sqlite"
	"github.com/avatargen/musetalk/protocol"
)

const (
	internalKey = "bench-test-internal"
	publicKey   = "bench-test-public"
)

// newControl starts a control plane over SQLite and returns its store and
// server; wrap, if not nil, wraps its handler.
func newControl(t *testing.T, wrap func(http.Handler) http.Handler) (store.Store, *httptest.Server) {
	t.Helper()
	dir := t.TempDir()
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "control.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	bs, err := blob.NewDir(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bs.Close() })
	srv, err := control.New(control.Config{Store: st, Blob: bs, InternalAPIKey: internalKey, PublicAPIKeys: []string{publicKey}})
	if err != nil {
		t.Fatal(err)
	}
	h := srv.Handler()
	if wrap != nil {
		h = wrap(h)
	}
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return st, ts
}

func config(ts *httptest.Server) loadgen.Config {
	return loadgen.Config{
		URLs: []string{ts.URL}, InternalKey: internalKey, PublicKey: publicKey,
		Workers: 6, HeartbeatInterval: 20 * time.Millisecond, Cycles: true, Submitters: 2,
		QueueDepth: 10, Prefill: 5, IdleWait: 10 * time.Millisecond, OutputBytes: 100,
		Duration: time.Second, ProgressEvery: 100 * time.Millisecond,
	}
}

// TestRunCountsAddUp runs a short load and checks the generator's counts
// against each other and against the store.
func TestRunCountsAddUp(t *testing.T) {
	st, ts := newControl(t, nil)
	cfg := config(ts)
	var snaps int
	cfg.OnProgress = func(loadgen.Snapshot) { snaps++ }
	res, err := loadgen.Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	var out bytes.Buffer
	if err := res.WriteText(&out); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", out.String())
	if snaps == 0 {
		t.Error("OnProgress was never called")
	}
	k := func(kind loadgen.Kind) loadgen.KindResult { return res.Kind(kind) }
	for _, kind := range loadgen.Kinds() {
		if e := k(kind).Errors; e != 0 {
			t.Errorf("%s: %d errors: %v", kind, e, res.Errors)
		}
	}
	if k(loadgen.Heartbeat).Calls == 0 || k(loadgen.Complete).Calls == 0 || k(loadgen.Submit).Calls == 0 {
		t.Fatalf("some kind of call never ran: %+v", res.Kinds)
	}
	claims, uploads, completes := k(loadgen.Claim).Calls, k(loadgen.Upload).Calls, k(loadgen.Complete).Calls
	// Every claim is followed by an upload, answered or stale; every
	// accepted upload by a complete.
	if got := uploads + k(loadgen.Upload).Stale; got != claims {
		t.Errorf("uploads %d + stale %d != claims %d", uploads, k(loadgen.Upload).Stale, claims)
	}
	if got := completes + k(loadgen.Complete).Stale; got != uploads {
		t.Errorf("completes %d + stale %d != uploads %d", completes, k(loadgen.Complete).Stale, uploads)
	}
	if res.Cycles != completes || uint64(res.Ledger.Completes) != completes || uint64(res.Ledger.Claims) != claims {
		t.Errorf("cycles %d, ledger completes %d and claims %d disagree with the calls (%d completes, %d claims)",
			res.Cycles, res.Ledger.Completes, res.Ledger.Claims, completes, claims)
	}
	if res.Ledger.Violations != 0 {
		t.Errorf("violations: %v", res.Ledger.Details)
	}

	// The store agrees: every job submitted is there, and exactly the
	// completed ones succeeded.
	byState, err := st.JobCountByState(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, n := range byState {
		total += n
	}
	if want := res.Prefilled + int(k(loadgen.Submit).Calls); total != want {
		t.Errorf("store holds %d jobs, the generator submitted %d (%d before the clock): %v", total, want, res.Prefilled, byState)
	}
	if got := byState[protocol.JobSucceeded]; got != int(completes) {
		t.Errorf("store: %d jobs succeeded, the generator completed %d", got, completes)
	}
	if byState[protocol.JobRunning] != 0 {
		t.Errorf("store: %d jobs still running after every cycle finished", byState[protocol.JobRunning])
	}
	workers, err := st.WorkerList(context.Background(), &store.WorkerListParams{})
	if err != nil {
		t.Fatal(err)
	}
	if len(workers) != cfg.Workers {
		t.Errorf("store: %d workers registered, want %d", len(workers), cfg.Workers)
	}
}

// doubleClaimer hands the first assignment to a second worker as well: a
// control plane that claims one job twice.
type doubleClaimer struct {
	next http.Handler

	mu    sync.Mutex
	first []byte // the first 200 answer to a claim
	by    string // its worker's path
	done  bool
}

func (d *doubleClaimer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasSuffix(r.URL.Path, "/claim") {
		d.next.ServeHTTP(w, r)
		return
	}
	d.mu.Lock()
	if d.first != nil && !d.done && r.URL.Path != d.by {
		d.done = true
		body := d.first
		d.mu.Unlock()
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
		return
	}
	d.mu.Unlock()
	rec := httptest.NewRecorder()
	d.next.ServeHTTP(rec, r)
	d.mu.Lock()
	if d.first == nil && rec.Code == http.StatusOK {
		d.first, d.by = rec.Body.Bytes(), r.URL.Path
	}
	d.mu.Unlock()
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	w.Write(rec.Body.Bytes())
}

// TestRunDetectsDoubleClaim injects a double claim: Run must fail with
// ErrExactlyOnce and name it.
func TestRunDetectsDoubleClaim(t *testing.T) {
	_, ts := newControl(t, func(h http.Handler) http.Handler { return &doubleClaimer{next: h} })
	cfg := config(ts)
	cfg.Duration = 2 * time.Second
	res, err := loadgen.Run(context.Background(), cfg)
	if !errors.Is(err, loadgen.ErrExactlyOnce) {
		t.Fatalf("Run: %v; want an error wrapping ErrExactlyOnce", err)
	}
	if res == nil || res.Ledger.Violations == 0 || !strings.Contains(strings.Join(res.Ledger.Details, "\n"), "double claim") {
		t.Fatalf("violations do not name the double claim: %+v", res.Ledger)
	}
	var out bytes.Buffer
	res.WriteText(&out)
	if !strings.Contains(out.String(), "VIOLATION: double claim") {
		t.Errorf("report does not show the violation:\n%s", out.String())
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []loadgen.Config{
		{InternalKey: "k"},
		{URLs: []string{"http://x"}},
		{URLs: []string{""}, InternalKey: "k"},
		{URLs: []string{"http://x"}, InternalKey: "k", Workers: -1},
		{URLs: []string{"http://x"}, InternalKey: "k", Duration: -time.Second},
	} {
		if _, err := loadgen.Run(context.Background(), c); err == nil {
			t.Errorf("Run(%+v) succeeded", c)
		}
	}
}

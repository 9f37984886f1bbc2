// Package loadgen is a load generator for the control plane's HTTP APIs
// (docs/API.md): simulated workers heartbeat and run claim → upload →
// complete cycles against it while submitters keep its queue filled, and
// every answer is checked for exactly-once delivery (no attempt handed out
// twice, no two attempts of a job accepted at once, no job completed
// twice). It measures throughput and latency per kind of call.
//
// It speaks HTTP only, so it runs against any control plane: one started
// in the same process or a deployment at a URL. Run it against a store
// made for it: it submits and completes real jobs.
package loadgen

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"mime/multipart"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/avatargen/musetalk/blob"
	"github.com/avatargen/musetalk/protocol"
)

// Kind is a kind of call the generator makes.
type Kind int

const (
	Heartbeat  Kind = iota // POST .../workers/{id}/heartbeat
	Claim                  // POST .../workers/{id}/claim answered with an attempt
	ClaimEmpty             // the same answered 204: nothing to claim
	Upload                 // PUT of the attempt's output under /internal/main/blobs/ (or into Config.Direct)
	Complete               // POST .../jobs/{id}/complete
	Submit                 // POST /v1/jobs
	numKinds
)

var kindNames = [numKinds]string{"heartbeat", "claim", "claim-empty", "upload", "complete", "submit"}

func (k Kind) String() string {
	if k < 0 || k >= numKinds {
		return "kind(" + strconv.Itoa(int(k)) + ")"
	}
	return kindNames[k]
}

// Kinds lists every kind in report order.
func Kinds() []Kind {
	out := make([]Kind, numKinds)
	for i := range out {
		out[i] = Kind(i)
	}
	return out
}

// ErrExactlyOnce is wrapped by Run's error when the exactly-once check
// found a violation.
var ErrExactlyOnce = errors.New("exactly-once violated")

// Defaults of Config's zero values.
const (
	DefaultWorkers     = 500
	DefaultDuration    = 20 * time.Second
	DefaultSubmitters  = 16
	DefaultOutputBytes = 4 << 10
	DefaultIdleWait    = time.Second
	DefaultAvatars     = 16
)

// Config describes one run.
type Config struct {
	// URLs are the base URLs of the control plane's replicas, e.g.
	// http://127.0.0.1:8080 (at least one). Worker i and submitter i talk
	// to URLs[i % len(URLs)].
	URLs []string
	// InternalKey is the worker API's bearer key; PublicKey the public
	// API's ("" when it is open).
	InternalKey, PublicKey string

	// Workers is the number of simulated workers (default 500).
	Workers int
	// HeartbeatInterval is each worker's heartbeat period; 0 sends
	// heartbeats back to back (a closed loop: as fast as answered). A
	// heartbeat that takes longer than the period is followed at once.
	HeartbeatInterval time.Duration
	// Cycles makes every worker claim → upload → complete in a loop, as
	// fast as it is answered, and starts the submitters.
	Cycles bool
	// Work is the simulated render time between claim and upload (0:
	// none). When the run ends first, the attempt is uploaded and
	// completed at once.
	Work time.Duration
	// IdleWait is how long a worker waits after a claim found nothing
	// (default 1s; deployed workers wait a heartbeat interval).
	IdleWait time.Duration
	// Submitters submit jobs concurrently (default 16; negative: none,
	// the workers then run through the prefilled jobs) while fewer than
	// QueueDepth of the submitted jobs are unclaimed (default 2 per worker).
	Submitters, QueueDepth int
	// Prefill is the number of jobs submitted before the run's clock
	// starts (default QueueDepth; negative: none), so the first claims
	// find work.
	Prefill int
	// OutputBytes is the size of each uploaded output (default 4 KiB).
	OutputBytes int
	// Direct, when set, is the object store that the simulated workers
	// write their outputs to themselves, as deployed workers with B2
	// credentials write to B2: the cycle puts the output there (counted
	// as the upload) instead of sending it through the control plane,
	// whose complete then checks the object's size and SHA-1 there. It
	// must be the store the control plane reads.
	Direct blob.Store
	// Avatars is the number of distinct avatar ids the jobs carry; each
	// worker reports two of them as cached, so claims take the
	// cached-avatar path (default 16).
	Avatars int

	// Duration is how long calls are started (default 20s). Workers in a
	// cycle finish it afterwards, so a run takes a little longer.
	Duration time.Duration
	// OnStart, if set, is called when the clock starts (after the prefill).
	OnStart func()
	// OnProgress, if set, is called about every ProgressEvery (default 1s)
	// from one goroutine while the run lasts.
	OnProgress    func(Snapshot)
	ProgressEvery time.Duration
}

func (c Config) withDefaults() (Config, error) {
	if len(c.URLs) == 0 {
		return c, errors.New("loadgen: Config.URLs needs at least one URL")
	}
	for i, u := range c.URLs {
		if _, err := parseBase(u); err != nil {
			return c, fmt.Errorf("loadgen: Config.URLs[%d]: %w", i, err)
		}
	}
	c.URLs = slices.Clone(c.URLs)
	if c.InternalKey == "" {
		return c, errors.New("loadgen: Config.InternalKey is required")
	}
	for _, v := range []struct {
		name string
		v    *int
		def  int
	}{
		{"Workers", &c.Workers, DefaultWorkers},
		{"OutputBytes", &c.OutputBytes, DefaultOutputBytes}, {"Avatars", &c.Avatars, DefaultAvatars},
	} {
		if *v.v < 0 {
			return c, fmt.Errorf("loadgen: Config.%s must not be negative, got %d", v.name, *v.v)
		}
		if *v.v == 0 {
			*v.v = v.def
		}
	}
	switch {
	case c.Submitters == 0:
		c.Submitters = DefaultSubmitters
	case c.Submitters < 0:
		c.Submitters = 0
	}
	if c.QueueDepth < 0 {
		return c, fmt.Errorf("loadgen: Config.QueueDepth must not be negative, got %d", c.QueueDepth)
	}
	if c.QueueDepth == 0 {
		c.QueueDepth = 2 * c.Workers
	}
	switch {
	case c.Prefill == 0:
		c.Prefill = c.QueueDepth
	case c.Prefill < 0:
		c.Prefill = 0
	}
	for _, v := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"Duration", &c.Duration, DefaultDuration}, {"IdleWait", &c.IdleWait, DefaultIdleWait},
		{"ProgressEvery", &c.ProgressEvery, time.Second},
		{"HeartbeatInterval", &c.HeartbeatInterval, 0}, {"Work", &c.Work, 0},
	} {
		if *v.v < 0 {
			return c, fmt.Errorf("loadgen: Config.%s must not be negative, got %v", v.name, *v.v)
		}
		if *v.v == 0 {
			*v.v = v.def
		}
	}
	return c, nil
}

// Snapshot is the state of a run while it lasts.
type Snapshot struct {
	Elapsed    time.Duration
	Calls      [numKinds]uint64 // answered calls per kind, errors excluded
	Errors     uint64
	Violations int
}

// KindResult is what one kind of call measured.
type KindResult struct {
	Kind   Kind
	Calls  uint64  // answered as expected
	Rate   float64 // Calls per second of the run
	P50    time.Duration
	P99    time.Duration
	Max    time.Duration
	Mean   time.Duration
	Errors uint64 // failed calls (transport errors and unexpected answers)
	Stale  uint64 // 409 answers to an attempt whose lease had lapsed (upload, complete)
}

// Result is a finished run.
type Result struct {
	Config Config
	// Prefilled jobs were submitted in PrefillTime before the clock
	// started; they are not counted in Kinds.
	Prefilled   int
	PrefillTime time.Duration
	Elapsed     time.Duration
	Kinds       []KindResult
	// Cycles is the number of claim → upload → complete cycles whose
	// complete was accepted, CycleRate the same per second.
	Cycles    uint64
	CycleRate float64
	// CancelOrders counts heartbeat answers that told a worker to drop
	// the attempt it still held.
	CancelOrders uint64
	Ledger       LedgerSummary
	// Errors are the distinct error messages seen, with their counts (the
	// first 20 distinct ones).
	Errors []ErrorCount
}

// ErrorCount is one distinct error and how often it happened.
type ErrorCount struct {
	Kind  Kind
	Msg   string
	Count int
}

// Kind returns the result of kind k.
func (r *Result) Kind(k Kind) KindResult { return r.Kinds[k] }

// run is one run's shared state.
type run struct {
	cfg     Config
	ledger  *ledger
	hist    [numKinds]Histogram
	errs    [numKinds]atomic.Uint64
	stale   [numKinds]atomic.Uint64
	cancels atomic.Uint64
	stop    chan struct{}
	bases   []*url.URL
	prefix  string
	inputs  protocol.Inputs

	submitted atomic.Int64 // jobs submitted
	claimed   atomic.Int64 // first claims of those jobs (approximately: all claims)

	errMu    sync.Mutex
	errCount map[errKey]int
	errOrder []errKey
}

type errKey struct {
	kind Kind
	msg  string
}

// Run runs the load described by cfg until cfg.Duration has passed (or
// ctx ends) and every simulated worker has finished its cycle. The Result
// is returned also with an error wrapping ErrExactlyOnce.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	var tag [4]byte
	if _, err := rand.Read(tag[:]); err != nil {
		return nil, fmt.Errorf("loadgen: making the run's id: %w", err)
	}
	r := &run{
		cfg: cfg, ledger: newLedger(), stop: make(chan struct{}),
		prefix: "bench-" + hex.EncodeToString(tag[:]), errCount: map[errKey]int{},
	}
	for _, u := range cfg.URLs {
		base, _ := parseBase(u) // checked by withDefaults
		r.bases = append(r.bases, base)
	}
	var prefilled int
	var prefillTime time.Duration
	if cfg.Cycles {
		if r.inputs, err = r.seedInputs(ctx); err != nil {
			return nil, err
		}
		t := time.Now()
		if prefilled, err = r.prefill(ctx); err != nil {
			return nil, err
		}
		prefillTime = time.Since(t)
	}

	if cfg.OnStart != nil {
		cfg.OnStart()
	}
	start := time.Now()
	var wg sync.WaitGroup
	for i := range cfg.Workers {
		w := r.newWorker(i)
		wg.Add(1)
		go func() { defer wg.Done(); w.heartbeats(ctx) }()
		if cfg.Cycles {
			wg.Add(1)
			go func() { defer wg.Done(); w.cycles(ctx) }()
		}
	}
	if cfg.Cycles {
		for i := range cfg.Submitters {
			wg.Add(1)
			go func() { defer wg.Done(); r.submitter(ctx, i) }()
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	deadline := time.NewTimer(cfg.Duration)
	defer deadline.Stop()
	tick := time.NewTicker(cfg.ProgressEvery)
	defer tick.Stop()
	end, cancelled := deadline.C, ctx.Done()
wait:
	for {
		select {
		case <-tick.C:
			if cfg.OnProgress != nil {
				cfg.OnProgress(r.snapshot(time.Since(start)))
			}
		case <-end:
			close(r.stop)
			end, cancelled = nil, nil
		case <-cancelled:
			close(r.stop)
			end, cancelled = nil, nil
		case <-done:
			break wait
		}
	}
	res := r.result(time.Since(start))
	res.Prefilled, res.PrefillTime = prefilled, prefillTime
	if ctx.Err() != nil {
		return res, fmt.Errorf("loadgen: run stopped early: %w", ctx.Err())
	}
	if res.Ledger.Violations > 0 {
		return res, fmt.Errorf("loadgen: %w: %d violations, first: %s", ErrExactlyOnce, res.Ledger.Violations, res.Ledger.Details[0])
	}
	return res, nil
}

func (r *run) stopped() bool {
	select {
	case <-r.stop:
		return true
	default:
		return false
	}
}

// sleep waits d, or less when the run stops or ctx ends; it reports
// whether the run goes on.
func (r *run) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return !r.stopped() && ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.stop:
		return false
	case <-ctx.Done():
		return false
	}
}

func (r *run) snapshot(elapsed time.Duration) Snapshot {
	s := Snapshot{Elapsed: elapsed}
	for k := range numKinds {
		s.Calls[k] = r.hist[k].Count()
		s.Errors += r.errs[k].Load()
	}
	r.ledger.mu.Lock()
	s.Violations = r.ledger.nViolation
	r.ledger.mu.Unlock()
	return s
}

// fail counts a failed call of kind k.
func (r *run) fail(k Kind, err error) {
	r.errs[k].Add(1)
	msg := err.Error()
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	key := errKey{k, msg}
	r.errMu.Lock()
	defer r.errMu.Unlock()
	if _, ok := r.errCount[key]; !ok {
		if len(r.errOrder) >= 20 {
			return
		}
		r.errOrder = append(r.errOrder, key)
	}
	r.errCount[key]++
}

func (r *run) result(elapsed time.Duration) *Result {
	res := &Result{Config: r.cfg, Elapsed: elapsed, CancelOrders: r.cancels.Load(), Ledger: r.ledger.summary()}
	secs := elapsed.Seconds()
	for k := range numKinds {
		h := &r.hist[k]
		res.Kinds = append(res.Kinds, KindResult{
			Kind: k, Calls: h.Count(), Rate: float64(h.Count()) / secs,
			P50: h.Quantile(0.50), P99: h.Quantile(0.99), Max: h.Max(), Mean: h.Mean(),
			Errors: r.errs[k].Load(), Stale: r.stale[k].Load(),
		})
	}
	res.Cycles = uint64(res.Ledger.Completes)
	res.CycleRate = float64(res.Cycles) / secs
	r.errMu.Lock()
	for _, k := range r.errOrder {
		res.Errors = append(res.Errors, ErrorCount{Kind: k.kind, Msg: k.msg, Count: r.errCount[k]})
	}
	r.errMu.Unlock()
	return res
}

// conn returns a connection of caller i (to URLs[i % len(URLs)]) with key.
func (r *run) conn(i int, key string) *conn { return newConn(r.bases[i%len(r.bases)], key) }

func (r *run) avatarID(i int) string { return fmt.Sprintf("%s-avatar-%d", r.prefix, i%r.cfg.Avatars) }

// seedInputs submits one job with small avatar and audio files, so that
// the object store holds inputs that every later submission names.
func (r *run) seedInputs(ctx context.Context) (protocol.Inputs, error) {
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	for _, f := range []struct{ field, name, content string }{
		{"avatar", "avatar.png", "bench avatar " + r.prefix},
		{"audio", "audio.wav", "bench audio " + r.prefix},
	} {
		fw, err := mw.CreateFormFile(f.field, f.name)
		if err != nil {
			return protocol.Inputs{}, fmt.Errorf("loadgen: building the seed submission: %w", err)
		}
		fw.Write([]byte(f.content))
	}
	if err := mw.WriteField("avatar_id", r.avatarID(0)); err != nil {
		return protocol.Inputs{}, fmt.Errorf("loadgen: building the seed submission: %w", err)
	}
	if err := mw.Close(); err != nil {
		return protocol.Inputs{}, fmt.Errorf("loadgen: building the seed submission: %w", err)
	}
	c := r.conn(0, r.cfg.PublicKey)
	defer c.close()
	var job protocol.JobView
	if _, err := c.do(ctx, http.MethodPost, protocol.Path(protocol.SubmitRoute), mw.FormDataContentType(), body.Bytes(), nil, &job); err != nil {
		return protocol.Inputs{}, fmt.Errorf("loadgen: submitting the seed job to %s: %w", r.cfg.URLs[0], err)
	}
	r.submitted.Add(1)
	return job.Inputs, nil
}

// prefill submits cfg.Prefill jobs (the seed job counts) with
// cfg.Submitters concurrent callers (DefaultSubmitters when there are
// none), untimed.
func (r *run) prefill(ctx context.Context) (int, error) {
	var (
		wg    sync.WaitGroup
		next  atomic.Int64
		errMu sync.Mutex
		first error
	)
	next.Store(1)
	callers := r.cfg.Submitters
	if callers == 0 {
		callers = DefaultSubmitters
	}
	for n := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := r.conn(n, r.cfg.PublicKey)
			defer c.close()
			for i := next.Add(1) - 1; i < int64(r.cfg.Prefill) && ctx.Err() == nil; i = next.Add(1) - 1 {
				req := r.submitRequest(int(i))
				if _, err := c.postJSON(ctx, protocol.Path(protocol.SubmitRoute), &req, nil); err != nil {
					errMu.Lock()
					if first == nil {
						first = err
					}
					errMu.Unlock()
					return
				}
				r.submitted.Add(1)
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return 0, fmt.Errorf("loadgen: submitting the prefill jobs: %w", first)
	}
	return int(r.submitted.Load()), ctx.Err()
}

func (r *run) submitRequest(i int) protocol.SubmitRequest {
	return protocol.SubmitRequest{AvatarKey: r.inputs.AvatarKey, AudioKey: r.inputs.AudioKey,
		WorkerType: protocol.WorkerMain, AvatarID: r.avatarID(i)}
}

// submitter submits jobs over the seeded inputs while fewer than
// QueueDepth of the submitted jobs wait to be claimed.
func (r *run) submitter(ctx context.Context, n int) {
	c := r.conn(n, r.cfg.PublicKey)
	defer c.close()
	for i := n; !r.stopped() && ctx.Err() == nil; i += r.cfg.Submitters {
		if r.submitted.Load()-r.claimed.Load() >= int64(r.cfg.QueueDepth) {
			if !r.sleep(ctx, 2*time.Millisecond) {
				return
			}
			i -= r.cfg.Submitters
			continue
		}
		req := r.submitRequest(i)
		var job protocol.JobView
		start := time.Now()
		if _, err := c.postJSON(ctx, protocol.Path(protocol.SubmitRoute), &req, &job); err != nil {
			if ctx.Err() != nil {
				return
			}
			r.fail(Submit, err)
			r.sleep(ctx, 10*time.Millisecond)
			continue
		}
		r.hist[Submit].Record(time.Since(start))
		r.submitted.Add(1)
	}
}

// worker is one simulated worker: a heartbeat loop and, with Cycles, a
// claim loop, sharing the attempt it holds.
type worker struct {
	r      *run
	id     string
	n      int
	cached []string

	mu       sync.Mutex
	held     *protocol.Assignment
	progress int // frames "done" of the held attempt, reported by heartbeats
	dropped  bool
}

func (r *run) newWorker(n int) *worker {
	return &worker{r: r, n: n, id: fmt.Sprintf("%s-w%04d", r.prefix, n),
		cached: []string{r.avatarID(n), r.avatarID(n + 1)}}
}

// heartbeats sends the worker's heartbeats until the run stops. The first
// goes at a random point of the first period, so the workers' heartbeats
// spread evenly.
func (w *worker) heartbeats(ctx context.Context) {
	r := w.r
	c := r.conn(w.n, r.cfg.InternalKey)
	defer c.close()
	path := protocol.Path(protocol.HeartbeatRoute, w.id)
	every := r.cfg.HeartbeatInterval
	next := time.Now()
	if every > 0 {
		next = next.Add(time.Duration(uint64(w.n) * uint64(every) / uint64(r.cfg.Workers)))
	}
	hb := protocol.Heartbeat{Provider: "bench", GPUClass: "bench", WorkerType: protocol.WorkerMain,
		Version: "bench", CachedAvatars: w.cached}
	var progress protocol.Progress
	for r.sleep(ctx, time.Until(next)) {
		hb.Status, hb.JobID, hb.Attempt, hb.Progress = protocol.WorkerIdle, "", 0, nil
		w.mu.Lock()
		held := w.held
		if held != nil {
			w.progress++
			progress = protocol.Progress{Stage: "unet", FramesDone: w.progress, FramesTotal: 1 << 30}
			hb.Status, hb.JobID, hb.Attempt, hb.Progress = protocol.WorkerBusy, held.JobID, held.Attempt, &progress
		}
		w.mu.Unlock()
		var ans protocol.HeartbeatResponse
		sent := time.Now()
		_, err := c.postJSON(ctx, path, &hb, &ans)
		took := time.Since(sent)
		if every > 0 {
			next = next.Add(every)
			if now := time.Now(); next.Before(now) {
				next = now // late: go on at once, without a burst to catch up
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.fail(Heartbeat, err)
			continue
		}
		r.hist[Heartbeat].Record(took)
		switch {
		case held == nil:
		case ans.Cancel != nil:
			// Counted only while the worker still holds the attempt: a
			// heartbeat that named an attempt its worker has completed
			// meanwhile is told so too.
			w.mu.Lock()
			if w.held == held {
				w.dropped = true
				r.cancels.Add(1)
			}
			w.mu.Unlock()
		case ans.LeaseExpiresAt != nil:
			r.ledger.accepted("heartbeat", held.JobID, held.Attempt, sent)
		}
	}
}

// cycles claims, uploads and completes until the run stops.
func (w *worker) cycles(ctx context.Context) {
	r := w.r
	c := r.conn(w.n, r.cfg.InternalKey)
	defer c.close()
	claimPath := protocol.Path(protocol.ClaimRoute, w.id)
	claim := protocol.ClaimRequest{WorkerType: protocol.WorkerMain, Provider: "bench", GPUClass: "bench",
		Version: "bench", CachedAvatars: w.cached}
	out := make([]byte, r.cfg.OutputBytes)
	for i := range out {
		out[i] = byte('a' + i%26)
	}
	for !r.stopped() && ctx.Err() == nil {
		var a protocol.Assignment
		sent := time.Now()
		status, err := c.postJSON(ctx, claimPath, &claim, &a)
		answered := time.Now()
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			r.fail(Claim, err)
			r.sleep(ctx, r.cfg.IdleWait)
			continue
		case status == http.StatusNoContent:
			r.hist[ClaimEmpty].Record(answered.Sub(sent))
			r.sleep(ctx, r.cfg.IdleWait)
			continue
		}
		r.hist[Claim].Record(answered.Sub(sent))
		r.claimed.Add(1)
		r.ledger.claimed(a.JobID, a.Attempt, w.id, answered)
		w.mu.Lock()
		w.held, w.progress, w.dropped = &a, 0, false
		w.mu.Unlock()
		w.runAttempt(ctx, c, &a, out)
		w.mu.Lock()
		w.held = nil
		w.mu.Unlock()
	}
}

// runAttempt "renders" (waits Work), uploads and completes one attempt,
// unless a heartbeat answer dropped it first.
func (w *worker) runAttempt(ctx context.Context, c *conn, a *protocol.Assignment, out []byte) {
	r := w.r
	if r.cfg.Work > 0 {
		// The end of the run cuts the work short; the upload and complete
		// still follow, they are part of the cycle.
		t := time.NewTimer(r.cfg.Work)
		select {
		case <-t.C:
		case <-r.stop:
			t.Stop()
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
	if w.isDropped() {
		return
	}
	// The output differs per attempt, so a stale upload is never
	// mistaken for the current one's.
	copy(out, fmt.Sprintf("%s/%d ", a.JobID, a.Attempt))
	sum := sha1.Sum(out)
	hdr := []header{{protocol.AttemptHeader, strconv.Itoa(a.Attempt)}, {protocol.TokenHeader, a.Token}}
	sent := time.Now()
	var err error
	if r.cfg.Direct != nil {
		err = r.cfg.Direct.Put(ctx, a.OutputKey, bytes.NewReader(out), int64(len(out)))
	} else {
		_, err = c.do(ctx, http.MethodPut, protocol.InternalBlobPath+a.OutputKey, "application/octet-stream", out, hdr, nil)
	}
	if !w.record(Upload, sent, err) {
		return
	}
	r.ledger.accepted("upload", a.JobID, a.Attempt, sent)

	req := protocol.CompleteRequest{Attempt: a.Attempt, Token: a.Token, OutputKey: a.OutputKey,
		SHA1: hex.EncodeToString(sum[:]), Size: int64(len(out))}
	sent = time.Now()
	_, err = c.postJSON(ctx, protocol.Path(protocol.CompleteRoute, a.JobID), &req, nil)
	if !w.record(Complete, sent, err) {
		return
	}
	r.ledger.completed(a.JobID, a.Attempt, sent)
}

// record files the outcome of an attempt call sent at sent; it reports
// whether the call was accepted.
func (w *worker) record(k Kind, sent time.Time, err error) bool {
	took := time.Since(sent)
	switch {
	case err == nil:
		w.r.hist[k].Record(took)
		return true
	case stale(err):
		w.r.stale[k].Add(1)
	default:
		w.r.fail(k, err)
	}
	return false
}

func (w *worker) isDropped() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.dropped
}

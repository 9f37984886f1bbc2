// Package worker is the GPU worker daemon. It keeps the deployed fleet's
// contract (environment variables, /health on :8000, the heartbeat call)
// and runs jobs from the control plane:
//
//   - a heartbeat goroutine reports idle, busy or draining every
//     POLL_INTERVAL_SEC whatever a job does, and obeys the answer's cancel
//     and drain orders;
//   - the poll loop claims a job, downloads its inputs, runs an engine,
//     uploads the output to the attempt's key and completes it with the
//     attempt's fencing token and the output's SHA-1 and size, or reports a
//     permanent or retryable failure; a finished output is kept and its
//     upload and complete retried through outages of the control plane or
//     the object store, which never count as failures (deliver.go);
//   - cancelling Run's context drains: no more claims, the current job gets
//     Config.Grace to finish and is released otherwise; Stop releases it at
//     once.
//
// The worker speaks to the control plane only over HTTP (protocol).
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/avatargen/musetalk/protocol"
	"github.com/avatargen/musetalk/worker/engine"
)

// tracerName names the worker's tracer.
const tracerName = "github.com/avatargen/musetalk/worker"

// Causes of an attempt's cancellation.
var (
	errShutdownGrace = errors.New("worker shutting down: grace period over")
	errStopped       = errors.New("worker stopped")
	// errAttemptOver ends an attempt's helpers once its engine returned.
	errAttemptOver = errors.New("attempt over")
)

// cancelOrder is the cause of an attempt cancelled by the control plane.
type cancelOrder struct{ reason string }

func (c *cancelOrder) Error() string { return "cancelled by the control plane: " + c.reason }

// Worker is one worker daemon. Create it with New and start it with Run;
// its methods are safe for concurrent use.
type Worker struct {
	cfg     Config
	log     *slog.Logger
	tracer  trace.Tracer
	met     *workerMetrics
	client  *client
	engines map[string]engine.Engine
	dir     string // this worker's directory under WorkDir

	// Seams for tests.
	now           func() time.Time
	sendHeartbeat func(context.Context, *protocol.Heartbeat) (*protocol.HeartbeatResponse, error)
	retryBase     time.Duration // first wait between retried calls

	mu sync.Mutex
	st state // guarded by mu

	running  atomic.Bool
	wakePoll chan struct{} // cap 1: drain or storage state changed
	wakeBeat chan struct{} // cap 1: send a heartbeat now
	beatOnce chan struct{} // closed when the first heartbeat attempt has finished
	stopCh   chan struct{} // closed by Stop
	stopOnce sync.Once
}

// state is what the heartbeat, /health and the poll loop share.
type state struct {
	checked        bool                // the self-check has run
	selfCheck      *protocol.SelfCheck // its result
	selfCheckAcked bool                // a heartbeat carrying it was acknowledged
	storageOK      bool
	drainOrdered   bool // the control plane asked to drain
	shuttingDown   bool // Run's context is done or Stop was called
	job            *attempt

	beatLoopStarted time.Time // zero until the heartbeat loop runs
	lastBeatDone    time.Time // last heartbeat attempt that finished, answered or not
	lastAck         time.Time // last acknowledged heartbeat
	beatFailures    int       // consecutive failed heartbeats
}

// attempt is the running attempt.
type attempt struct {
	a        *protocol.Assignment
	cancel   context.CancelCauseFunc
	span     trace.Span // the attempt's span
	progress *protocol.Progress
	nudge    chan struct{} // cap 1: progress changed
	// engineDone stops the progress reporter once the engine has
	// finished, after it posted the last progress (set by runAttempt).
	engineDone func()
}

// New checks cfg, fills its defaults and returns a worker that has not
// started yet.
func New(cfg Config) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Blob == nil {
		return nil, errors.New("worker: no object store (Config.Blob)")
	}
	if len(cfg.Version) > 64 {
		return nil, errors.New("worker: Config.Version is longer than 64 bytes (the heartbeat's limit)")
	}
	if len(cfg.Engines) == 0 {
		return nil, errors.New("worker: no engine (Config.Engines)")
	}
	engines := make(map[string]engine.Engine, len(cfg.Engines))
	for _, e := range cfg.Engines {
		if e == nil {
			return nil, errors.New("worker: nil engine in Config.Engines")
		}
		if _, dup := engines[e.Name()]; dup {
			return nil, fmt.Errorf("worker: two engines named %q", e.Name())
		}
		engines[e.Name()] = e
	}
	if cfg.HealthAddr == "" {
		cfg.HealthAddr = DefaultHealthAddr
	}
	if cfg.WorkDir == "" {
		cfg.WorkDir = filepath.Join(os.TempDir(), "musetalk-worker")
	}
	if cfg.Grace <= 0 {
		cfg.Grace = DefaultGrace
	}
	if cfg.HeartbeatTimeout <= 0 {
		cfg.HeartbeatTimeout = min(max(cfg.PollInterval, 2*time.Second), 10*time.Second)
	}
	if cfg.ReportTimeout <= 0 {
		cfg.ReportTimeout = DefaultReportTimeout
	}
	if cfg.DeliverTimeout <= 0 {
		cfg.DeliverTimeout = DefaultDeliverTimeout
	}
	if cfg.CheckTimeout <= 0 {
		cfg.CheckTimeout = DefaultCheckTimeout
	}
	if cfg.ProgressEvery <= 0 {
		cfg.ProgressEvery = DefaultProgressEvery
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	tp := cfg.TracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	met, err := newWorkerMetrics(cfg.MeterProvider, cfg.Engines)
	if err != nil {
		return nil, fmt.Errorf("worker: metrics: %w", err)
	}
	w := &Worker{
		cfg:       cfg,
		log:       cfg.Logger.With("worker_id", cfg.WorkerID),
		tracer:    tp.Tracer(tracerName),
		met:       met,
		client:    newClient(cfg.OrchestratorBaseURL, cfg.InternalAPIKey.Reveal(), cfg.WorkerID, cfg.HTTPClient),
		engines:   engines,
		dir:       filepath.Join(cfg.WorkDir, cfg.WorkerID),
		now:       time.Now,
		retryBase: 500 * time.Millisecond,
		wakePoll:  make(chan struct{}, 1),
		wakeBeat:  make(chan struct{}, 1),
		beatOnce:  make(chan struct{}),
		stopCh:    make(chan struct{}),
	}
	w.sendHeartbeat = w.client.heartbeat
	return w, nil
}

// ID returns the worker's ID.
func (w *Worker) ID() string { return w.cfg.WorkerID }

// Run serves /health, runs the self-check, then heartbeats and claims jobs
// until ctx is done (the first SIGTERM or SIGINT). Then it stops claiming,
// reports draining, gives the running job Config.Grace to finish and
// releases it otherwise (at once after Stop), and returns nil. It returns
// an error only when it cannot start (the health address is taken, the work
// directory cannot be made). Run may be called once.
func (w *Worker) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("worker: Run called twice")
	}
	attempts := filepath.Join(w.dir, "attempts")
	if err := os.RemoveAll(attempts); err != nil {
		return fmt.Errorf("worker: clearing old attempts in %s: %w", attempts, err)
	}
	if err := os.MkdirAll(attempts, 0o755); err != nil {
		return fmt.Errorf("worker: making the work directory: %w", err)
	}
	ln := w.cfg.HealthListener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", w.cfg.HealthAddr); err != nil {
			return fmt.Errorf("worker: health server: %w", err)
		}
	}
	hs := &http.Server{Handler: w.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			w.log.Error("health server stopped", "err", err)
		}
	}()
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()

	// runCtx ends at the first signal or Stop; lifeCtx outlives it for the
	// heartbeat and the running job.
	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	go func() {
		select {
		case <-w.stopCh:
			cancelRun()
		case <-runCtx.Done():
		}
		w.mu.Lock()
		w.st.shuttingDown = true
		w.mu.Unlock()
		nudge(w.wakeBeat) // report draining now
	}()
	lifeCtx, endLife := context.WithCancel(context.WithoutCancel(ctx))
	defer endLife()

	w.log.Info("worker starting", "control", w.cfg.OrchestratorBaseURL, "worker_type", w.cfg.WorkerType,
		"provider", w.cfg.Provider, "gpu_class", w.cfg.GPUClass, "version", w.cfg.Version, "health", ln.Addr().String(), "poll_interval", w.cfg.PollInterval.String())
	w.runSelfCheck(runCtx)

	var beats sync.WaitGroup
	beats.Go(func() { w.heartbeatLoop(lifeCtx) })
	// The first heartbeat registers the worker before its first claim.
	select {
	case <-w.beatOnce:
	case <-runCtx.Done():
	}
	w.pollLoop(runCtx, lifeCtx)

	w.mu.Lock()
	w.st.shuttingDown = true
	w.mu.Unlock()
	endLife()
	beats.Wait()
	// A last heartbeat says draining rather than leaving the last status
	// until the control plane marks the worker offline.
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.HeartbeatTimeout)
	defer cancel()
	if _, err := w.sendHeartbeat(bctx, w.heartbeatBody()); err != nil {
		w.log.Debug("last heartbeat failed", "err", err)
	}
	w.log.Info("worker stopped")
	return nil
}

// Stop releases the running job at once and makes Run return (the second
// signal). It does not wait; Run's return says the worker is done.
func (w *Worker) Stop() {
	w.stopOnce.Do(func() { close(w.stopCh) })
}

func nudge(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// sleep waits d, or until ctx is done or wake fires. It reports whether ctx
// is still live.
func sleep(ctx context.Context, d time.Duration, wake <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-wake:
	}
	return true
}

// jitter spreads d by ±20% so that a fleet does not call in lockstep.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	return d*4/5 + rand.N(d*2/5+1)
}

// pollLoop claims and runs jobs until runCtx is done.
func (w *Worker) pollLoop(runCtx, lifeCtx context.Context) {
	failures := 0
	for runCtx.Err() == nil {
		if reason := w.claimBlocker(runCtx); reason != "" {
			w.log.Debug("not claiming", "reason", reason)
			sleep(runCtx, jitter(w.cfg.PollInterval), w.wakePoll)
			continue
		}
		start := w.now()
		a, err := w.claim(runCtx)
		end := w.now()
		switch {
		case err != nil:
			failures++
			w.log.Warn("claim failed", "err", err, "failures", failures)
			sleep(runCtx, w.backoff(failures), w.wakePoll)
		case a == nil:
			failures = 0
			sleep(runCtx, jitter(w.cfg.PollInterval), w.wakePoll)
		default:
			failures = 0
			w.runAttempt(runCtx, lifeCtx, a, start, end)
		}
	}
}

// backoff is the wait after n consecutive failed calls: a quarter of the
// poll interval, doubling up to two intervals.
func (w *Worker) backoff(n int) time.Duration {
	d := max(w.cfg.PollInterval/4, time.Millisecond)
	for i := 1; i < n && d < 2*w.cfg.PollInterval; i++ {
		d *= 2
	}
	return jitter(min(d, 2*w.cfg.PollInterval))
}

// claimBlocker says why the worker should not claim now, or "".
func (w *Worker) claimBlocker(ctx context.Context) string {
	w.mu.Lock()
	sc, drain, storageOK := w.st.selfCheck, w.st.drainOrdered, w.st.storageOK
	w.mu.Unlock()
	switch {
	case sc != nil && sc.Error != "":
		return "self-check failed: " + sc.Error
	case drain:
		return "draining on the control plane's order"
	case !storageOK:
		if err := w.checkStorage(ctx); err != nil {
			return "object store unreachable: " + err.Error()
		}
	}
	return ""
}

// claim asks for a job. The call outlives runCtx (bounded by the heartbeat
// timeout) so that a job assigned as the signal arrives is not lost
// unseen: it runs under the drain rules instead.
func (w *Worker) claim(runCtx context.Context) (*protocol.Assignment, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(runCtx), w.cfg.HeartbeatTimeout)
	defer cancel()
	return w.client.claim(ctx, &protocol.ClaimRequest{
		WorkerType:    w.cfg.WorkerType,
		Provider:      w.cfg.Provider,
		GPUClass:      w.cfg.GPUClass,
		Version:       w.cfg.Version,
		CachedAvatars: w.cachedAvatars(),
	})
}

// cachedAvatars joins what the engines have prepared, bounded for the wire.
func (w *Worker) cachedAvatars() []string {
	var out []string
	seen := map[string]bool{}
	for _, e := range w.cfg.Engines {
		c, ok := e.(engine.AvatarCacher)
		if !ok {
			continue
		}
		for _, id := range c.CachedAvatars() {
			if protocol.ValidID(id) && !seen[id] && len(out) < protocol.MaxCachedAvatars {
				seen[id] = true
				out = append(out, id)
			}
		}
	}
	return out
}

// checkStorage probes the object store: a missing object is an answer.
func (w *Worker) checkStorage(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.HeartbeatTimeout)
	defer cancel()
	_, err := w.cfg.Blob.Stat(ctx, "selfcheck/"+w.cfg.WorkerID)
	ok := err == nil || isNotFound(err)
	w.setStorage(ok)
	if ok {
		return nil
	}
	return err
}

func (w *Worker) setStorage(ok bool) {
	w.mu.Lock()
	w.st.storageOK = ok
	w.mu.Unlock()
}

// runSelfCheck inspects the engines, the work directory's free space and
// the object store, and records the result for /health and the first
// heartbeat.
func (w *Worker) runSelfCheck(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.CheckTimeout)
	defer cancel()
	names := make([]string, 0, len(w.cfg.Engines))
	sc := &protocol.SelfCheck{WeightsPresent: true}
	var problems []string
	for i, e := range w.cfg.Engines {
		names = append(names, e.Name())
		res, err := e.Check(ctx)
		if i == 0 {
			sc.Device = res.Device
		}
		sc.WeightsPresent = sc.WeightsPresent && res.WeightsPresent
		if err != nil {
			problems = append(problems, fmt.Sprintf("engine %s: %v", e.Name(), err))
		}
	}
	sc.Engine = strings.Join(names, ",")
	free, err := freeDiskBytes(w.dir)
	if err != nil {
		problems = append(problems, err.Error())
	}
	sc.FreeDiskBytes = free
	if len(problems) > 0 {
		sc.Error = strings.Join(problems, "; ")
		if len(sc.Error) > 1000 {
			sc.Error = sc.Error[:1000]
		}
	}
	serr := w.checkStorage(ctx)
	w.mu.Lock()
	w.st.checked = true
	w.st.selfCheck = sc
	w.mu.Unlock()
	w.log.Info("self-check", "engine", sc.Engine, "device", sc.Device, "free_disk_bytes", sc.FreeDiskBytes,
		"weights_present", sc.WeightsPresent, "error", sc.Error, "storage_error", errString(serr))
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

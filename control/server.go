// Package control is the control plane: the public job API (/v1/...), the
// worker API (/internal/main/...), /healthz and /metrics, and the sweeper
// that takes attempts away from lost workers.
//
// All state lives in a store.Store and every transition is a
// compare-and-set there, so any number of Servers (replicas) may share one
// store, each serving requests and running its sweeper. A Server holds no
// job state of its own.
package control

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/avatargen/musetalk/blob"
	"github.com/avatargen/musetalk/control/dashboard"
	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/protocol"
)

// Server is one control-plane replica. Its methods are safe for concurrent
// use. It owns neither the store nor the blob store: the caller closes them.
type Server struct {
	cfg      Config
	store    store.Store
	blob     blob.Store
	log      *slog.Logger
	tracer   trace.Tracer
	now      func() time.Time
	internal *keyring
	public   *keyring
	metrics  *metrics
	mux      *http.ServeMux
	handler  http.Handler
	dash     *dashboard.Dashboard

	randMu sync.Mutex
	rand   *rand.Rand
}

// New validates cfg, fills in its defaults and returns a Server. The error
// names the first bad field.
func New(cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	src := cfg.RandSource
	if src == nil {
		var seed [16]byte
		if _, err := crand.Read(seed[:]); err != nil {
			return nil, fmt.Errorf("control: seeding the backoff jitter: %w", err)
		}
		src = rand.NewPCG(binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:]))
	}
	m, err := newMetrics()
	if err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	s := &Server{
		cfg:      cfg,
		store:    cfg.Store,
		blob:     cfg.Blob,
		log:      cfg.Logger,
		tracer:   cfg.TracerProvider.Tracer("github.com/avatargen/musetalk/control"),
		now:      cfg.Now,
		internal: newKeyring(cfg.InternalAPIKey),
		public:   newKeyring(cfg.PublicAPIKeys...),
		metrics:  m,
		rand:     rand.New(src),
	}
	if s.dash, err = dashboard.New(dashboard.Config{
		Store: cfg.Store, Operator: operator{s}, Keys: cfg.PublicAPIKeys,
		HeartbeatInterval: cfg.HeartbeatInterval, Now: cfg.Now, Logger: cfg.Logger,
	}); err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	s.routes()
	return s, nil
}

// Handler returns the HTTP handler of every route: the public API, the
// worker API, the operator dashboard (/dashboard/), /healthz and /metrics.
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) routes() {
	mux := http.NewServeMux()
	internal := func(pattern string, h handlerFunc) {
		mux.Handle(pattern, requireKey(s.internal, "internal API", serve(h)))
	}
	public := func(pattern string, h handlerFunc) {
		mux.Handle(pattern, requireKey(s.public, "public API", serve(h)))
	}

	internal(protocol.HeartbeatRoute, s.handleHeartbeat)
	internal(protocol.ClaimRoute, s.handleClaim)
	internal(protocol.ProgressRoute, s.handleProgress)
	internal(protocol.CompleteRoute, s.handleComplete)
	internal(protocol.FailRoute, s.handleFail)
	internal(protocol.ReleaseRoute, s.handleRelease)
	internal("GET "+protocol.InternalBlobPath+"{key...}", s.handleBlobGet)
	internal("PUT "+protocol.InternalBlobPath+"{key...}", s.handleBlobPut)

	public(protocol.SubmitRoute, s.handleSubmit)
	public(protocol.GetJobRoute, s.handleGetJob)
	public(protocol.ListJobsRoute, s.handleListJobs)
	public(protocol.CancelJobRoute, s.handleCancel)
	public(protocol.JobResultRoute, s.handleResult)
	public(protocol.ListWorkersRoute, s.handleListWorkers)
	public(protocol.DrainWorkerRoute, s.handleDrain(true))
	public(protocol.UndrainWorkerRoute, s.handleDrain(false))
	public(protocol.RetryJobRoute, s.handleRetry)

	// The dashboard checks its own sessions (a cookie, not a bearer key).
	mux.Handle(dashboard.LiveRoute, s.dash)
	mux.Handle(dashboard.Prefix, s.dash)
	mux.Handle("GET /dashboard", http.RedirectHandler(dashboard.Prefix, http.StatusSeeOther))

	mux.Handle(protocol.HealthzRoute, serve(s.handleHealthz))
	mux.Handle(protocol.MetricsRoute, serve(s.handleMetrics))

	s.mux = mux
	s.handler = s.observe(http.HandlerFunc(s.dispatch))
}

// dispatch routes through the mux, answering unknown paths and methods
// with JSON errors instead of the mux's plain text.
func (s *Server) dispatch(w http.ResponseWriter, r *http.Request) {
	if _, pattern := s.mux.Handler(r); pattern != "" {
		s.mux.ServeHTTP(w, r)
		return
	}
	var allowed []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := s.mux.Handler(probe); pattern != "" {
			allowed = append(allowed, m)
		}
	}
	if len(allowed) > 0 {
		for _, m := range allowed {
			w.Header().Add("Allow", m)
		}
		writeError(w, errorf(http.StatusMethodNotAllowed, protocol.CodeMethodInvalid,
			"method %s is not allowed on %s; use %v", r.Method, r.URL.Path, allowed))
		return
	}
	writeError(w, notFound("no route for %s %s", r.Method, r.URL.Path))
}

// handleHealthz answers 200 when the store answers a cheap lookup.
func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	// A primary-key lookup of an id no worker uses: cheap on any store.
	if _, err := s.store.WorkerGet(ctx, "healthz.probe"); err != nil && !isNotFound(err) {
		info(r.Context()).err = err
		return errorf(http.StatusServiceUnavailable, protocol.CodeUnavailable, "the store did not answer")
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

// newToken returns a fencing token: 32 random bytes, hex.
func newToken() (string, error) {
	var b [32]byte
	if _, err := crand.Read(b[:]); err != nil {
		return "", fmt.Errorf("making a fencing token: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// backoff is the store.Backoff of this Server: equal jitter over an
// exponential, capped at BackoffMax.
func (s *Server) backoff(count int) time.Duration {
	if count < 1 {
		count = 1
	}
	d := s.cfg.BackoffBase
	for i := 1; i < count && d < s.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, s.cfg.BackoffMax)
	half := d / 2
	if half <= 0 {
		return d
	}
	s.randMu.Lock()
	j := time.Duration(s.rand.Int64N(int64(d-half) + 1))
	s.randMu.Unlock()
	return half + j
}

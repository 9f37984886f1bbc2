// Package dashboard is the operator's web dashboard, served by the control
// plane under /dashboard/: the fleet (workers by pool, provider and GPU
// class), the queue (depth, oldest waiting, throughput and rescues over the
// last hour) and each job (attempts, progress, error, trace id, result),
// with actions to cancel or retry a job and to drain or undrain a worker.
//
// Pages are html/template rendered on the server; a small script
// (assets/app.js) polls a JSON endpoint every 1.5 s and swaps the parts of
// the page that changed, so nothing reloads. Everything it serves is
// embedded in the binary: no Node toolchain, no CDN.
//
// Authentication is the public API's: a public API key, entered once on
// the login page, checked in constant time, and kept as an HttpOnly,
// SameSite=Strict session cookie signed with a secret derived from that
// key (never the key itself). Actions are POSTs that carry the session's
// CSRF token. See session.go.
//
// Reads go straight to the store; actions go through an Operator, the
// control plane's own operations, so that they log, trace and answer
// exactly as the public API does.
package dashboard

import (
	"cmp"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"time"

	"github.com/avatargen/musetalk/control/store"
)

// Prefix is the path the dashboard is served under.
const Prefix = "/dashboard/"

// LiveRoute is the pattern of the JSON endpoint the pages poll; the control
// plane logs its successful requests at debug level only.
const LiveRoute = "GET " + Prefix + "api/"

// Defaults for the zero values of Config.
const (
	DefaultSessionTTL     = 12 * time.Hour
	DefaultSampleInterval = 10 * time.Second
)

//go:embed assets templates
var files embed.FS

// Operator carries out the dashboard's actions with the control plane's
// own operations. Errors that are a *Refusal are shown to the operator as
// they are; any other error is logged and shown as an internal error.
type Operator interface {
	// CancelJob cancels a queued or running job.
	CancelJob(ctx context.Context, id string) error
	// RetryJob queues a failed job again.
	RetryJob(ctx context.Context, id string) error
	// SetDrain sets or clears an operator's drain request on a worker.
	SetDrain(ctx context.Context, workerID string, drain bool) error
	// ServeResult answers r with the job's published output, as the public
	// API's GET /v1/jobs/{id}/result does.
	ServeResult(w http.ResponseWriter, r *http.Request, jobID string)
}

// Refusal is an action the control plane declined (a job that cannot be
// cancelled, an unknown worker), with the HTTP status and a message for
// the operator.
type Refusal struct {
	Status  int
	Message string
}

func (e *Refusal) Error() string { return e.Message }

var _ error = (*Refusal)(nil)

// Config configures a Dashboard.
type Config struct {
	// Store is read for every page (required).
	Store store.Store
	// Operator carries out actions (required).
	Operator Operator
	// Keys are the public API keys; a session starts with one of them.
	// Empty leaves the dashboard open, like the public API.
	Keys []string
	// HeartbeatInterval is the workers' heartbeat period; a heartbeat
	// older than two of them is shown late. Default 5 s.
	HeartbeatInterval time.Duration
	// SessionTTL is how long a login lasts; default 12 h.
	SessionTTL time.Duration
	// SampleInterval is the period of Run's samples of the store's counts
	// (the queue page's charts); default 10 s.
	SampleInterval time.Duration
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// Logger receives errors; nil discards them. Keys and session cookies
	// are never logged.
	Logger *slog.Logger
}

// Dashboard is the dashboard's http.Handler. It is safe for concurrent
// use. It keeps no job state, only a per-process history of the store's
// counts for the charts and the sessions logged out here.
type Dashboard struct {
	cfg      Config
	store    store.Store
	op       Operator
	log      *slog.Logger
	now      func() time.Time
	sessions *sessions
	history  *history
	rates    *rates
	pages    map[string]*template.Template
	static   http.Handler
	mux      *http.ServeMux
}

// New checks cfg and returns a Dashboard.
func New(cfg Config) (*Dashboard, error) {
	if cfg.Store == nil || cfg.Operator == nil {
		return nil, errors.New("dashboard: Config.Store and Config.Operator are required")
	}
	cfg.HeartbeatInterval = cmp.Or(cfg.HeartbeatInterval, 5*time.Second)
	cfg.SessionTTL = cmp.Or(cfg.SessionTTL, DefaultSessionTTL)
	cfg.SampleInterval = cmp.Or(cfg.SampleInterval, DefaultSampleInterval)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ss, err := newSessions(cfg.Keys, cfg.SessionTTL, cfg.Now)
	if err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	pages, err := parseTemplates()
	if err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	assets, err := fs.Sub(files, "assets")
	if err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	d := &Dashboard{
		cfg: cfg, store: cfg.Store, op: cfg.Operator, log: cfg.Logger, now: cfg.Now,
		sessions: ss, history: newHistory(), rates: newRates(), pages: pages,
		static: http.StripPrefix(Prefix+"static/", http.FileServerFS(assets)),
	}
	d.routes()
	return d, nil
}

func (d *Dashboard) routes() {
	mux := http.NewServeMux()
	page := func(pattern string, h func(http.ResponseWriter, *http.Request, *session)) {
		mux.Handle(pattern, d.requireSession(h, false))
	}
	api := func(pattern string, h func(http.ResponseWriter, *http.Request, *session)) {
		mux.Handle(pattern, d.requireSession(h, true))
	}
	mux.HandleFunc("GET "+Prefix+"{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, Prefix+"fleet", http.StatusSeeOther)
	})
	mux.Handle("GET "+Prefix+"static/", d.staticHandler())
	mux.HandleFunc("GET "+Prefix+"login", d.handleLoginPage)
	mux.HandleFunc("POST "+Prefix+"login", d.handleLogin)
	api("POST "+Prefix+"logout", d.handleLogout)

	page("GET "+Prefix+"fleet", d.pageHandler(fleetPage))
	page("GET "+Prefix+"queue", d.pageHandler(queuePage))
	page("GET "+Prefix+"jobs/{id}", d.pageHandler(jobPage))
	page("GET "+Prefix+"jobs", d.handleJobLookup)
	page("GET "+Prefix+"jobs/{id}/result", d.handleResult)
	api("GET "+Prefix+"api/fleet", d.liveHandler(fleetPage))
	api("GET "+Prefix+"api/queue", d.liveHandler(queuePage))
	api("GET "+Prefix+"api/jobs/{id}", d.liveHandler(jobPage))

	api("POST "+Prefix+"jobs/{id}/cancel", d.action(actionCancel))
	api("POST "+Prefix+"jobs/{id}/retry", d.action(actionRetry))
	api("POST "+Prefix+"workers/{id}/drain", d.action(actionDrain))
	api("POST "+Prefix+"workers/{id}/undrain", d.action(actionUndrain))
	d.mux = mux
}

// ServeHTTP serves the dashboard's routes under Prefix, with headers that
// keep its pages out of caches and frames and limit what they may load to
// this origin.
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"media-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	if _, pattern := d.mux.Handler(r); pattern == "" {
		d.renderError(w, r, http.StatusNotFound, "There is no dashboard page at "+r.URL.Path+".")
		return
	}
	d.mux.ServeHTTP(w, r)
}

// staticHandler serves the embedded script and style sheet.
func (d *Dashboard) staticHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		d.static.ServeHTTP(w, r)
	})
}

// Run samples the store's counts every SampleInterval until ctx is done,
// so that the queue page's charts cover the last hour even when nobody
// watched it. Pages sample too, so the charts work without Run, from the
// first view on. Safe to run on every replica: each samples the shared
// store.
func (d *Dashboard) Run(ctx context.Context) {
	t := time.NewTicker(d.cfg.SampleInterval)
	defer t.Stop()
	for {
		if err := d.sample(ctx); err != nil && ctx.Err() == nil {
			d.log.WarnContext(ctx, "dashboard: sampling the store's counts failed", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

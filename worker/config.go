package worker

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/avatargen/musetalk/blob"
	"github.com/avatargen/musetalk/protocol"
	"github.com/avatargen/musetalk/telemetry"
	"github.com/avatargen/musetalk/worker/engine"
)

// Defaults.
const (
	DefaultPollInterval = 5 * time.Second
	DefaultHealthAddr   = ":8000"
	// DefaultGrace is how long a worker told to stop keeps running its job
	// before it releases it. It fits a Kubernetes-style 30 s termination
	// period with time left to release; Docker's own default stop timeout
	// is 10 s, so raise --stop-timeout there (or the lease rescues the job).
	DefaultGrace = 25 * time.Second
	// DefaultReportTimeout bounds the retries of fail and release, which run
	// on past shutdown.
	DefaultReportTimeout = 60 * time.Second
	// DefaultDeliverTimeout bounds how long a finished attempt retries its
	// upload and complete through an outage of the control plane or the
	// object store before it gives the attempt back: 30 minutes, 120 leases
	// at the default 5 s heartbeat interval (a lease is 3 intervals).
	DefaultDeliverTimeout = 30 * time.Minute
	// DefaultCheckTimeout bounds the start-up self-check.
	DefaultCheckTimeout = 5 * time.Minute
	// DefaultProgressEvery is the least time between two progress posts.
	DefaultProgressEvery = 5 * time.Second
)

// Providers the worker knows (PROVIDER).
const (
	ProviderSalad = "salad"
	ProviderVast  = "vast"
	ProviderOther = "other"
)

// Config is the worker's configuration. The first group of fields comes
// from the deployed fleet's environment variables (see ConfigFromEnv); the
// rest is set by the program that embeds the worker.
type Config struct {
	OrchestratorBaseURL string              // ORCHESTRATOR_BASE_URL: the control plane
	InternalAPIKey      telemetry.Secret    // INTERNAL_API_KEY: bearer key of the worker API
	WorkerType          protocol.WorkerType // WORKER_TYPE: main or transient
	Provider            string              // PROVIDER: salad, vast or other
	GPUClass            string              // GPU_CLASS_NAME, e.g. RTX_3060
	B2KeyID             string              // B2_KEY_ID; with the two below, outputs go to B2 (the caller opens it)
	B2AppKey            telemetry.Secret    // B2_APP_KEY
	B2BucketName        string              // B2_BUCKET_NAME
	PollInterval        time.Duration       // POLL_INTERVAL_SEC: claim and heartbeat cadence
	WorkerID            string              // WORKER_ID; defaults from the provider's environment

	// Blob is where inputs are read and outputs written (B2, a local
	// directory, or controlblob). Required.
	Blob blob.Store
	// Engines run jobs; a job's params.engine picks one by name and the
	// first runs jobs that name none. Required.
	Engines []engine.Engine
	// HealthAddr is the listen address of /health, /live and /ready;
	// default ":8000". HealthListener, when set, is used instead.
	HealthAddr     string
	HealthListener net.Listener
	// WorkDir holds each attempt's files; default <os.TempDir()>/musetalk-worker.
	WorkDir string
	// Grace is how long Run lets the current job finish after its context
	// is cancelled before releasing it; default DefaultGrace.
	Grace time.Duration
	// HeartbeatTimeout bounds one heartbeat call; default the poll interval,
	// at least 2 s and at most 10 s.
	HeartbeatTimeout time.Duration
	// ReportTimeout bounds the retried fail and release calls; default
	// DefaultReportTimeout.
	ReportTimeout time.Duration
	// DeliverTimeout bounds the retries of a finished attempt's upload and
	// complete (transport errors, 5xx): until then the output is kept and
	// the failure budget untouched; a 409 (the attempt taken away), a
	// cancel order or a stop end them sooner. Default
	// DefaultDeliverTimeout; keep it several leases long at least.
	DeliverTimeout time.Duration
	// CheckTimeout bounds the start-up self-check; default DefaultCheckTimeout.
	CheckTimeout time.Duration
	// ProgressEvery is the least time between two progress posts; default
	// DefaultProgressEvery. Heartbeats carry progress too.
	ProgressEvery time.Duration
	// Version is reported in heartbeats, claims and /health.
	Version string
	// HTTPClient talks to the control plane; nil uses a plain client (every
	// call has its own deadline).
	HTTPClient *http.Client
	// Logger receives the worker's logs; nil discards them.
	Logger *slog.Logger
	// TracerProvider receives one trace per attempt; nil disables tracing.
	TracerProvider trace.TracerProvider
	// MeterProvider receives the worker's metrics (stage times, frames,
	// GPU memory: see MetricStageDuration and the others); nil disables
	// them.
	MeterProvider metric.MeterProvider
}

// HasB2 reports whether the B2 variables are set (Validate checks they are
// all set or none).
func (c *Config) HasB2() bool {
	return c.B2KeyID != "" || c.B2AppKey != "" || c.B2BucketName != ""
}

// EnvVars lists every environment variable ConfigFromEnv reads: the
// deployed fleet's ten, then the provider variables that WORKER_ID
// defaults from.
func EnvVars() []string {
	return []string{
		"ORCHESTRATOR_BASE_URL", "INTERNAL_API_KEY", "WORKER_TYPE", "PROVIDER", "GPU_CLASS_NAME",
		"B2_KEY_ID", "B2_APP_KEY", "B2_BUCKET_NAME", "POLL_INTERVAL_SEC", "WORKER_ID",
		"SALAD_MACHINE_ID", "SALAD_CONTAINER_GROUP_ID", "VAST_CONTAINERLABEL",
	}
}

// ConfigFromEnv reads the deployed fleet's variables through getenv:
// ORCHESTRATOR_BASE_URL, INTERNAL_API_KEY, WORKER_TYPE (default main),
// PROVIDER (default other), GPU_CLASS_NAME (default unknown), B2_KEY_ID,
// B2_APP_KEY, B2_BUCKET_NAME, POLL_INTERVAL_SEC (default 5) and WORKER_ID.
// Without WORKER_ID the ID is "salad-<SALAD_MACHINE_ID>" (with the
// container group, "salad-<SALAD_CONTAINER_GROUP_ID>-<SALAD_MACHINE_ID>")
// on SaladCloud, "vast-<VAST_CONTAINERLABEL>" on Vast.ai, else the host
// name. The result is validated; errors name the variable, never a secret.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	get := func(k string) string { return strings.TrimSpace(getenv(k)) }
	c := Config{
		OrchestratorBaseURL: get("ORCHESTRATOR_BASE_URL"),
		InternalAPIKey:      telemetry.Secret(get("INTERNAL_API_KEY")),
		WorkerType:          protocol.WorkerType(get("WORKER_TYPE")),
		Provider:            get("PROVIDER"),
		GPUClass:            get("GPU_CLASS_NAME"),
		B2KeyID:             get("B2_KEY_ID"),
		B2AppKey:            telemetry.Secret(get("B2_APP_KEY")),
		B2BucketName:        get("B2_BUCKET_NAME"),
		WorkerID:            get("WORKER_ID"),
	}
	if c.WorkerType == "" {
		c.WorkerType = protocol.WorkerMain
	}
	if c.Provider == "" {
		c.Provider = ProviderOther
	}
	if c.GPUClass == "" {
		c.GPUClass = "unknown"
	}
	var pollErr error
	c.PollInterval = DefaultPollInterval
	if s := get("POLL_INTERVAL_SEC"); s != "" {
		sec, err := strconv.ParseFloat(s, 64)
		switch {
		case err != nil:
			pollErr = fmt.Errorf("POLL_INTERVAL_SEC: %q is not a number of seconds", s)
		case !(sec >= 0.01 && sec <= 3600):
			pollErr = fmt.Errorf("POLL_INTERVAL_SEC: %q is outside 0.01..3600 seconds", s)
		default:
			c.PollInterval = time.Duration(sec * float64(time.Second))
		}
	}
	if c.WorkerID == "" {
		c.WorkerID = DefaultWorkerID(getenv, os.Hostname)
	}
	return c, errors.Join(pollErr, c.Validate())
}

// DefaultWorkerID derives a worker ID from the provider's environment:
// SaladCloud's SALAD_MACHINE_ID (and SALAD_CONTAINER_GROUP_ID), Vast.ai's
// VAST_CONTAINERLABEL, else the host name. Characters an ID may not hold
// become '-'.
func DefaultWorkerID(getenv func(string) string, hostname func() (string, error)) string {
	if m := strings.TrimSpace(getenv("SALAD_MACHINE_ID")); m != "" {
		if g := strings.TrimSpace(getenv("SALAD_CONTAINER_GROUP_ID")); g != "" {
			return sanitizeID("salad-" + g + "-" + m)
		}
		return sanitizeID("salad-" + m)
	}
	if l := strings.TrimSpace(getenv("VAST_CONTAINERLABEL")); l != "" {
		return sanitizeID("vast-" + l)
	}
	if h, err := hostname(); err == nil && strings.TrimSpace(h) != "" {
		return sanitizeID(h)
	}
	return "worker"
}

func sanitizeID(s string) string {
	b := []byte(s)
	for i, c := range b {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-'
		if !ok {
			b[i] = '-'
		}
	}
	s = strings.TrimLeft(string(b), "._:-")
	if len(s) > 128 {
		s = s[:128]
	}
	if s == "" {
		return "worker"
	}
	return s
}

// Validate checks the environment-derived fields and names every bad one,
// one line each (a fresh deployment usually misses several at once); each
// names the variable and what it expects, never a secret's value.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.OrchestratorBaseURL == "" {
		bad("ORCHESTRATOR_BASE_URL: required: the control plane's URL, e.g. https://orch.example.com")
	} else if u, err := url.Parse(c.OrchestratorBaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("ORCHESTRATOR_BASE_URL: not an http:// or https:// URL with a host")
	} else if u.User != nil {
		bad("ORCHESTRATOR_BASE_URL: must not carry credentials (the key goes in INTERNAL_API_KEY)")
	} else if u.RawQuery != "" || u.Fragment != "" {
		bad("ORCHESTRATOR_BASE_URL: must not have a query or fragment")
	}
	if c.InternalAPIKey == "" {
		bad("INTERNAL_API_KEY: required: the key the control plane expects from workers")
	}
	if !c.WorkerType.Valid() {
		bad("WORKER_TYPE: %q is not one of main, transient", c.WorkerType)
	}
	switch c.Provider {
	case ProviderSalad, ProviderVast, ProviderOther:
	default:
		bad("PROVIDER: %q is not one of salad, vast, other", c.Provider)
	}
	if len(c.GPUClass) > 64 {
		bad("GPU_CLASS_NAME: longer than 64 bytes")
	}
	if c.HasB2() {
		var missing []string
		if c.B2KeyID == "" {
			missing = append(missing, "B2_KEY_ID")
		}
		if c.B2AppKey == "" {
			missing = append(missing, "B2_APP_KEY")
		}
		if c.B2BucketName == "" {
			missing = append(missing, "B2_BUCKET_NAME")
		}
		if len(missing) > 0 {
			bad("%s: required when any of B2_KEY_ID, B2_APP_KEY, B2_BUCKET_NAME is set", strings.Join(missing, ", "))
		}
	}
	if c.PollInterval <= 0 {
		bad("POLL_INTERVAL_SEC: must be a positive number of seconds")
	}
	if !protocol.ValidID(c.WorkerID) {
		bad("WORKER_ID: %q is not 1 to 128 letters, digits and . _ : - starting with a letter or digit", c.WorkerID)
	}
	return errors.Join(errs...)
}

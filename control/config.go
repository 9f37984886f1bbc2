package control

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/avatargen/musetalk/blob"
	"github.com/avatargen/musetalk/control/store"
)

// Defaults for the zero values of Config.
const (
	DefaultHeartbeatInterval = 5 * time.Second
	DefaultStallTimeout      = 15 * time.Minute // not applied by New: a zero StallTimeout disables the check
	DefaultMaxInterruptions  = 5
	DefaultMaxFailures       = 3
	DefaultBackoffBase       = 2 * time.Second
	DefaultBackoffMax        = 5 * time.Minute
	DefaultMaxUploadBytes    = 512 << 20 // a whole multipart submission
	DefaultMaxAvatarBytes    = 384 << 20 // the avatar file of a submission
	DefaultMaxAudioBytes     = 128 << 20 // the audio file of a submission
	DefaultMaxOutputBytes    = 2 << 30   // one output uploaded through the internal blob route
	// missedHeartbeats is how many heartbeat intervals make a worker offline
	// and a lease lapse by default.
	missedHeartbeats = 3
)

// Config configures a Server. The zero value of every optional field
// selects its default; New rejects a config it cannot run with and names
// the field.
type Config struct {
	// Store holds jobs, attempts and workers (required). The Server does
	// not close it.
	Store store.Store
	// Blob holds inputs and outputs (required). The Server does not close it.
	Blob blob.Store
	// Logger receives structured logs; nil discards them. Keys and tokens
	// are never logged.
	Logger *slog.Logger
	// TracerProvider makes a span per request and per job transition; nil
	// is a no-op provider.
	TracerProvider trace.TracerProvider
	// Now is the clock; nil is time.Now. Tests drive it to move leases.
	Now func() time.Time
	// RandSource feeds the backoff jitter; nil seeds a PCG from
	// crypto/rand. The Server serialises its use.
	RandSource rand.Source

	// InternalAPIKey is the bearer key of the worker API (required; the
	// workers' INTERNAL_API_KEY).
	InternalAPIKey string
	// PublicAPIKeys are the bearer keys of the public API. Empty leaves the
	// public API open to anyone who can reach it (the embedded default).
	// None may equal InternalAPIKey.
	PublicAPIKeys []string

	// HeartbeatInterval is the workers' heartbeat period (POLL_INTERVAL_SEC);
	// default 5s.
	HeartbeatInterval time.Duration
	// LeaseDuration is how long a claim or a heartbeat keeps an attempt
	// without another; default 3 heartbeat intervals, at least one.
	LeaseDuration time.Duration
	// OfflineAfter marks a worker offline after this long without a
	// heartbeat; default 3 heartbeat intervals (3 missed heartbeats).
	OfflineAfter time.Duration
	// StallTimeout interrupts a running attempt whose progress has not
	// changed for this long even though its worker heartbeats. Zero
	// disables the check; DefaultStallTimeout is the suggested value.
	StallTimeout time.Duration
	// SweepInterval is the period of RunSweeper; default the heartbeat
	// interval.
	SweepInterval time.Duration

	// MaxInterruptions is a new job's interruption budget (lost leases,
	// offline workers, stalls, releases); default 5.
	MaxInterruptions int
	// MaxFailures is a new job's failure budget (failures its workers
	// report); default 3.
	MaxFailures int
	// BackoffBase and BackoffMax shape the delay before a retry: the n-th
	// retry of a budget waits a random time in [d/2, d] with
	// d = min(BackoffBase*2^(n-1), BackoffMax) ("equal jitter").
	// Defaults 2s and 5m.
	BackoffBase, BackoffMax time.Duration

	// MaxUploadBytes bounds a whole multipart submission; default 512 MiB.
	MaxUploadBytes int64
	// MaxAvatarBytes and MaxAudioBytes bound each file of a submission;
	// defaults 384 MiB and 128 MiB (never above MaxUploadBytes).
	MaxAvatarBytes, MaxAudioBytes int64
	// MaxOutputBytes bounds an output a worker uploads through the internal
	// blob route; default 2 GiB.
	MaxOutputBytes int64
}

// withDefaults returns c with defaults filled in, or an error naming the
// first field that cannot be used.
func (c Config) withDefaults() (Config, error) {
	switch {
	case c.Store == nil:
		return c, errors.New("Config.Store is required")
	case c.Blob == nil:
		return c, errors.New("Config.Blob is required")
	case c.InternalAPIKey == "":
		return c, errors.New("Config.InternalAPIKey is required: workers authenticate with it")
	case strings.TrimSpace(c.InternalAPIKey) != c.InternalAPIKey || strings.ContainsAny(c.InternalAPIKey, " \t\r\n"):
		return c, errors.New("Config.InternalAPIKey must not contain spaces")
	}
	for i, k := range c.PublicAPIKeys {
		switch {
		case k == "" || strings.ContainsAny(k, " \t\r\n"):
			return c, fmt.Errorf("Config.PublicAPIKeys[%d] is empty or contains spaces", i)
		case k == c.InternalAPIKey:
			return c, fmt.Errorf("Config.PublicAPIKeys[%d] equals InternalAPIKey: the public and worker keys must differ", i)
		}
	}
	durations := []struct {
		name string
		v    *time.Duration
	}{
		{"HeartbeatInterval", &c.HeartbeatInterval}, {"LeaseDuration", &c.LeaseDuration},
		{"OfflineAfter", &c.OfflineAfter}, {"StallTimeout", &c.StallTimeout}, {"SweepInterval", &c.SweepInterval},
		{"BackoffBase", &c.BackoffBase}, {"BackoffMax", &c.BackoffMax},
	}
	for _, d := range durations {
		if *d.v < 0 {
			return c, fmt.Errorf("Config.%s must not be negative, got %v", d.name, *d.v)
		}
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.LeaseDuration == 0 {
		c.LeaseDuration = missedHeartbeats * c.HeartbeatInterval
	}
	if c.OfflineAfter == 0 {
		c.OfflineAfter = missedHeartbeats * c.HeartbeatInterval
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = c.HeartbeatInterval
	}
	if c.BackoffBase == 0 {
		c.BackoffBase = DefaultBackoffBase
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = DefaultBackoffMax
	}
	switch {
	case c.LeaseDuration < c.HeartbeatInterval:
		return c, fmt.Errorf("Config.LeaseDuration (%v) must be at least HeartbeatInterval (%v), or every lease lapses between heartbeats", c.LeaseDuration, c.HeartbeatInterval)
	case c.OfflineAfter < c.HeartbeatInterval:
		return c, fmt.Errorf("Config.OfflineAfter (%v) must be at least HeartbeatInterval (%v)", c.OfflineAfter, c.HeartbeatInterval)
	case c.BackoffMax < c.BackoffBase:
		return c, fmt.Errorf("Config.BackoffMax (%v) must be at least BackoffBase (%v)", c.BackoffMax, c.BackoffBase)
	}
	ints := []struct {
		name string
		v    *int
		def  int
	}{
		{"MaxInterruptions", &c.MaxInterruptions, DefaultMaxInterruptions},
		{"MaxFailures", &c.MaxFailures, DefaultMaxFailures},
	}
	for _, n := range ints {
		if *n.v < 0 {
			return c, fmt.Errorf("Config.%s must not be negative, got %d", n.name, *n.v)
		}
		if *n.v == 0 {
			*n.v = n.def
		}
	}
	sizes := []struct {
		name string
		v    *int64
		def  int64
	}{
		{"MaxUploadBytes", &c.MaxUploadBytes, DefaultMaxUploadBytes},
		{"MaxAvatarBytes", &c.MaxAvatarBytes, DefaultMaxAvatarBytes},
		{"MaxAudioBytes", &c.MaxAudioBytes, DefaultMaxAudioBytes},
		{"MaxOutputBytes", &c.MaxOutputBytes, DefaultMaxOutputBytes},
	}
	for _, n := range sizes {
		if *n.v < 0 {
			return c, fmt.Errorf("Config.%s must not be negative, got %d", n.name, *n.v)
		}
		if *n.v == 0 {
			*n.v = n.def
		}
	}
	c.MaxAvatarBytes = min(c.MaxAvatarBytes, c.MaxUploadBytes)
	c.MaxAudioBytes = min(c.MaxAudioBytes, c.MaxUploadBytes)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.TracerProvider == nil {
		c.TracerProvider = noop.NewTracerProvider()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, nil
}

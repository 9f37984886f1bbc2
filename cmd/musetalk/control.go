package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/avatargen/musetalk/control"
	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/control/store/postgres"
	"github.com/avatargen/musetalk/control/store/sqlite"
	"github.com/avatargen/musetalk/telemetry"
)

func controlCommand() *cli.Command {
	return &cli.Command{
		Name:  "control",
		Usage: "run the control plane: job queue, worker registry, worker and public APIs",
		Description: `Serves the public API (/v1/...), the worker API (/internal/main/...),
the operator dashboard (/dashboard/), /healthz and /metrics on --addr. Jobs live in SQLite under --data-dir by
default, or in PostgreSQL when --db is a postgres:// URL (several replicas
may share one database). Objects live in B2 when B2_BUCKET_NAME, B2_KEY_ID
and B2_APP_KEY are set, else in --blob-dir. Unless GOGC is set, the Go
garbage collector runs at GOGC=400 (the control plane's heap is small).`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "addr", Value: ":8080", Usage: "listen address", EnvVars: []string{"MUSETALK_ADDR"}},
			&cli.StringFlag{Name: "data-dir", Value: "./musetalk-data", Usage: "directory for the SQLite database and the local object store", EnvVars: []string{"MUSETALK_DATA_DIR"}},
			&cli.StringFlag{Name: "db", Usage: "database: a SQLite file path, or a postgres:// URL (default: <data-dir>/control.db)", EnvVars: []string{"MUSETALK_DB"}},
			&cli.StringFlag{Name: "internal-api-key", Usage: "key workers send as Authorization: Bearer (required)", EnvVars: []string{"INTERNAL_API_KEY"}},
			&cli.StringFlag{Name: "api-keys", Usage: "comma-separated keys for the public API; empty leaves it open", EnvVars: []string{"MUSETALK_API_KEYS"}},
			&cli.DurationFlag{Name: "heartbeat-interval", Value: 5 * time.Second, Usage: "the workers' heartbeat interval (their POLL_INTERVAL_SEC)", EnvVars: []string{"MUSETALK_HEARTBEAT_INTERVAL"}},
			&cli.DurationFlag{Name: "lease", Usage: "attempt lease, extended by heartbeats and progress", DefaultText: "3 heartbeat intervals", EnvVars: []string{"MUSETALK_LEASE"}},
			&cli.DurationFlag{Name: "offline-after", Usage: "mark a worker offline (and interrupt its attempt) after this long without a heartbeat", DefaultText: "3 heartbeat intervals", EnvVars: []string{"MUSETALK_OFFLINE_AFTER"}},
			&cli.DurationFlag{Name: "stall-timeout", Value: 15 * time.Minute, Usage: "interrupt an attempt whose worker heartbeats but reports no progress for this long (0 disables)", EnvVars: []string{"MUSETALK_STALL_TIMEOUT"}},
			&cli.IntFlag{Name: "max-interruptions", Value: 5, Usage: "attempts a job may lose to worker loss, expired leases, stalls and drains", EnvVars: []string{"MUSETALK_MAX_INTERRUPTIONS"}},
			&cli.IntFlag{Name: "max-failures", Value: 3, Usage: "attempts a job may fail (as reported by workers) before it ends failed", EnvVars: []string{"MUSETALK_MAX_FAILURES"}},
			&cli.Int64Flag{Name: "max-upload-bytes", Value: 512 << 20, Usage: "largest accepted multipart submission, in bytes", EnvVars: []string{"MUSETALK_MAX_UPLOAD_BYTES"}},
		}, blobFlags()...),
		Action: runControl,
	}
}

func runControl(c *cli.Context) error {
	setControlGC()
	log, err := logger(c)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()

	key := c.String("internal-api-key")
	if key == "" {
		return errors.New("INTERNAL_API_KEY (or --internal-api-key) is required: workers authenticate with it")
	}
	dataDir := c.String("data-dir")
	st, where, err := openStore(ctx, c.String("db"), dataDir)
	if err != nil {
		return err
	}
	defer st.Close()
	bs, bwhere, err := openBlob(ctx, c, filepath.Join(dataDir, "blobs"))
	if err != nil {
		return err
	}
	tr, err := telemetry.TracingFromEnv(ctx, os.Getenv, "musetalk-control", version)
	if err != nil {
		return err
	}
	defer tr.Shutdown(context.WithoutCancel(ctx))

	srv, err := control.New(control.Config{
		Store:             st,
		Blob:              bs,
		Logger:            log,
		TracerProvider:    tr.Provider,
		InternalAPIKey:    key,
		PublicAPIKeys:     splitKeys(c.String("api-keys")),
		HeartbeatInterval: c.Duration("heartbeat-interval"),
		LeaseDuration:     c.Duration("lease"),
		OfflineAfter:      c.Duration("offline-after"),
		StallTimeout:      c.Duration("stall-timeout"),
		MaxInterruptions:  c.Int("max-interruptions"),
		MaxFailures:       c.Int("max-failures"),
		MaxUploadBytes:    c.Int64("max-upload-bytes"),
	})
	if err != nil {
		return fmt.Errorf("configuring the control plane: %w", err)
	}
	ln, err := net.Listen("tcp", c.String("addr"))
	if err != nil {
		return fmt.Errorf("listening on %s: %w", c.String("addr"), err)
	}
	log.Info("control plane listening", "addr", ln.Addr().String(), "db", where, "blobs", bwhere, "tracing", tr.Exporting)
	return serveUntilDone(ctx, ln, srv.Handler(), srv.RunSweeper, srv.RunDashboard)
}

// serveUntilDone serves h on ln and runs each background loop until ctx is
// done, then shuts the server down gracefully.
func serveUntilDone(ctx context.Context, ln net.Listener, h http.Handler, loops ...func(context.Context)) error {
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	for _, loop := range loops {
		go func() { loop(ctx) }()
	}
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()
	if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving on %s: %w", ln.Addr(), err)
	}
	<-done
	return nil
}

// openStore opens PostgreSQL for a postgres:// URL, else a SQLite file
// (default <dataDir>/control.db). It returns a description without secrets.
func openStore(ctx context.Context, db, dataDir string) (store.Store, string, error) {
	if strings.HasPrefix(db, "postgres://") || strings.HasPrefix(db, "postgresql://") {
		st, err := postgres.Open(ctx, db)
		if err != nil {
			return nil, "", fmt.Errorf("opening PostgreSQL: %w", err)
		}
		return st, "postgres", nil
	}
	if db == "" {
		db = filepath.Join(dataDir, "control.db")
	}
	st, err := sqlite.Open(ctx, db)
	if err != nil {
		return nil, "", fmt.Errorf("opening SQLite database %s: %w", db, err)
	}
	return st, "sqlite:" + db, nil
}

func splitKeys(s string) []string {
	var keys []string
	for _, k := range strings.Split(s, ",") {
		if k = strings.TrimSpace(k); k != "" {
			keys = append(keys, k)
		}
	}
	return keys
}

package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/avatargen/musetalk/blob"
	"github.com/avatargen/musetalk/musetalk"
	"github.com/avatargen/musetalk/musetalk/modeldir"
	"github.com/avatargen/musetalk/telemetry"
	"github.com/avatargen/musetalk/worker"
	"github.com/avatargen/musetalk/worker/controlblob"
	"github.com/avatargen/musetalk/worker/engine"
	"github.com/avatargen/musetalk/worker/preview"
)

// seedVars are the deployed worker's environment variables (the seed), each
// with the flag that can stand in for it.
var seedVars = []struct{ env, flag, usage string }{
	{"ORCHESTRATOR_BASE_URL", "orchestrator-base-url", "base URL of the control plane (required)"},
	{"INTERNAL_API_KEY", "internal-api-key", "key the control plane's worker API wants (required, secret)"},
	{"WORKER_TYPE", "worker-type", "pool: main or transient (default main)"},
	{"PROVIDER", "provider", "salad, vast or other (default other)"},
	{"GPU_CLASS_NAME", "gpu-class-name", "GPU class reported in heartbeats, e.g. RTX_3060"},
	{"B2_KEY_ID", "b2-key-id", "Backblaze B2 application key id"},
	{"B2_APP_KEY", "b2-app-key", "Backblaze B2 application key (secret)"},
	{"B2_BUCKET_NAME", "b2-bucket", "Backblaze B2 bucket name"},
	{"POLL_INTERVAL_SEC", "poll-interval-sec", "seconds between heartbeats and between claims (default 5)"},
	{"WORKER_ID", "worker-id", "worker id (default: from SALAD_MACHINE_ID, VAST_CONTAINERLABEL, or the host name)"},
}

func workerCommand() *cli.Command {
	var flags []cli.Flag
	for _, v := range seedVars {
		flags = append(flags, &cli.StringFlag{Name: v.flag, Usage: v.usage, EnvVars: []string{v.env}})
	}
	flags = append(flags,
		&cli.StringFlag{Name: "b2-endpoint", Usage: "B2 authorization API base URL override (tests)", EnvVars: []string{"B2_ENDPOINT"}},
		&cli.StringFlag{Name: "blob-dir", Usage: "local object directory shared with the control plane; without it and without B2, objects go through the control plane", EnvVars: []string{"MUSETALK_BLOB_DIR"}},
		&cli.StringFlag{Name: "health-addr", Value: worker.DefaultHealthAddr, Usage: "listen address of /health (liveness), /live and /ready", EnvVars: []string{"MUSETALK_HEALTH_ADDR"}},
		&cli.DurationFlag{Name: "grace", Value: worker.DefaultGrace, Usage: "on SIGTERM, how long the current job may finish before it is released", EnvVars: []string{"MUSETALK_GRACE"}},
		&cli.StringFlag{Name: "work-dir", Usage: "directory for each attempt's files (default: a folder under the system temp dir)", EnvVars: []string{"MUSETALK_WORK_DIR"}},
		&cli.StringSliceFlag{Name: "engine", Value: cli.NewStringSlice("musetalk", "preview"), Usage: "engines this worker runs; the first runs jobs that name none (available: musetalk, preview)", EnvVars: []string{"MUSETALK_ENGINES"}},
	)
	flags = append(flags, musetalkEngineFlags()...)
	return &cli.Command{
		Name:  "worker",
		Usage: "run a GPU worker: heartbeat, claim jobs, render, upload to B2",
		Description: `Configured by the deployed fleet's environment variables (each also a
flag): ORCHESTRATOR_BASE_URL, INTERNAL_API_KEY, WORKER_TYPE, PROVIDER,
GPU_CLASS_NAME, B2_KEY_ID, B2_APP_KEY, B2_BUCKET_NAME, POLL_INTERVAL_SEC,
WORKER_ID. Serves /health (liveness: 200 while the heartbeat loop lives,
also during long jobs) and /ready on port 8000. SIGTERM or SIGINT drains:
no new claims, the current job gets --grace to finish, then is released; a
second signal releases it at once.

Engines: musetalk (the default: MuseTalk on --device, weights from
--weights, prepared avatars kept in --avatar-cache) and preview (muxes the
avatar and the audio, no model). --device auto takes the GPU when this
build has CUDA and one is usable, else the CPU; --precision fp16 or fp32
sets how it stores weights and activations (default: the device's, fp16 on
cuda, fp32 on cpu; fp16 needs cuda). The self-check names the backend and
its precision (e.g. cpu/avx512 (fp32)), heartbeats report GPU_CLASS_NAME as
given. A
worker whose weight directory is incomplete, or whose device does not
start, stays alive but is not ready and claims no job: its self-check (in
/health and the control plane's registry) names the missing files and the
command that fetches them, or the device's error. Use --engine preview to
run without weights.`,
		Flags:  flags,
		Action: runWorker,
	}
}

func runWorker(c *cli.Context) error {
	log, err := logger(c)
	if err != nil {
		return err
	}
	// Flags stand in for their variables; the rest (provider ids used for
	// the default WORKER_ID) come from the process environment.
	byEnv := map[string]string{}
	for _, v := range seedVars {
		byEnv[v.env] = v.flag
	}
	cfg, err := worker.ConfigFromEnv(func(k string) string {
		if f, ok := byEnv[k]; ok {
			return c.String(f)
		}
		return os.Getenv(k)
	})
	if err != nil {
		if lines := strings.Split(err.Error(), "\n"); len(lines) > 1 {
			return fmt.Errorf("%d problems with the worker's settings (variables or flags):\n  %s", len(lines), strings.Join(lines, "\n  "))
		}
		return err
	}
	cfg.HealthAddr = c.String("health-addr")
	cfg.Grace = c.Duration("grace")
	cfg.WorkDir = c.String("work-dir")
	cfg.Version = version
	cfg.Logger = log

	ctx := c.Context
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)

	settings, err := engineSettingsFrom(c, log)
	if err != nil {
		return err
	}
	cfg.Blob, err = workerBlob(ctx, c, cfg)
	if err != nil {
		return err
	}
	for _, name := range c.StringSlice("engine") {
		e, err := newEngineWith(name, settings)
		if err != nil {
			return err
		}
		cfg.Engines = append(cfg.Engines, e)
	}
	// The worker's id is its service.instance.id: the fleet's metrics
	// and traces say which worker they came from.
	tel, err := telemetry.FromEnv(ctx, os.Getenv, telemetry.Service{Name: "musetalk-worker", Version: version, Instance: cfg.WorkerID})
	if err != nil {
		return err
	}
	defer tel.Shutdown(context.WithoutCancel(ctx))
	cfg.TracerProvider = tel.Tracing.Provider
	cfg.MeterProvider = tel.Metrics.Provider

	w, err := worker.New(cfg)
	if err != nil {
		return fmt.Errorf("configuring the worker: %w", err)
	}
	return w.RunWithSignals(ctx, sigs)
}

// workerBlob picks the worker's object store: B2 when configured (the
// fleet), else a shared local directory, else the control plane's blob
// routes (the embedded default with remote workers).
func workerBlob(ctx context.Context, c *cli.Context, cfg worker.Config) (blob.Store, error) {
	if b2Configured(c) {
		s, _, err := openBlob(ctx, c, "")
		return s, err
	}
	if c.String("blob-dir") != "" {
		s, _, err := openBlob(ctx, c, "")
		return s, err
	}
	s, err := controlblob.New(cfg.OrchestratorBaseURL, cfg.InternalAPIKey.Reveal(), nil)
	if err != nil {
		return nil, fmt.Errorf("object store through the control plane: %w", err)
	}
	return s, nil
}

// engineSettings configure the MuseTalk engine; zero values take the
// defaults (modeldir.Default(), musetalk.DefaultCacheDir(), device auto,
// …).
type engineSettings struct {
	weightsDir    string
	cacheDir      string
	cacheMaxBytes int64
	device        deviceConfig
	logger        *slog.Logger
}

// musetalkEngineFlags are the MuseTalk engine's flags of `musetalk worker`.
func musetalkEngineFlags() []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "weights", Usage: "weight directory of the musetalk engine (default: " + modeldir.Default() + "; fill it with: musetalk weights fetch)", EnvVars: []string{"MUSETALK_WEIGHTS"}},
		&cli.StringFlag{Name: "avatar-cache", Usage: "directory of prepared avatars (default: " + musetalk.DefaultCacheDir() + ")", EnvVars: []string{"MUSETALK_AVATAR_CACHE"}},
		&cli.Int64Flag{Name: "avatar-cache-max-bytes", Value: musetalk.DefaultCacheMaxBytes, Usage: "size bound of the avatar cache; least recently used avatars go first", EnvVars: []string{"MUSETALK_AVATAR_CACHE_MAX_BYTES"}},
	}, deviceFlags("threads of the musetalk engine on the cpu device")...)
}

// engineSettingsFrom reads musetalkEngineFlags; a bad --device or
// --threads is an error.
func engineSettingsFrom(c *cli.Context, log *slog.Logger) (engineSettings, error) {
	device, err := deviceConfigFrom(c, log)
	if err != nil {
		return engineSettings{}, err
	}
	return engineSettings{weightsDir: c.String("weights"), cacheDir: c.String("avatar-cache"),
		cacheMaxBytes: c.Int64("avatar-cache-max-bytes"), device: device, logger: log}, nil
}

// newEngine builds a worker engine by name with default settings.
func newEngine(name string) (engine.Engine, error) {
	return newEngineWith(name, engineSettings{})
}

// newEngineWith builds a worker engine by name. The musetalk engine opens
// nothing here: it starts its device, checks its weights and opens its
// cache in the worker's self-check, which fails (and the worker claims
// nothing) without weights or when the device does not start.
func newEngineWith(name string, s engineSettings) (engine.Engine, error) {
	switch name {
	case musetalk.EngineName:
		return musetalk.NewEngine(musetalk.EngineOptions{Options: musetalk.Options{
			WeightsDir: s.weightsDir, CacheDir: s.cacheDir, CacheMaxBytes: s.cacheMaxBytes,
			NewBackend: s.device.open, Logger: s.logger,
		}}), nil
	case preview.Name:
		return preview.New(preview.Options{}), nil
	default:
		return nil, fmt.Errorf("--engine %q: unknown engine (available: %s, %s)", name, musetalk.EngineName, preview.Name)
	}
}

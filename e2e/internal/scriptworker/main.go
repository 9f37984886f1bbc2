// Command scriptworker is the real worker daemon (package worker) with a
// scripted engine in place of MuseTalk, for the end-to-end tests in e2e.
//
// It is configured like `musetalk worker`: the fleet's environment
// variables (ORCHESTRATOR_BASE_URL, INTERNAL_API_KEY, WORKER_ID,
// POLL_INTERVAL_SEC, B2_KEY_ID, B2_APP_KEY, B2_BUCKET_NAME, ...) plus
// B2_ENDPOINT, and flags for the rest. Without the B2 variables it reads
// and writes objects through the control plane (controlblob), as
// `musetalk worker` does. Signals are handled as
// cmd/musetalk/worker.go does: the first SIGTERM or SIGINT drains (the job
// gets --grace), the second releases the job at once.
//
// The engine, named "script", reads its script from the job's audio file,
// JSON like
//
//	{"seconds": 6, "frames": 30, "fail": "", "retryable": false, "tail_seconds": 0}
//
// It reports progress after each of frames equal steps spread over
// seconds (the last step takes tail_seconds longer: a window in which a
// test sees the job at (frames-1)/frames and acts), then writes a small output naming the job, attempt and worker,
// or fails with the message in fail (permanently unless retryable). It
// returns as soon as its context ends. With --events-dir it appends JSON
// lines to <dir>/<job>-<attempt>.jsonl: {"event":"start"|"ctx_done"|
// "done"|"fail","t":<unix ns>,"worker":...,"cause":...}.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/avatargen/musetalk/blob/b2"
	"github.com/avatargen/musetalk/protocol"
	"github.com/avatargen/musetalk/telemetry"
	"github.com/avatargen/musetalk/worker"
	"github.com/avatargen/musetalk/worker/controlblob"
	"github.com/avatargen/musetalk/worker/engine"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "scriptworker:", err)
		os.Exit(1)
	}
}

func run() error {
	healthAddr := flag.String("health-addr", worker.DefaultHealthAddr, "listen address of /health, /live and /ready")
	grace := flag.Duration("grace", worker.DefaultGrace, "on SIGTERM, how long the current job may finish before it is released")
	workDir := flag.String("work-dir", "", "directory for each attempt's files")
	events := flag.String("events-dir", "", "directory for the engine's event files")
	flag.Parse()

	log, err := telemetry.NewLogger(os.Stderr, "text", "info")
	if err != nil {
		return err
	}
	cfg, err := worker.ConfigFromEnv(os.Getenv)
	if err != nil {
		return err
	}
	cfg.HealthAddr = *healthAddr
	cfg.Grace = *grace
	cfg.WorkDir = *workDir
	cfg.Version = "e2e-script"
	cfg.Logger = log

	// The two-stage stop of musetalk worker, through the same library call.
	ctx := context.Background()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)

	if cfg.HasB2() {
		bs, err := b2.New(ctx, b2.Config{
			KeyID: cfg.B2KeyID, AppKey: cfg.B2AppKey.Reveal(), Bucket: cfg.B2BucketName,
			Endpoint: os.Getenv("B2_ENDPOINT"),
		})
		if err != nil {
			return err
		}
		cfg.Blob = bs
	} else {
		bs, err := controlblob.New(cfg.OrchestratorBaseURL, cfg.InternalAPIKey.Reveal(), nil)
		if err != nil {
			return err
		}
		cfg.Blob = bs
	}
	cfg.Engines = []engine.Engine{&scriptEngine{worker: cfg.WorkerID, events: *events}}

	w, err := worker.New(cfg)
	if err != nil {
		return fmt.Errorf("configuring the worker: %w", err)
	}
	return w.RunWithSignals(ctx, sigs)
}

// script is what a job's audio file says the engine should do.
type script struct {
	Seconds   float64 `json:"seconds"`
	Frames    int     `json:"frames"`
	Fail      string  `json:"fail"`
	Retryable bool    `json:"retryable"`
	Tail      float64 `json:"tail_seconds"`
}

// scriptEngine runs scripts; see the package comment.
type scriptEngine struct {
	worker string
	events string
	mu     sync.Mutex
}

func (e *scriptEngine) Name() string { return "script" }

func (e *scriptEngine) Check(context.Context) (engine.CheckResult, error) {
	return engine.CheckResult{Device: "cpu", WeightsPresent: true}, nil
}

func (e *scriptEngine) Run(ctx context.Context, job *engine.Job, progress engine.ProgressFunc) error {
	rec := func(event, cause string) {
		e.record(job, map[string]any{"event": event, "t": time.Now().UnixNano(), "worker": e.worker, "cause": cause})
	}
	rec("start", "")
	raw, err := os.ReadFile(job.AudioPath)
	if err != nil {
		return engine.Retryable(fmt.Errorf("script: reading %s: %w", job.AudioPath, err))
	}
	var s script
	if err := json.Unmarshal(raw, &s); err != nil {
		return engine.Permanent(fmt.Errorf("script: audio file is not a script: %w", err))
	}
	s.Frames = max(s.Frames, 1)
	step := time.Duration(s.Seconds * float64(time.Second) / float64(s.Frames))
	progress(protocol.Progress{Stage: "script", FramesTotal: s.Frames})
	t := time.NewTimer(step)
	defer t.Stop()
	for i := 1; i <= s.Frames; i++ {
		select {
		case <-ctx.Done():
			rec("ctx_done", context.Cause(ctx).Error())
			return ctx.Err()
		case <-t.C:
		}
		progress(protocol.Progress{Stage: "script", FramesDone: i, FramesTotal: s.Frames})
		if i == s.Frames-1 {
			t.Reset(step + time.Duration(s.Tail*float64(time.Second)))
			continue
		}
		t.Reset(step)
	}
	if s.Fail != "" {
		rec("fail", s.Fail)
		if s.Retryable {
			return engine.Retryable(errors.New(s.Fail))
		}
		return engine.Permanent(errors.New(s.Fail))
	}
	out := fmt.Sprintf("scripted output job=%s attempt=%d worker=%s\n", job.ID, job.Attempt, e.worker)
	if err := os.WriteFile(job.OutputPath, []byte(out), 0o644); err != nil {
		return engine.Retryable(fmt.Errorf("script: writing the output: %w", err))
	}
	rec("done", "")
	return nil
}

// record appends one event line to the attempt's event file.
func (e *scriptEngine) record(job *engine.Job, ev map[string]any) {
	if e.events == "" {
		return
	}
	line, _ := json.Marshal(ev)
	e.mu.Lock()
	defer e.mu.Unlock()
	name := filepath.Join(e.events, job.ID+"-"+strconv.Itoa(job.Attempt)+".jsonl")
	f, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, "scriptworker: recording an event:", err)
		return
	}
	defer f.Close()
	_, _ = f.Write(append(line, '\n'))
}

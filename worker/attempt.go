package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/avatargen/musetalk/blob"
	"github.com/avatargen/musetalk/protocol"
	"github.com/avatargen/musetalk/worker/engine"
)

func isNotFound(err error) bool { return errors.Is(err, blob.ErrNotFound) }

// runAttempt runs one assignment to its end and reports the outcome. The
// attempt's context descends from lifeCtx: the first signal (runCtx done)
// does not cancel it, the end of the grace period or Stop does.
func (w *Worker) runAttempt(runCtx, lifeCtx context.Context, a *protocol.Assignment, claimStart, claimEnd time.Time) {
	jobCtx, cancel := context.WithCancelCause(lifeCtx)
	defer cancel(nil)
	jobCtx = propagation.TraceContext{}.Extract(jobCtx, propagation.MapCarrier(a.TraceContext))
	jobCtx, span := w.tracer.Start(jobCtx, "worker.attempt", trace.WithTimestamp(claimStart),
		trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(
			attribute.String("musetalk.job.id", a.JobID), attribute.Int("musetalk.attempt", a.Attempt),
			attribute.String("musetalk.worker.id", w.cfg.WorkerID), attribute.String("musetalk.engine", a.Params.Engine)))
	defer span.End()
	_, cs := w.tracer.Start(jobCtx, "claim", trace.WithTimestamp(claimStart))
	cs.End(trace.WithTimestamp(claimEnd))

	att := &attempt{a: a, cancel: cancel, span: span, nudge: make(chan struct{}, 1)}
	w.mu.Lock()
	w.st.job = att
	w.mu.Unlock()
	nudge(w.wakeBeat) // report busy now
	log := w.log.With("job_id", a.JobID, "attempt", a.Attempt)
	log.Info("attempt started", "engine", a.Params.Engine, "output_key", a.OutputKey)

	done := make(chan struct{})
	watched := make(chan struct{})
	go func() { // the grace period
		defer close(watched)
		select {
		case <-done:
			return
		case <-runCtx.Done():
		}
		log.Info("shutting down: letting the attempt finish", "grace", w.cfg.Grace)
		t := time.NewTimer(w.cfg.Grace)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			cancel(errShutdownGrace)
		case <-w.stopCh:
			cancel(errStopped)
		}
	}()
	// The progress reporter runs until the engine is done (then it posts
	// the last progress, before the output is delivered) or the attempt
	// ends otherwise.
	repCtx, stopRep := context.WithCancelCause(jobCtx)
	reported := make(chan struct{})
	go func() {
		defer close(reported)
		w.reportProgress(repCtx, att, log)
	}()
	att.engineDone = func() {
		stopRep(errAttemptOver)
		<-reported
	}

	dir := filepath.Join(w.dir, "attempts", a.JobID+"-"+strconv.Itoa(a.Attempt))
	err := w.execute(jobCtx, att, dir)
	close(done)
	<-watched
	cause := context.Cause(jobCtx)
	stopped := jobCtx.Err() != nil
	cancel(errAttemptOver) // stops the progress reporter
	<-reported

	var oc *cancelOrder
	var de *deliveryError
	delivering := errors.As(err, &de) // the engine had finished
	keep := false
	switch {
	case err == nil:
		log.Info("attempt completed", "output_key", a.OutputKey)
	case stopped && errors.As(cause, &oc):
		log.Info("attempt abandoned: cancelled by the control plane", "reason", oc.reason)
		span.SetStatus(codes.Error, oc.Error())
	case errors.Is(err, errAttemptGone) || stopped && errors.Is(cause, errAttemptGone):
		log.Info("attempt abandoned: no longer this worker's", "err", err)
		span.SetStatus(codes.Error, "attempt taken away")
	case stopped && (errors.Is(cause, errShutdownGrace) || errors.Is(cause, errStopped)):
		span.SetStatus(codes.Error, cause.Error())
		keep = delivering
		w.finish(jobCtx, att, log, "release", func(ctx context.Context) error {
			return w.client.release(ctx, a.JobID, &protocol.ReleaseRequest{Attempt: a.Attempt, Token: a.Token, Reason: cause.Error()})
		})
	case errors.Is(err, errDeliverTimeout) || errors.Is(err, errStoreUnreachable):
		// An outage outlasted the bound: not the job's failure.
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		log.Error("giving the attempt back: the control plane or the object store stayed unreachable", "err", err,
			"deliver_timeout", w.cfg.DeliverTimeout)
		reason := truncateText(err.Error(), 1000)
		w.finish(jobCtx, att, log, "release", func(ctx context.Context) error {
			return w.client.release(ctx, a.JobID, &protocol.ReleaseRequest{Attempt: a.Attempt, Token: a.Token, Reason: reason})
		})
	default:
		retryable, classified := engine.Classify(err)
		if delivering && !classified {
			retryable = true // the output could not be delivered; another worker may
		}
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		log.Warn("attempt failed", "err", err, "retryable", retryable)
		msg := err.Error()
		if len(msg) > 2000 {
			msg = msg[:2000]
		}
		w.finish(jobCtx, att, log, "fail", func(ctx context.Context) error {
			return w.client.fail(ctx, a.JobID, &protocol.FailRequest{Attempt: a.Attempt, Token: a.Token, Error: msg, Retryable: retryable})
		})
	}
	if keep {
		// Stopped while delivering: the finished output stays where it is
		// (the next start of a worker on this directory clears it).
		log.Warn("stopped before the output could be delivered; it stays on disk", "path", filepath.Join(dir, "output.mp4"))
	} else if err := os.RemoveAll(dir); err != nil {
		log.Warn("removing the attempt's files", "err", err)
	}
	w.mu.Lock()
	w.st.job = nil
	w.mu.Unlock()
	nudge(w.wakeBeat) // report idle now
}

// finish makes a complete, fail or release call in its own span. It runs on
// a context that survives shutdown, retrying network errors and 5xx answers
// with backoff until Config.ReportTimeout (release: at most three heartbeat
// timeouts), so that a finished result is not lost. A 409 (the attempt was
// taken away) ends it quietly.
func (w *Worker) finish(jobCtx context.Context, att *attempt, log *slog.Logger, op string, call func(context.Context) error) {
	timeout := w.cfg.ReportTimeout
	if op == "release" {
		// Releasing only speeds up the retry (the lease would run out
		// anyway), so it does not hold up a stopping worker for long.
		timeout = min(timeout, 3*w.cfg.HeartbeatTimeout)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(jobCtx), timeout)
	defer cancel()
	ctx, span := w.tracer.Start(ctx, op)
	defer span.End()
	err := w.retry(ctx, op, call)
	switch {
	case err == nil:
		log.Info("attempt reported", "outcome", op)
	case errors.Is(err, errAttemptGone):
		log.Info("attempt was taken away before it could be reported", "outcome", op, "err", err)
		span.SetStatus(codes.Error, "attempt taken away")
		att.span.SetStatus(codes.Error, "attempt taken away")
	default:
		log.Error("could not report the attempt; its lease will run out", "outcome", op, "err", err)
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
}

// retry calls f until it succeeds, fails with an error that will not go
// away, or ctx ends. Each try gets its own timeout.
func (w *Worker) retry(ctx context.Context, op string, f func(context.Context) error) error {
	wait := w.retryBase
	for try := 1; ; try++ {
		tctx, cancel := context.WithTimeout(ctx, 3*w.cfg.HeartbeatTimeout)
		err := f(tctx)
		cancel()
		if err == nil || !transient(ctx, err) {
			return err
		}
		w.log.Warn("retrying", "call", op, "try", try, "err", err)
		if !sleep(ctx, wait, nil) {
			return fmt.Errorf("%s: gave up after %d tries: %w", op, try, err)
		}
		wait = min(2*wait, 10*time.Second)
	}
}

// execute downloads the inputs, runs the engine, and delivers the output
// (upload and complete, see deliver). Errors before delivery are
// classified permanent or retryable; delivery's are *deliveryError.
func (w *Worker) execute(ctx context.Context, att *attempt, dir string) error {
	a := att.a
	if err := a.Params.Validate(); err != nil {
		return engine.Permanent(err)
	}
	name := a.Params.Engine
	if name == "" {
		name = w.cfg.Engines[0].Name()
	}
	eng, ok := w.engines[name]
	if !ok {
		return engine.Retryable(fmt.Errorf("engine %q is not available on this worker", name))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return engine.Retryable(fmt.Errorf("making the attempt directory: %w", err))
	}
	job := &engine.Job{
		ID: a.JobID, Attempt: a.Attempt, AvatarID: a.AvatarID, Params: a.Params, WorkDir: dir,
		AvatarPath: filepath.Join(dir, "avatar"+extOf(a.Inputs.AvatarKey)),
		AudioPath:  filepath.Join(dir, "audio"+extOf(a.Inputs.AudioKey)),
		OutputPath: filepath.Join(dir, "output.mp4"),
		StageTime: func(stage string, d time.Duration) {
			w.met.stageTime(ctx, name, stage, d)
		},
	}

	step := time.Now()
	dctx, span := w.tracer.Start(ctx, "download")
	err := w.download(dctx, a.Inputs.AvatarKey, job.AvatarPath)
	if err == nil {
		err = w.download(dctx, a.Inputs.AudioKey, job.AudioPath)
	}
	endSpan(span, err)
	if err != nil {
		return err
	}
	w.met.stageTime(ctx, name, "download", time.Since(step))

	step = time.Now()
	ectx, span := w.tracer.Start(ctx, "engine", trace.WithAttributes(attribute.String("musetalk.engine", name)))
	err = w.runEngine(ectx, eng, job, att, span)
	endSpan(span, err)
	if err != nil {
		return err
	}
	w.met.engineDone(ctx, name, att.frames(&w.mu), time.Since(step))

	att.engineDone() // the job's progress ends where the engine's did
	return w.deliver(ctx, att, job.OutputPath, name)
}

func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// extOf keeps a key's short alphanumeric extension, which tools like
// ffmpeg use as a hint.
func extOf(key string) string {
	ext := path.Ext(key)
	if len(ext) < 2 || len(ext) > 8 {
		return ""
	}
	for _, c := range ext[1:] {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return ""
		}
	}
	return strings.ToLower(ext)
}

// runEngine runs the engine, turning a panic into a failure and checking
// that an output was written.
func (w *Worker) runEngine(ctx context.Context, eng engine.Engine, job *engine.Job, att *attempt, span trace.Span) (err error) {
	defer func() {
		if r := recover(); r != nil {
			w.log.Error("engine panicked", "job_id", job.ID, "attempt", job.Attempt, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err = engine.Retryable(fmt.Errorf("engine %s panicked: %v", eng.Name(), r))
		}
	}()
	err = eng.Run(ctx, job, func(p protocol.Progress) { w.onProgress(att, span, p) })
	if err != nil {
		if _, classified := engine.Classify(err); !classified && ctx.Err() == nil {
			err = engine.Retryable(err)
		}
		return fmt.Errorf("engine %s: %w", eng.Name(), err)
	}
	if st, serr := os.Stat(job.OutputPath); serr != nil || st.Size() == 0 {
		return engine.Retryable(fmt.Errorf("engine %s reported success but wrote no output", eng.Name()))
	}
	return nil
}

// onProgress records an engine's progress for heartbeats, /health and the
// progress reporter. Invalid counters are clamped rather than sent.
func (w *Worker) onProgress(att *attempt, span trace.Span, p protocol.Progress) {
	if len(p.Stage) > 64 {
		p.Stage = p.Stage[:64]
	}
	p.FramesTotal = max(p.FramesTotal, 0)
	p.FramesDone = max(p.FramesDone, 0)
	if p.FramesTotal > 0 {
		p.FramesDone = min(p.FramesDone, p.FramesTotal)
	}
	w.mu.Lock()
	prev := att.progress
	att.progress = &p
	w.mu.Unlock()
	if prev == nil || prev.Stage != p.Stage {
		span.AddEvent("stage", trace.WithAttributes(attribute.String("musetalk.stage", p.Stage)))
	}
	nudge(att.nudge)
}

// reportProgress posts progress changes, at most one per
// Config.ProgressEvery, until ctx ends. A 409 means the attempt was taken
// away: it cancels the attempt.
//
// When the attempt ends normally (errAttemptOver), the last progress the
// throttle held back is posted before it returns, so that the job's record
// ends where the engine did rather than up to ProgressEvery earlier.
func (w *Worker) reportProgress(ctx context.Context, att *attempt, log *slog.Logger) {
	var last protocol.Progress
	sent := false
	defer func() {
		if !errors.Is(context.Cause(ctx), errAttemptOver) {
			return
		}
		w.mu.Lock()
		p := att.progress
		w.mu.Unlock()
		if p == nil || (sent && *p == last) {
			return
		}
		fctx, cancel := context.WithTimeout(trace.ContextWithSpanContext(context.WithoutCancel(ctx), trace.SpanContext{}), w.cfg.HeartbeatTimeout)
		defer cancel()
		if err := w.client.progress(fctx, att.a.JobID, &protocol.ProgressRequest{Attempt: att.a.Attempt, Token: att.a.Token, Progress: *p}); err != nil {
			log.Debug("final progress post failed", "err", err)
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-att.nudge:
		}
		w.mu.Lock()
		p := att.progress
		w.mu.Unlock()
		if p == nil || (sent && *p == last) {
			continue
		}
		// Progress posts are periodic bookkeeping, like heartbeats: they
		// stay out of the job's trace (the attempt span has stage events).
		pctx, cancel := context.WithTimeout(trace.ContextWithSpanContext(ctx, trace.SpanContext{}), w.cfg.HeartbeatTimeout)
		err := w.client.progress(pctx, att.a.JobID, &protocol.ProgressRequest{Attempt: att.a.Attempt, Token: att.a.Token, Progress: *p})
		cancel()
		if errors.Is(err, errAttemptGone) {
			att.cancel(fmt.Errorf("progress: %w", err))
			return
		}
		if err != nil {
			if ctx.Err() == nil {
				log.Debug("progress post failed", "err", err)
			}
		} else {
			last, sent = *p, true // only a delivered report counts as sent
		}
		if !sleep(ctx, w.cfg.ProgressEvery, nil) {
			return
		}
	}
}

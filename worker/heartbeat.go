package worker

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/avatargen/musetalk/protocol"
)

// heartbeatLoop sends a heartbeat every poll interval until ctx is done.
// Each call has its own timeout; it runs on its own goroutine and reads the
// job's state from a snapshot, so no job work can hold it up. While the
// control plane does not answer, it retries with backoff capped at two
// intervals, so a live loop always finishes an attempt within the
// liveness window (three intervals plus the call timeout) that /health
// checks: the loop is alive even when the control plane is not.
func (w *Worker) heartbeatLoop(ctx context.Context) {
	w.mu.Lock()
	w.st.beatLoopStarted = w.now()
	w.st.lastBeatDone = w.st.beatLoopStarted
	w.mu.Unlock()
	first := true
	for {
		hb := w.heartbeatBody()
		w.mu.Lock()
		att := w.st.job
		w.mu.Unlock()
		hctx, cancel := context.WithTimeout(ctx, w.cfg.HeartbeatTimeout)
		resp, err := w.sendHeartbeat(hctx, hb)
		cancel()
		if ctx.Err() != nil {
			return
		}
		failures := w.afterHeartbeat(hb, att, resp, err)
		if first {
			first = false
			close(w.beatOnce)
		}
		wait := jitter(w.cfg.PollInterval)
		if failures > 0 {
			wait = w.backoff(failures)
		}
		if !sleep(ctx, wait, w.wakeBeat) {
			return
		}
	}
}

// heartbeatBody builds the next heartbeat from the shared state.
func (w *Worker) heartbeatBody() *protocol.Heartbeat {
	hb := &protocol.Heartbeat{
		Status:        protocol.WorkerIdle,
		Provider:      w.cfg.Provider,
		GPUClass:      w.cfg.GPUClass,
		WorkerType:    w.cfg.WorkerType,
		Version:       w.cfg.Version,
		CachedAvatars: w.cachedAvatars(),
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if j := w.st.job; j != nil {
		hb.Status = protocol.WorkerBusy
		hb.JobID, hb.Attempt = j.a.JobID, j.a.Attempt
		if j.progress != nil {
			p := *j.progress
			hb.Progress = &p
		}
	}
	if w.st.shuttingDown || w.st.drainOrdered {
		hb.Status = protocol.WorkerDraining
	}
	if !w.st.selfCheckAcked && w.st.selfCheck != nil {
		sc := *w.st.selfCheck
		hb.SelfCheck = &sc
	}
	return hb
}

// afterHeartbeat records a heartbeat's outcome and obeys its answer. It
// returns the count of consecutive failures.
func (w *Worker) afterHeartbeat(hb *protocol.Heartbeat, att *attempt, resp *protocol.HeartbeatResponse, err error) int {
	now := w.now()
	w.mu.Lock()
	w.st.lastBeatDone = now
	if err != nil {
		w.st.beatFailures++
		failures := w.st.beatFailures
		w.mu.Unlock()
		if att != nil {
			att.span.AddEvent("heartbeat", trace.WithAttributes(
				attribute.String("status", string(hb.Status)), attribute.Bool("ok", false)))
		}
		w.log.Warn("heartbeat failed", "err", err, "failures", failures)
		return failures
	}
	w.st.beatFailures = 0
	w.st.lastAck = now
	if hb.SelfCheck != nil {
		w.st.selfCheckAcked = true
	}
	drainChanged := w.st.drainOrdered != resp.Drain
	w.st.drainOrdered = resp.Drain
	cur := w.st.job
	w.mu.Unlock()

	if att != nil {
		att.span.AddEvent("heartbeat", trace.WithAttributes(
			attribute.String("status", string(hb.Status)), attribute.Bool("ok", true)))
	}
	if drainChanged {
		w.log.Info("drain order changed", "drain", resp.Drain)
		nudge(w.wakePoll)
		nudge(w.wakeBeat)
	}
	if c := resp.Cancel; c != nil && cur != nil && c.JobID == cur.a.JobID && c.Attempt == cur.a.Attempt {
		w.log.Info("control plane cancelled the attempt", "job_id", c.JobID, "attempt", c.Attempt, "reason", c.Reason)
		cur.cancel(&cancelOrder{reason: c.Reason})
	}
	return 0
}

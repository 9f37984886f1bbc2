package control

import (
	"context"
	"fmt"
	"time"

	"github.com/avatargen/musetalk/control/store"
)

// Sweep runs one maintenance pass: workers silent for OfflineAfter become
// offline, and running attempts whose lease expired, whose worker is
// offline, or (with StallTimeout) whose progress stalled are interrupted
// and their jobs queued again after a backoff, or failed once their
// interruption budget is spent. Every change is a compare-and-set in the
// store, so any number of replicas may sweep at once. Sweep logs and
// counts what it changed.
func (s *Server) Sweep(ctx context.Context) error {
	res, err := s.store.Sweep(ctx, &store.SweepParams{
		OfflineAfter: s.cfg.OfflineAfter, StallTimeout: s.cfg.StallTimeout, Backoff: s.backoff, Now: s.now(),
	})
	if err != nil {
		s.metrics.sweeps.WithLabelValues("error").Inc()
		return fmt.Errorf("sweeping: %w", err)
	}
	s.metrics.sweeps.WithLabelValues("ok").Inc()
	for _, id := range res.WorkersOffline {
		s.metrics.sweepOffline.Inc()
		s.log.WarnContext(ctx, "worker offline: missed heartbeats", "worker_id", id, "offline_after", s.cfg.OfflineAfter)
	}
	for _, in := range res.Interrupted {
		s.metrics.sweepInterruptions.WithLabelValues(interruptionReason(in.Reason)).Inc()
		s.log.WarnContext(ctx, "attempt interrupted", "job_id", in.JobID, "attempt", in.Attempt,
			"worker_id", in.WorkerID, "reason", in.Reason, "job_failed", in.Final)
		if j, err := s.store.JobGet(ctx, in.JobID); err == nil {
			s.jobEvent(ctx, j, "job.attempt_interrupted")
		}
	}
	return nil
}

// RunSweeper calls Sweep every SweepInterval until ctx is done. Errors are
// logged and the loop goes on. It is safe to run on every replica.
//
// The first pass waits for startGrace: after an outage of the control
// plane every lease may have run out while the workers kept working and
// kept retrying their heartbeats; they get one lease's time to reach the
// restarted process before anything is declared lost.
func (s *Server) RunSweeper(ctx context.Context) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(s.startGrace()):
	}
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		if err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.log.ErrorContext(ctx, "sweeper pass failed", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// startGrace is how long a starting sweeper waits before its first pass:
// the longer of the lease and the offline limit.
func (s *Server) startGrace() time.Duration {
	return max(s.cfg.LeaseDuration, s.cfg.OfflineAfter)
}

package sqlcore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/protocol"
)

// Sweep implements store.Store. It marks silent workers offline in one
// transaction, then interrupts each lost attempt in a transaction of its
// own that re-checks, under the job's row lock, that the attempt is still
// running and still lost; a concurrent sweep therefore changes nothing
// twice.
func (s *Store) Sweep(ctx context.Context, p *store.SweepParams) (*store.SweepResult, error) {
	if p.Now.IsZero() {
		return nil, errors.New("sweeping: now is required")
	}
	res := &store.SweepResult{}
	if p.OfflineAfter > 0 {
		err := s.writeStatement(ctx, func(t *tx) error {
			// The rows are locked in id order, as batches of heartbeats
			// lock them, so that the two never wait on each other.
			cutoff := s.ts(p.Now.Add(-p.OfflineAfter))
			rows, err := t.query(ctx, `UPDATE workers SET status = 'offline'
WHERE id IN (SELECT id FROM workers WHERE status <> 'offline' AND last_seen < ? ORDER BY id`+s.d.forUpdate()+`)
	AND status <> 'offline' AND last_seen < ?
RETURNING id`, cutoff, cutoff)
			if err != nil {
				return err
			}
			res.WorkersOffline, err = collect(rows, scanString)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("sweeping: marking workers offline: %w", err)
		}
		slices.Sort(res.WorkersOffline)
	}

	q := `SELECT j.id FROM jobs j LEFT JOIN workers w ON w.id = j.worker_id
WHERE j.state = 'running' AND j.worker_id <> '' AND (j.lease_expires_at < ? OR w.status = 'offline'`
	args := []any{s.ts(p.Now)}
	if p.StallTimeout > 0 {
		q += ` OR j.progress_at < ?`
		args = append(args, s.ts(p.Now.Add(-p.StallTimeout)))
	}
	// Sorted here, not by the query: ORDER BY id would have SQLite walk
	// the primary key, every job ever, instead of the running jobs' index.
	rows, err := s.queryRead(ctx, q+`)`, args...)
	if err != nil {
		return nil, fmt.Errorf("sweeping: finding lost attempts: %w", err)
	}
	ids, err := collect(rows, scanString)
	if err != nil {
		return nil, fmt.Errorf("sweeping: finding lost attempts: %w", err)
	}
	slices.Sort(ids)
	for _, id := range ids {
		var in *store.Interruption
		err := s.write(ctx, func(t *tx) error {
			var err error
			in, err = t.sweepJob(ctx, id, p)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("sweeping job %s: %w", id, err)
		}
		if in != nil {
			res.Interrupted = append(res.Interrupted, *in)
		}
	}
	return res, nil
}

// sweepJob interrupts the job's running attempt if it is still lost, and
// returns what it did (nil: nothing to do any more).
func (t *tx) sweepJob(ctx context.Context, id string, p *store.SweepParams) (*store.Interruption, error) {
	j, err := t.lockJob(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if j.State != protocol.JobRunning {
		return nil, nil
	}
	var status string
	var lastSeen time.Time
	err = t.queryRow(ctx, `SELECT status, last_seen FROM workers WHERE id = ?`, j.WorkerID).Scan(&status, timeDest{&lastSeen})
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("reading worker %s: %w", j.WorkerID, err)
	}
	now := norm(p.Now) // compare as the stored times are
	// The worker's silence goes into the reason: a lease that ran out
	// while its worker kept calling points at the worker's job handling,
	// one that ran out with its worker silent at the worker or the network.
	heard := "worker unknown"
	if !lastSeen.IsZero() {
		heard = "worker last heard from " + ago(now, lastSeen) + " ago"
	}
	var reason string
	switch {
	case j.LeaseExpiresAt != nil && j.LeaseExpiresAt.Before(now):
		reason = "lease expired " + ago(now, *j.LeaseExpiresAt) + " ago; " + heard
	case status == string(protocol.WorkerOffline):
		reason = "worker offline; " + heard
	case p.StallTimeout > 0 && j.ProgressAt != nil && j.ProgressAt.Before(norm(p.Now.Add(-p.StallTimeout))):
		reason = fmt.Sprintf("no progress for %v (stall timeout %v)", now.Sub(*j.ProgressAt).Truncate(time.Second), p.StallTimeout)
	default:
		return nil, nil
	}
	out, err := t.interrupt(ctx, j, protocol.OutcomeInterrupted, reason, p.Backoff, p.Now)
	if err != nil {
		return nil, err
	}
	return &store.Interruption{JobID: j.ID, Attempt: j.Attempt, WorkerID: j.WorkerID, Reason: reason,
		Final: out.State == protocol.JobFailed}, nil
}

// ago is now-t for a reason's text, to a tenth of a second.
func ago(now, t time.Time) string {
	return now.Sub(t).Round(100 * time.Millisecond).String()
}

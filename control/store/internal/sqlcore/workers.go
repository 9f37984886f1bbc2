package sqlcore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/protocol"
)

const workerCols = `id, worker_type, provider, gpu_class, status, version, first_seen, last_seen,
	job_id, attempt, drain_requested, cached_avatars, self_check`

func scanWorker(r scanner) (*store.Worker, error) {
	var (
		w         store.Worker
		cached    string
		selfCheck sql.NullString
	)
	err := r.Scan(&w.ID, &w.WorkerType, &w.Provider, &w.GPUClass, &w.Status, &w.Version,
		timeDest{&w.FirstSeen}, timeDest{&w.LastSeen}, &w.JobID, &w.Attempt, &w.DrainRequested, &cached, &selfCheck)
	if err != nil {
		return nil, err
	}
	if cached != "" {
		if err := json.Unmarshal([]byte(cached), &w.CachedAvatars); err != nil {
			return nil, fmt.Errorf("worker %s: decoding stored cached avatars: %w", w.ID, err)
		}
		if len(w.CachedAvatars) == 0 {
			w.CachedAvatars = nil
		}
	}
	if selfCheck.Valid && selfCheck.String != "" {
		w.SelfCheck = new(protocol.SelfCheck)
		if err := json.Unmarshal([]byte(selfCheck.String), w.SelfCheck); err != nil {
			return nil, fmt.Errorf("worker %s: decoding stored self-check: %w", w.ID, err)
		}
	}
	return &w, nil
}

func validateHeartbeat(p *store.WorkerHeartbeatParams) error {
	switch {
	case !protocol.ValidID(p.ID):
		return fmt.Errorf("worker id %q is not a valid id", p.ID)
	case !p.Status.Reportable():
		return fmt.Errorf("status %q is not one of idle, busy, draining", p.Status)
	case p.WorkerType != "" && !p.WorkerType.Valid():
		return fmt.Errorf("worker type %q is not one of main, transient or empty", p.WorkerType)
	case p.JobID != "" && p.LeaseDuration <= 0:
		return fmt.Errorf("lease duration must be positive when a job is reported, got %v", p.LeaseDuration)
	case p.Now.IsZero():
		return errors.New("now is required")
	}
	return nil
}

// holds reports whether the heartbeat speaks for j's running attempt.
// Attempt 0 (a worker that reports only the job) means the current one.
func holds(j *store.Job, p *store.WorkerHeartbeatParams) bool {
	return j.State == protocol.JobRunning && j.WorkerID == p.ID && (p.Attempt == 0 || p.Attempt == j.Attempt)
}

// cancelReason says why the worker must abandon the attempt it reported.
func cancelReason(j *store.Job, p *store.WorkerHeartbeatParams) string {
	switch {
	case j.State == protocol.JobCancelled:
		return "job cancelled"
	case j.State.Final():
		return "job already " + string(j.State)
	case j.State == protocol.JobRunning && j.WorkerID != p.ID && (p.Attempt == 0 || p.Attempt == j.Attempt):
		return fmt.Sprintf("attempt %d belongs to worker %s", j.Attempt, j.WorkerID)
	}
	return fmt.Sprintf("attempt %d is no longer current (job is %s, attempt %d)", p.Attempt, j.State, j.Attempt)
}

// hbArgs is a validated heartbeat with the values it stores.
type hbArgs struct {
	p         *store.WorkerHeartbeatParams
	cached    string // cached avatars, JSON
	selfCheck any    // self-check, JSON text or nil (keep the stored one)
}

func heartbeatArgs(p *store.WorkerHeartbeatParams) (*hbArgs, error) {
	if err := validateHeartbeat(p); err != nil {
		return nil, err
	}
	cached := p.CachedAvatars
	if cached == nil {
		cached = []string{}
	}
	a := &hbArgs{p: p}
	var err error
	if a.cached, err = encodeJSON("cached avatars", cached); err != nil {
		return nil, err
	}
	if p.SelfCheck != nil {
		sc := *p.SelfCheck
		sc.Engine, sc.Device, sc.Error = text(sc.Engine), text(sc.Device), text(sc.Error)
		if a.selfCheck, err = encodeJSON("self-check", &sc); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// WorkerHeartbeat implements store.Store. The job is handled before the
// worker row so that every transaction locks jobs before workers. A worker
// that reports idle while the registry says it holds an attempt stays busy:
// its heartbeat was built before the claim that gave it the attempt.
// Where the dialect takes arrays, heartbeats that arrive together are
// saved together (newHBBatcher).
func (s *Store) WorkerHeartbeat(ctx context.Context, p *store.WorkerHeartbeatParams) (*store.HeartbeatResult, error) {
	a, err := heartbeatArgs(p)
	if err != nil {
		return nil, fmt.Errorf("recording heartbeat of worker %s: %w", p.ID, err)
	}
	res, err := s.hb.call(ctx, a, s.heartbeatOne)
	if err != nil {
		return nil, fmt.Errorf("recording heartbeat of worker %s: %w", p.ID, err)
	}
	return res, nil
}

// heartbeatOne saves one heartbeat in a transaction of its own (one
// statement when it names no job).
func (s *Store) heartbeatOne(ctx context.Context, a *hbArgs) (*store.HeartbeatResult, error) {
	p := a.p
	var res *store.HeartbeatResult
	write := s.write
	if p.JobID == "" {
		write = s.writeStatement
	}
	err := write(ctx, func(t *tx) error {
		res = &store.HeartbeatResult{}
		var held *store.Job
		if p.JobID != "" {
			j, err := t.lockLease(ctx, p.JobID)
			switch {
			case errors.Is(err, store.ErrNotFound):
				res.Cancel = &protocol.CancelOrder{JobID: p.JobID, Attempt: p.Attempt, Reason: "job not found"}
			case err != nil:
				return err
			case holds(j, p):
				if res.LeaseExpiresAt, err = t.renewLease(ctx, j, p.Progress, p.LeaseDuration, p.Now); err != nil {
					return err
				}
				held = j
			default:
				res.Cancel = &protocol.CancelOrder{JobID: p.JobID, Attempt: p.Attempt, Reason: cancelReason(j, p)}
			}
		}
		// One statement saves the entry and reads it back. A worker that
		// holds its attempt is pointed at it (the heartbeat may have raced
		// the claim); the status rule reads the pointer as it was.
		now := s.ts(p.Now)
		jobID, attempt := "", 0
		if held != nil {
			jobID, attempt = held.ID, held.Attempt
		}
		w, err := scanWorker(t.queryRow(ctx, `INSERT INTO workers (id, worker_type, provider, gpu_class, status, version,
	first_seen, last_seen, cached_avatars, self_check, job_id, attempt)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET `+workerUpsertSet+`
RETURNING `+workerCols,
			p.ID, string(p.WorkerType), text(p.Provider), text(p.GPUClass), string(p.Status), text(p.Version), now, now,
			a.cached, a.selfCheck, jobID, attempt))
		if err != nil {
			return fmt.Errorf("saving worker %s: %w", p.ID, err)
		}
		res.Worker = w
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// workerUpsertSet is what a heartbeat changes in an existing entry.
const workerUpsertSet = `worker_type = excluded.worker_type, provider = excluded.provider,
	gpu_class = excluded.gpu_class, version = excluded.version,
	status = CASE WHEN excluded.status = 'idle' AND workers.job_id <> '' THEN 'busy' ELSE excluded.status END,
	last_seen = excluded.last_seen, cached_avatars = excluded.cached_avatars,
	self_check = COALESCE(excluded.self_check, workers.self_check),
	job_id = CASE WHEN excluded.job_id <> '' THEN excluded.job_id ELSE workers.job_id END,
	attempt = CASE WHEN excluded.job_id <> '' THEN excluded.attempt ELSE workers.attempt END`

// WorkerGet implements store.Store.
func (s *Store) WorkerGet(ctx context.Context, id string) (*store.Worker, error) {
	w, err := scanWorker(s.queryRowRead(ctx, `SELECT `+workerCols+` FROM workers WHERE id = ?`, id))
	if err != nil {
		return nil, fmt.Errorf("getting worker: %w", notFound(err, fmt.Sprintf("worker %q", id)))
	}
	return w, nil
}

// WorkerList implements store.Store.
func (s *Store) WorkerList(ctx context.Context, p *store.WorkerListParams) ([]*store.Worker, error) {
	var (
		where []string
		args  []any
	)
	if p.Status != "" {
		where = append(where, `status = ?`)
		args = append(args, string(p.Status))
	}
	if p.WorkerType != "" {
		where = append(where, `worker_type = ?`)
		args = append(args, string(p.WorkerType))
	}
	q := `SELECT ` + workerCols + ` FROM workers`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, ` AND `)
	}
	rows, err := s.queryRead(ctx, q+` ORDER BY id`, args...)
	if err != nil {
		return nil, fmt.Errorf("listing workers: %w", err)
	}
	ws, err := collect(rows, scanWorker)
	if err != nil {
		return nil, fmt.Errorf("listing workers: %w", err)
	}
	return ws, nil
}

// WorkerSetDrain implements store.Store.
func (s *Store) WorkerSetDrain(ctx context.Context, id string, drain bool) (*store.Worker, error) {
	var w *store.Worker
	err := s.writeStatement(ctx, func(t *tx) error {
		var err error
		w, err = scanWorker(t.queryRow(ctx, `UPDATE workers SET drain_requested = ? WHERE id = ? RETURNING `+workerCols, drain, id))
		return notFound(err, fmt.Sprintf("worker %q", id))
	})
	if err != nil {
		return nil, fmt.Errorf("setting drain of worker: %w", err)
	}
	return w, nil
}

// WorkerCountByStatus implements store.Store.
func (s *Store) WorkerCountByStatus(ctx context.Context) (map[protocol.WorkerStatus]int, error) {
	out := map[protocol.WorkerStatus]int{}
	for _, st := range []protocol.WorkerStatus{protocol.WorkerIdle, protocol.WorkerBusy, protocol.WorkerDraining, protocol.WorkerOffline} {
		out[st] = 0
	}
	if err := s.countBy(ctx, `SELECT status, COUNT(*) FROM workers GROUP BY status`, func(k string, n int) {
		out[protocol.WorkerStatus(k)] = n
	}); err != nil {
		return nil, fmt.Errorf("counting workers by status: %w", err)
	}
	return out, nil
}

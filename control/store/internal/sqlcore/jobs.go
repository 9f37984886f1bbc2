package sqlcore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/protocol"
)

// Statements that find their job by id check its state with these
// conditions, which no index on state can serve, so that the primary key
// is the only way in. Written plainly, state = 'running' looked to
// PostgreSQL, whose statistics dated from a moment when no job ran (every
// job queued after a burst of submissions), like the better way in, through
// jobs_state: each complete then read every running job's index entries,
// live and dead (34 buffers and up to 3 ms against 3 buffers, with 500
// workers).
const (
	isRunning = `(state = 'running') IS TRUE`
	isQueued  = `(state = 'queued') IS TRUE`
)

// jobCols is the column list scanJob reads.
const jobCols = `id, state, priority, worker_type, idempotency_key, avatar_key, audio_key, avatar_id,
	params, trace_context, attempt, token, worker_id, lease_expires_at, progress, progress_at,
	interruptions, failures, max_interruptions, max_failures, run_after, error, output_key,
	created_at, updated_at, finished_at`

func scanJob(r scanner) (*store.Job, error) {
	var (
		j        store.Job
		trace    string
		progress sql.NullString
	)
	err := r.Scan(&j.ID, &j.State, &j.Priority, &j.WorkerType, &j.IdempotencyKey, &j.AvatarKey, &j.AudioKey, &j.AvatarID,
		&j.Params, &trace, &j.Attempt, &j.Token, &j.WorkerID, nullTimeDest{&j.LeaseExpiresAt}, &progress, nullTimeDest{&j.ProgressAt},
		&j.Interruptions, &j.Failures, &j.MaxInterruptions, &j.MaxFailures, timeDest{&j.RunAfter}, &j.Error, &j.OutputKey,
		timeDest{&j.CreatedAt}, timeDest{&j.UpdatedAt}, nullTimeDest{&j.FinishedAt})
	if err != nil {
		return nil, err
	}
	if len(j.Params) == 0 {
		j.Params = nil
	}
	if j.TraceContext, err = decodeTrace(trace); err != nil {
		return nil, fmt.Errorf("job %s: %w", j.ID, err)
	}
	if j.Progress, err = decodeProgress(progress); err != nil {
		return nil, fmt.Errorf("job %s: %w", j.ID, err)
	}
	return &j, nil
}

// notFound turns sql.ErrNoRows into store.ErrNotFound naming what was
// looked for.
func notFound(err error, what string) error {
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	return err
}

// lockJob reads a job and locks its row for the rest of the transaction.
func (t *tx) lockJob(ctx context.Context, id string) (*store.Job, error) {
	j, err := scanJob(t.queryRow(ctx, `SELECT `+jobCols+` FROM jobs WHERE id = ?`+t.s.d.forUpdate(), id))
	if err != nil {
		return nil, notFound(err, fmt.Sprintf("job %q", id))
	}
	return j, nil
}

func validateInsert(p *store.JobInsertParams) error {
	switch {
	case !protocol.ValidID(p.ID):
		return fmt.Errorf("id %q is not a valid id", p.ID)
	case p.WorkerType != "" && !p.WorkerType.Valid():
		return fmt.Errorf("worker type %q is not one of main, transient or empty", p.WorkerType)
	case p.MaxInterruptions < 1:
		return fmt.Errorf("max interruptions must be at least 1, got %d", p.MaxInterruptions)
	case p.MaxFailures < 1:
		return fmt.Errorf("max failures must be at least 1, got %d", p.MaxFailures)
	case p.AvatarKey == "" || p.AudioKey == "":
		return errors.New("avatar key and audio key are required")
	case p.Now.IsZero():
		return errors.New("now is required")
	}
	return nil
}

// JobInsert implements store.Store.
func (s *Store) JobInsert(ctx context.Context, p *store.JobInsertParams) (*store.Job, bool, error) {
	if err := validateInsert(p); err != nil {
		return nil, false, fmt.Errorf("inserting job: %w", err)
	}
	trace, err := traceArg(p.TraceContext)
	if err != nil {
		return nil, false, fmt.Errorf("inserting job %s: %w", p.ID, err)
	}
	params := p.Params
	if params == nil {
		params = []byte{}
	}
	var (
		job     *store.Job
		existed bool
	)
	// One change: the insert (the lookup of a repeated key only reads).
	err = s.writeStatement(ctx, func(t *tx) error {
		existed = false
		now := s.ts(p.Now)
		j, err := scanJob(t.queryRow(ctx, `INSERT INTO jobs (id, state, priority, worker_type, idempotency_key,
	avatar_key, audio_key, avatar_id, params, trace_context, max_interruptions, max_failures,
	run_after, created_at, updated_at)
VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT DO NOTHING
RETURNING `+jobCols,
			p.ID, p.Priority, p.WorkerType, p.IdempotencyKey, p.AvatarKey, p.AudioKey, p.AvatarID, params, trace,
			p.MaxInterruptions, p.MaxFailures, now, now, now))
		if err == nil {
			job = j
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		// A unique key exists: the idempotency key (a repeat) or the id.
		if p.IdempotencyKey != "" {
			j, err = scanJob(t.queryRow(ctx, `SELECT `+jobCols+` FROM jobs WHERE idempotency_key = ?`, p.IdempotencyKey))
			if err == nil {
				job, existed = j, true
				return nil
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		}
		return fmt.Errorf("a job with id %q already exists", p.ID)
	})
	if err != nil {
		return nil, false, fmt.Errorf("inserting job %s: %w", p.ID, err)
	}
	return job, existed, nil
}

// JobGet implements store.Store.
func (s *Store) JobGet(ctx context.Context, id string) (*store.Job, error) {
	j, err := scanJob(s.queryRowRead(ctx, `SELECT `+jobCols+` FROM jobs WHERE id = ?`, id))
	if err != nil {
		return nil, fmt.Errorf("getting job: %w", notFound(err, fmt.Sprintf("job %q", id)))
	}
	return j, nil
}

// JobList implements store.Store.
func (s *Store) JobList(ctx context.Context, p *store.JobListParams) ([]*store.Job, error) {
	limit := p.Limit
	switch {
	case limit == 0:
		limit = 100
	case limit < 0 || limit > 1000:
		return nil, fmt.Errorf("listing jobs: limit %d is outside 1..1000", p.Limit)
	}
	var (
		where []string
		args  []any
	)
	if len(p.States) > 0 {
		for _, st := range p.States {
			if !st.Valid() {
				return nil, fmt.Errorf("listing jobs: state %q is not one of %v", st, protocol.JobStates())
			}
			args = append(args, st)
		}
		where = append(where, `state IN (`+placeholders(len(p.States))+`)`)
	}
	if p.WorkerType != "" {
		where = append(where, `worker_type = ?`)
		args = append(args, p.WorkerType)
	}
	if p.WorkerID != "" {
		where = append(where, `worker_id = ?`)
		args = append(args, p.WorkerID)
	}
	if c := p.Before; c != nil {
		at := s.ts(c.CreatedAt)
		where = append(where, `(created_at < ? OR (created_at = ? AND id < ?))`)
		args = append(args, at, at, c.ID)
	}
	q := `SELECT ` + jobCols + ` FROM jobs`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, ` AND `)
	}
	q += ` ORDER BY created_at DESC, id DESC LIMIT ?`
	args = append(args, limit)
	rows, err := s.queryRead(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("listing jobs: %w", err)
	}
	jobs, err := collect(rows, scanJob)
	if err != nil {
		return nil, fmt.Errorf("listing jobs: %w", err)
	}
	return jobs, nil
}

const attemptCols = `job_id, number, worker_id, outcome, error, output_key, started_at, ended_at`

func scanAttempt(r scanner) (*store.Attempt, error) {
	var a store.Attempt
	err := r.Scan(&a.JobID, &a.Number, &a.WorkerID, &a.Outcome, &a.Error, &a.OutputKey,
		timeDest{&a.StartedAt}, nullTimeDest{&a.EndedAt})
	if err != nil {
		return nil, err
	}
	return &a, nil
}

// JobAttempts implements store.Store.
func (s *Store) JobAttempts(ctx context.Context, jobID string) ([]*store.Attempt, error) {
	rows, err := s.queryRead(ctx, `SELECT `+attemptCols+` FROM attempts WHERE job_id = ? ORDER BY number`, jobID)
	if err != nil {
		return nil, fmt.Errorf("listing attempts of job %s: %w", jobID, err)
	}
	out, err := collect(rows, scanAttempt)
	if err != nil {
		return nil, fmt.Errorf("listing attempts of job %s: %w", jobID, err)
	}
	if len(out) == 0 {
		var one int
		err := s.queryRowRead(ctx, `SELECT 1 FROM jobs WHERE id = ?`, jobID).Scan(&one)
		if err != nil {
			return nil, fmt.Errorf("listing attempts: %w", notFound(err, fmt.Sprintf("job %q", jobID)))
		}
	}
	return out, nil
}

// JobCancel implements store.Store.
func (s *Store) JobCancel(ctx context.Context, id string, now time.Time) (*store.Job, error) {
	var job *store.Job
	err := s.write(ctx, func(t *tx) error {
		j, err := t.lockJob(ctx, id)
		if err != nil {
			return err
		}
		switch j.State {
		case protocol.JobCancelled:
			job = j
			return nil
		case protocol.JobSucceeded, protocol.JobFailed:
			return fmt.Errorf("job %s is %s: %w", id, j.State, store.ErrFinal)
		case protocol.JobRunning:
			job, err = t.endAttempt(ctx, j, &ending{
				outcome: protocol.OutcomeCancelled, attemptErr: "job cancelled", state: protocol.JobCancelled,
				jobErr: j.Error, failures: j.Failures, interrupts: j.Interruptions, now: now,
			})
			return err
		}
		job, err = scanJob(t.queryRow(ctx, `UPDATE jobs SET state = 'cancelled', finished_at = ?, updated_at = ?
WHERE id = ? AND `+isQueued+` RETURNING `+jobCols, s.ts(now), s.ts(now), id))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("cancelling job: %w", err)
	}
	return job, nil
}

// JobCountByState implements store.Store.
func (s *Store) JobCountByState(ctx context.Context) (map[protocol.JobState]int, error) {
	out := map[protocol.JobState]int{}
	for _, st := range protocol.JobStates() {
		out[st] = 0
	}
	if err := s.countBy(ctx, `SELECT state, COUNT(*) FROM jobs GROUP BY state`, func(k string, n int) {
		out[protocol.JobState(k)] = n
	}); err != nil {
		return nil, fmt.Errorf("counting jobs by state: %w", err)
	}
	return out, nil
}

// AttemptCountByOutcome implements store.Store.
func (s *Store) AttemptCountByOutcome(ctx context.Context) (map[protocol.AttemptOutcome]int, error) {
	out := map[protocol.AttemptOutcome]int{}
	for _, o := range protocol.AttemptOutcomes() {
		out[o] = 0
	}
	if err := s.countBy(ctx, `SELECT outcome, COUNT(*) FROM attempts GROUP BY outcome`, func(k string, n int) {
		out[protocol.AttemptOutcome(k)] = n
	}); err != nil {
		return nil, fmt.Errorf("counting attempts by outcome: %w", err)
	}
	return out, nil
}

// countBy runs a two-column (key, count) query.
func (s *Store) countBy(ctx context.Context, q string, set func(string, int)) error {
	rows, err := s.queryRead(ctx, q)
	if err != nil {
		return err
	}
	type kv struct {
		k string
		n int
	}
	pairs, err := collect(rows, func(r scanner) (kv, error) {
		var p kv
		return p, r.Scan(&p.k, &p.n)
	})
	for _, p := range pairs {
		set(p.k, p.n)
	}
	return err
}

// JobRetry implements store.Store.
func (s *Store) JobRetry(ctx context.Context, id string, now time.Time) (*store.Job, error) {
	var job *store.Job
	err := s.writeStatement(ctx, func(t *tx) error {
		j, err := scanJob(t.queryRow(ctx, `UPDATE jobs SET state = 'queued', failures = 0, interruptions = 0,
	error = '', progress = NULL, progress_at = NULL, run_after = ?, finished_at = NULL, updated_at = ?
WHERE id = ? AND state = 'failed' RETURNING `+jobCols, s.ts(now), s.ts(now), id))
		if errors.Is(err, sql.ErrNoRows) {
			// Not failed, or not there: tell which.
			cur, gerr := scanJob(t.queryRow(ctx, `SELECT `+jobCols+` FROM jobs WHERE id = ?`, id))
			if gerr != nil {
				return notFound(gerr, fmt.Sprintf("job %q", id))
			}
			return fmt.Errorf("job %s is %s: %w", id, cur.State, store.ErrNotFailed)
		}
		job = j
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("retrying job: %w", err)
	}
	return job, nil
}

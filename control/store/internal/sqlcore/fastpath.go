package sqlcore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/avatargen/musetalk/control/store"
)

// One-statement transitions: where the database runs INSERT and UPDATE
// inside WITH (PostgreSQL), the two transitions every job goes through,
// its claim and its completion, are each one statement: one round trip
// and one commit instead of six to nine. The statement is the same
// compare-and-set on state, attempt and token as the transaction it
// replaces, and the rows it changes are locked by it until it commits.
// Whatever it does not cover (a worker that still holds an attempt, a
// retried or stale complete, an unknown job) finds no row, and the
// ordinary transaction runs, deciding and answering as always.

// claimFast claims with one statement. done is false when the worker
// still holds an attempt, which the ordinary claim must interrupt first.
func (s *Store) claimFast(ctx context.Context, p *store.JobClaimParams) (job *store.Job, done bool, err error) {
	target, targs := s.claimTarget(p)
	now := s.ts(p.Now)
	args := []any{p.WorkerID, p.Token, p.WorkerID, s.ts(p.Now.Add(p.LeaseDuration)), now, now}
	args = append(args, targs...)
	args = append(args, p.WorkerID, p.Token, now, now, now, p.WorkerID)
	q := `WITH held AS (SELECT 1 FROM jobs WHERE state = 'running' AND worker_id = ? AND worker_id <> '' LIMIT 1),
j AS (UPDATE jobs SET ` + claimSet + ` WHERE id = ` + target + ` AND ` + isQueued + ` AND NOT EXISTS (SELECT 1 FROM held)
	RETURNING ` + jobCols + `),
a AS (INSERT INTO attempts (job_id, number, worker_id, token, outcome, started_at)
	SELECT id, attempt, ?::text, ?::text, 'running', ?::timestamptz FROM j),
w AS (UPDATE workers SET job_id = j.id, attempt = j.attempt, status = 'busy',
	last_seen = CASE WHEN workers.last_seen < ?::timestamptz THEN ?::timestamptz ELSE workers.last_seen END
	FROM j WHERE workers.id = ?)
SELECT ` + jobCols + ` FROM j`
	err = s.writeStatement(ctx, func(t *tx) error {
		var err error
		job, err = scanJob(t.queryRow(ctx, q, args...))
		if errors.Is(err, sql.ErrNoRows) {
			job = nil
			var one int
			err = t.queryRow(ctx, `SELECT 1 FROM jobs WHERE state = 'running' AND worker_id = ? AND worker_id <> '' LIMIT 1`, p.WorkerID).Scan(&one)
			if errors.Is(err, sql.ErrNoRows) {
				done = true // nothing held, nothing to claim
				return nil
			}
		}
		done = err == nil && job != nil
		return err
	})
	return job, done, err
}

// completeFast completes with one statement; done is false when the
// statement changed nothing (a retry, a stale attempt, an unknown job),
// which the ordinary complete then sorts out.
func (s *Store) completeFast(ctx context.Context, p *store.JobCompleteParams) (job *store.Job, done bool, err error) {
	now := s.ts(p.Now)
	q := `WITH j AS (UPDATE jobs SET state = 'succeeded', token = '', lease_expires_at = NULL, error = '',
	output_key = ?, finished_at = ?, updated_at = ?
	WHERE id = ? AND ` + isRunning + ` AND attempt = ? AND token = ?
	RETURNING ` + jobCols + `),
a AS (UPDATE attempts SET outcome = 'succeeded', error = '', output_key = ?, ended_at = ?
	FROM j WHERE attempts.job_id = j.id AND attempts.number = j.attempt AND attempts.outcome = 'running'),
w AS (UPDATE workers SET job_id = '', attempt = 0, status = CASE WHEN workers.status = 'busy' THEN 'idle' ELSE workers.status END
	FROM j WHERE workers.id = j.worker_id AND workers.job_id = j.id AND workers.attempt = j.attempt)
SELECT ` + jobCols + ` FROM j`
	err = s.writeStatement(ctx, func(t *tx) error {
		var err error
		job, err = scanJob(t.queryRow(ctx, q, p.OutputKey, now, now, p.JobID, p.Attempt, p.Token, p.OutputKey, now))
		if errors.Is(err, sql.ErrNoRows) {
			job, err = nil, nil
		}
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("completing job %s: %w", p.JobID, err)
	}
	return job, job != nil, nil
}

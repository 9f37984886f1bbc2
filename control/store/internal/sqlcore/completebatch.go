package sqlcore

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/avatargen/musetalk/control/store"
)

// Complete batches: where claims are batched, so are completes, in one
// transaction of three statements whatever their number: lock the jobs
// and then their workers, each in id order, end the attempts named
// correctly (job, attempt, token) in one statement, and commit. Every job
// is locked before any worker, as in every transaction. A complete that
// changes nothing there (a retry, a stale attempt, an unknown job) takes
// the single path, which sorts it out and answers as always; so does a
// lone complete.
const (
	maxCompleteBatch = 256
	completeRunners  = 2
)

// completeCall is one complete waiting for its batch.
type completeCall = batchCall[*store.JobCompleteParams, *store.Job]

// newCompleteBatcher makes completes in batches; a job named twice goes in
// a later round.
func newCompleteBatcher(s *Store) *batcher[*store.JobCompleteParams, *store.Job] {
	return newRoundBatcher(s, maxCompleteBatch, completeRunners,
		func(p *store.JobCompleteParams) string { return p.JobID }, s.completeOne, (*tx).completes)
}

// completes ends the round's attempts (distinct jobs) that are their
// jobs' running ones: made[i] when it ended the i-th, jobs[i] its job.
func (t *tx) completes(ctx context.Context, round []*completeCall) (jobs []*store.Job, made []bool, err error) {
	n := len(round)
	ids, tokens, keys := make([]string, n), make([]string, n), make([]string, n)
	attempts, nows := make([]int, n), make([]time.Time, n)
	for i, r := range round {
		p := r.arg
		ids[i], attempts[i], tokens[i], keys[i], nows[i] = p.JobID, p.Attempt, p.Token, p.OutputKey, norm(p.Now)
	}
	sorted := slices.Clone(ids)
	slices.Sort(sorted)
	// The jobs in id order, then their workers in id order: the
	// heartbeat batches lock workers in id order too, so the two cannot
	// wait for each other in a cycle.
	rows, err := t.query(ctx, `SELECT worker_id FROM jobs WHERE id = ANY(?) ORDER BY id FOR UPDATE`, sorted)
	if err != nil {
		return nil, nil, fmt.Errorf("locking %d jobs: %w", n, err)
	}
	workers, err := collect(rows, scanString)
	if err != nil {
		return nil, nil, fmt.Errorf("locking %d jobs: %w", n, err)
	}
	slices.Sort(workers)
	if _, err := t.exec(ctx, `SELECT id FROM workers WHERE id = ANY(?) ORDER BY id FOR UPDATE`, slices.Compact(workers)); err != nil {
		return nil, nil, fmt.Errorf("locking the workers of %d jobs: %w", n, err)
	}
	rows, err = t.query(ctx, `WITH j AS (UPDATE jobs SET state = 'succeeded', token = '', lease_expires_at = NULL, error = '',
	output_key = u.u_key, finished_at = u.u_now, updated_at = u.u_now
	FROM unnest(?::text[], ?::integer[], ?::text[], ?::text[], ?::timestamptz[]) AS u(u_id, u_attempt, u_token, u_key, u_now)
	WHERE jobs.id = u.u_id AND `+isRunning+` AND jobs.attempt = u.u_attempt AND jobs.token = u.u_token
	RETURNING `+qualified("jobs", jobCols)+`),
a AS (UPDATE attempts SET outcome = 'succeeded', error = '', output_key = j.output_key, ended_at = j.finished_at
	FROM j WHERE attempts.job_id = j.id AND attempts.number = j.attempt AND attempts.outcome = 'running'),
w AS (UPDATE workers SET job_id = '', attempt = 0, status = CASE WHEN workers.status = 'busy' THEN 'idle' ELSE workers.status END
	FROM j WHERE workers.id = j.worker_id AND workers.job_id = j.id AND workers.attempt = j.attempt)
SELECT `+jobCols+` FROM j`, ids, attempts, tokens, keys, nows)
	if err != nil {
		return nil, nil, fmt.Errorf("completing %d jobs: %w", n, err)
	}
	ended, err := collect(rows, scanJob)
	if err != nil {
		return nil, nil, fmt.Errorf("completing %d jobs: %w", n, err)
	}
	done := make(map[string]*store.Job, len(ended))
	for _, j := range ended {
		done[j.ID] = j
	}
	jobs, made = make([]*store.Job, n), make([]bool, n)
	for i, r := range round {
		jobs[i] = done[r.arg.JobID]
		made[i] = jobs[i] != nil
	}
	return jobs, made, nil
}

// qualified prefixes each column of a column list with table.
func qualified(table, cols string) string {
	parts := strings.Split(cols, ",")
	for i, c := range parts {
		parts[i] = table + "." + strings.TrimSpace(c)
	}
	return strings.Join(parts, ", ")
}

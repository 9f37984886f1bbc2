package sqlcore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/protocol"
)

// ending is how a running attempt ends and where its job goes next.
type ending struct {
	outcome    protocol.AttemptOutcome
	attemptErr string // recorded on the attempt
	outputKey  string // succeeded only
	state      protocol.JobState
	jobErr     string
	failures   int       // the job's failure count after this attempt
	interrupts int       // the job's interruption count after this attempt
	runAfter   time.Time // when state is queued
	now        time.Time
}

// endAttempt ends j's running attempt as e says, in this order: the job
// (a compare-and-set on state, attempt and token), the attempt row, and
// the worker's registry pointer. It returns the updated job.
func (t *tx) endAttempt(ctx context.Context, j *store.Job, e *ending) (*store.Job, error) {
	s := t.s
	now := s.ts(e.now)
	var finished any
	if e.state.Final() {
		finished = now
	}
	runAfter := j.RunAfter
	if e.state == protocol.JobQueued {
		runAfter = e.runAfter
	}
	out, err := scanJob(t.queryRow(ctx, `UPDATE jobs SET state = ?, token = '', lease_expires_at = NULL,
	error = ?, output_key = ?, failures = ?, interruptions = ?, run_after = ?, finished_at = ?, updated_at = ?
WHERE id = ? AND `+isRunning+` AND attempt = ? AND token = ?
RETURNING `+jobCols,
		string(e.state), e.jobErr, e.outputKey, e.failures, e.interrupts, s.ts(runAfter), finished, now,
		j.ID, j.Attempt, j.Token))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("job %s attempt %d: %w", j.ID, j.Attempt, store.ErrStaleAttempt)
	}
	if err != nil {
		return nil, fmt.Errorf("ending attempt %d of job %s: %w", j.Attempt, j.ID, err)
	}
	if err := t.closeAttempt(ctx, j, e.outcome, e.attemptErr, e.outputKey, now); err != nil {
		return nil, err
	}
	return out, nil
}

// closeAttempt records the end of j's running attempt on the attempt and
// frees its worker, after the job itself has left the attempt; now is in
// the database's encoding.
func (t *tx) closeAttempt(ctx context.Context, j *store.Job, outcome protocol.AttemptOutcome, attemptErr, outputKey string, now any) error {
	if _, err := t.exec(ctx, `UPDATE attempts SET outcome = ?, error = ?, output_key = ?, ended_at = ?
WHERE job_id = ? AND number = ? AND outcome = 'running'`,
		string(outcome), attemptErr, outputKey, now, j.ID, j.Attempt); err != nil {
		return fmt.Errorf("ending attempt %d of job %s: %w", j.Attempt, j.ID, err)
	}
	if _, err := t.exec(ctx, `UPDATE workers SET job_id = '', attempt = 0,
	status = CASE WHEN status = 'busy' THEN 'idle' ELSE status END
WHERE id = ? AND job_id = ? AND attempt = ?`, j.WorkerID, j.ID, j.Attempt); err != nil {
		return fmt.Errorf("clearing worker %s's job: %w", j.WorkerID, err)
	}
	return nil
}

// interrupt takes j's running attempt away (outcome interrupted or
// released) and charges the job's interruption budget: the job is queued
// again after the backoff, or fails once the budget is spent.
func (t *tx) interrupt(ctx context.Context, j *store.Job, outcome protocol.AttemptOutcome, reason string,
	backoff store.Backoff, now time.Time) (*store.Job, error) {
	n := j.Interruptions + 1
	e := &ending{outcome: outcome, attemptErr: reason, failures: j.Failures, interrupts: n, now: now}
	if n >= j.MaxInterruptions {
		e.state = protocol.JobFailed
		e.jobErr = fmt.Sprintf("interrupted %d times (budget exhausted); last: %s", n, reason)
	} else {
		e.state = protocol.JobQueued
		e.jobErr = reason
		e.runAfter = now.Add(delay(backoff, n))
	}
	return t.endAttempt(ctx, j, e)
}

// checkAttempt returns ErrStaleAttempt unless a names j's running attempt.
func checkAttempt(j *store.Job, a *store.AttemptParams) error {
	if j.State == protocol.JobRunning && j.Attempt == a.Attempt && j.Token == a.Token {
		return nil
	}
	if j.State == protocol.JobRunning && j.Attempt == a.Attempt {
		return fmt.Errorf("job %s attempt %d: %w (token does not match)", j.ID, a.Attempt, store.ErrStaleAttempt)
	}
	return fmt.Errorf("job %s attempt %d: %w (job is %s, attempt %d)", j.ID, a.Attempt, store.ErrStaleAttempt, j.State, j.Attempt)
}

// lockAttempt locks the job that a names and checks that a is its running
// attempt.
func (t *tx) lockAttempt(ctx context.Context, a *store.AttemptParams) (*store.Job, error) {
	j, err := t.lockJob(ctx, a.JobID)
	if err != nil {
		return nil, err
	}
	if err := checkAttempt(j, a); err != nil {
		return nil, err
	}
	return j, nil
}

// JobClaim implements store.Store.
func (s *Store) JobClaim(ctx context.Context, p *store.JobClaimParams) (*store.Job, error) {
	switch {
	case p.WorkerID == "":
		return nil, errors.New("claiming a job: worker id is required")
	case p.Token == "":
		return nil, errors.New("claiming a job: token is required")
	case p.LeaseDuration <= 0:
		return nil, fmt.Errorf("claiming a job: lease duration must be positive, got %v", p.LeaseDuration)
	case p.WorkerType != "" && !p.WorkerType.Valid():
		return nil, fmt.Errorf("claiming a job: worker type %q is not one of main, transient or empty", p.WorkerType)
	}
	job, err := s.cb.call(ctx, p, s.claimOne)
	if err != nil {
		return nil, fmt.Errorf("claiming a job for worker %s: %w", p.WorkerID, err)
	}
	if job == nil {
		return nil, store.ErrNoJob
	}
	return job, nil
}

// claimOne makes one claim on its own: nil, nil when there is no
// claimable job.
func (s *Store) claimOne(ctx context.Context, p *store.JobClaimParams) (*store.Job, error) {
	var job *store.Job
	done := false
	if s.d.ModifyingCTEs {
		var err error
		if job, done, err = s.claimFast(ctx, p); err != nil {
			return nil, err
		}
	}
	if !done {
		err := s.write(ctx, func(t *tx) error {
			var err error
			job, err = t.claim(ctx, p)
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	return job, nil
}

// claim interrupts what the worker still holds, then takes the first
// claimable job. It returns nil, nil when there is none; the interruptions
// stand either way.
func (t *tx) claim(ctx context.Context, p *store.JobClaimParams) (*store.Job, error) {
	s := t.s
	rows, err := t.query(ctx, `SELECT `+jobCols+` FROM jobs WHERE state = 'running' AND worker_id = ? AND worker_id <> '' ORDER BY id`+s.d.forUpdate(), p.WorkerID)
	if err != nil {
		return nil, fmt.Errorf("finding attempts the worker holds: %w", err)
	}
	held, err := collect(rows, scanJob)
	if err != nil {
		return nil, fmt.Errorf("finding attempts the worker holds: %w", err)
	}
	for _, j := range held {
		if _, err := t.interrupt(ctx, j, protocol.OutcomeInterrupted, "worker claimed again", p.Backoff, p.Now); err != nil {
			return nil, err
		}
	}

	target, targs := s.claimTarget(p)
	now := s.ts(p.Now)
	j, err := scanJob(t.queryRow(ctx, `UPDATE jobs SET `+claimSet+` WHERE id = `+target+` AND `+isQueued+`
RETURNING `+jobCols, append([]any{p.Token, p.WorkerID, s.ts(p.Now.Add(p.LeaseDuration)), now, now}, targs...)...))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("starting a job: %w", err)
	}
	if _, err := t.exec(ctx, `INSERT INTO attempts (job_id, number, worker_id, token, outcome, started_at)
VALUES (?, ?, ?, ?, 'running', ?)`, j.ID, j.Attempt, p.WorkerID, p.Token, now); err != nil {
		return nil, fmt.Errorf("recording attempt %d of job %s: %w", j.Attempt, j.ID, err)
	}
	if _, err := t.exec(ctx, `UPDATE workers SET job_id = ?, attempt = ?, status = 'busy',
	last_seen = CASE WHEN last_seen < ? THEN ? ELSE last_seen END
WHERE id = ?`, j.ID, j.Attempt, now, now, p.WorkerID); err != nil {
		return nil, fmt.Errorf("pointing worker %s at job %s: %w", p.WorkerID, j.ID, err)
	}
	return j, nil
}

// claimSet starts the claimed job: its arguments are the token, the
// worker, the lease's end and the claim time twice.
const claimSet = `state = 'running', attempt = attempt + 1, token = ?, worker_id = ?,
	lease_expires_at = ?, progress = NULL, progress_at = ?, updated_at = ?`

// claimTarget returns an expression for the id of the job to claim (NULL
// when there is none) and its arguments. Jobs come by priority; within the
// top priority, a job whose avatar the worker caches comes first, if one
// is among the first store.CachedAvatarLookahead; then the oldest. Every
// subquery walks the claim index in its own order (the top priority is
// looked up first) and stops early, so that no plan has to sort the queue
// or walk finished jobs, whatever the planner believes about the table;
// where the database has row locks the job is locked as it is chosen,
// skipping jobs other claims hold.
func (s *Store) claimTarget(p *store.JobClaimParams) (string, []any) {
	claimable := `state = 'queued' AND run_after <= ? AND ` + otherTypesExcluded(p.WorkerType)
	const order = ` ORDER BY priority DESC, created_at, id LIMIT `
	lock := s.d.skipLocked()
	now := s.ts(p.Now)
	oldest := `(SELECT id FROM jobs WHERE ` + claimable + order + `1` + lock + `)`
	var cached []any
	for _, a := range p.CachedAvatars {
		if a != "" {
			cached = append(cached, a)
		}
	}
	if len(cached) == 0 {
		return oldest, []any{now}
	}
	// The window: the first claimable jobs in claim order; of those of the
	// top priority whose avatar is cached, the first that no other claim
	// holds. The outer query checks claimability again, on the row it
	// locks. Every ORDER BY is the claim index's own, which the index on
	// created_at alone cannot give: ordered by created_at, a planner that
	// believes most jobs are queued walks that index from the oldest
	// finished job on. COALESCE evaluates (and locks through) the second
	// choice only when the first finds nothing.
	window := `SELECT id FROM (SELECT id, avatar_id, priority FROM jobs WHERE ` + claimable + order +
		strconv.Itoa(store.CachedAvatarLookahead) + `) w WHERE avatar_id IN (` + placeholders(len(cached)) +
		`) AND priority = (SELECT priority FROM jobs WHERE ` + claimable + order + `1)`
	avatar := `(SELECT id FROM jobs WHERE id IN (` + window + `) AND ` + claimable + order + `1` + lock + `)`
	args := append([]any{now}, cached...)
	args = append(args, now, now)
	return `COALESCE(` + avatar + `, ` + oldest + `)`, append(args, now)
}

// otherTypesExcluded is the condition on a job's worker type that lets a
// worker of type wt claim it: untyped jobs and its own type, written as
// "none of the other types" (the schema allows no other values). So
// written, a planner without statistics sees it as the weak filter that it
// is; written as "the empty type or wt" it looks as if it kept 1 % of the
// queue, and PostgreSQL sorted the whole queue to find the first job
// rather than walk the claim index (on a new table with 7,500 queued
// jobs: 6.5 ms against 0.04 ms per claim).
func otherTypesExcluded(wt protocol.WorkerType) string {
	var others []string
	for _, t := range protocol.WorkerTypes() {
		if t != wt {
			others = append(others, "'"+string(t)+"'")
		}
	}
	return `worker_type NOT IN (` + strings.Join(others, ", ") + `)`
}

// nextProgress returns the progress and progress time that j records
// after a report of progress (nil: none) at now. ProgressAt moves only
// when the progress changed.
func nextProgress(j *store.Job, progress *protocol.Progress, now time.Time) (*protocol.Progress, *time.Time) {
	// Within a stage frames only grow: a report with fewer frames done is
	// an older one that arrived late (a heartbeat overtaken by a progress
	// post), and must not roll the record back.
	late := progress != nil && j.Progress != nil && progress.Stage == j.Progress.Stage && progress.FramesDone < j.Progress.FramesDone
	if progress != nil && !late && !sameProgress(progress, j.Progress) {
		return progress, &now
	}
	return j.Progress, j.ProgressAt
}

// extendLease records progress (when not nil) and extends the lease of
// j's running attempt to now+lease. ProgressAt moves only when the
// progress changed.
func (t *tx) extendLease(ctx context.Context, j *store.Job, progress *protocol.Progress, lease time.Duration, now time.Time) (*store.Job, error) {
	s := t.s
	newProgress, progressAt := nextProgress(j, progress, now)
	parg, err := progressArg(newProgress)
	if err != nil {
		return nil, err
	}
	out, err := scanJob(t.queryRow(ctx, `UPDATE jobs SET progress = ?, progress_at = ?, lease_expires_at = ?, updated_at = ?
WHERE id = ? AND `+isRunning+` AND attempt = ? AND token = ?
RETURNING `+jobCols, parg, s.tsPtr(progressAt), s.ts(now.Add(lease)), s.ts(now), j.ID, j.Attempt, j.Token))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("job %s attempt %d: %w", j.ID, j.Attempt, store.ErrStaleAttempt)
	}
	if err != nil {
		return nil, fmt.Errorf("extending the lease of job %s: %w", j.ID, err)
	}
	return out, nil
}

// leaseCols are the columns of a job that a heartbeat reads (lockLease).
const leaseCols = `id, state, attempt, token, worker_id, progress, progress_at`

// lockLease reads and locks what a heartbeat needs of a job: its state,
// attempt, token, worker and progress (the rest stays zero).
func (t *tx) lockLease(ctx context.Context, id string) (*store.Job, error) {
	var (
		j        store.Job
		progress sql.NullString
	)
	err := t.queryRow(ctx, `SELECT `+leaseCols+` FROM jobs WHERE id = ?`+t.s.d.forUpdate(), id).Scan(
		&j.ID, &j.State, &j.Attempt, &j.Token, &j.WorkerID, &progress, nullTimeDest{&j.ProgressAt})
	if err != nil {
		return nil, notFound(err, fmt.Sprintf("job %q", id))
	}
	if j.Progress, err = decodeProgress(progress); err != nil {
		return nil, fmt.Errorf("job %s: %w", j.ID, err)
	}
	return &j, nil
}

// renewLease is extendLease for a heartbeat: it returns only the new end
// of the lease.
func (t *tx) renewLease(ctx context.Context, j *store.Job, progress *protocol.Progress, lease time.Duration, now time.Time) (*time.Time, error) {
	s := t.s
	newProgress, progressAt := nextProgress(j, progress, now)
	parg, err := progressArg(newProgress)
	if err != nil {
		return nil, err
	}
	var until time.Time
	err = t.queryRow(ctx, `UPDATE jobs SET progress = ?, progress_at = ?, lease_expires_at = ?, updated_at = ?
WHERE id = ? AND `+isRunning+` AND attempt = ? AND token = ?
RETURNING lease_expires_at`, parg, s.tsPtr(progressAt), s.ts(now.Add(lease)), s.ts(now), j.ID, j.Attempt, j.Token).Scan(timeDest{&until})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("job %s attempt %d: %w", j.ID, j.Attempt, store.ErrStaleAttempt)
	}
	if err != nil {
		return nil, fmt.Errorf("extending the lease of job %s: %w", j.ID, err)
	}
	return &until, nil
}

// JobProgress implements store.Store.
func (s *Store) JobProgress(ctx context.Context, p *store.JobProgressParams) (*store.Job, error) {
	if p.LeaseDuration <= 0 {
		return nil, fmt.Errorf("recording progress of job %s: lease duration must be positive, got %v", p.JobID, p.LeaseDuration)
	}
	var job *store.Job
	err := s.write(ctx, func(t *tx) error {
		j, err := t.lockAttempt(ctx, &p.AttemptParams)
		if err != nil {
			return err
		}
		job, err = t.extendLease(ctx, j, &p.Progress, p.LeaseDuration, p.Now)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("recording progress: %w", err)
	}
	return job, nil
}

// JobComplete implements store.Store. Completing again with the same
// attempt, token and output key (a retried request) returns the job
// unchanged.
func (s *Store) JobComplete(ctx context.Context, p *store.JobCompleteParams) (*store.Job, error) {
	if p.OutputKey == "" {
		return nil, fmt.Errorf("completing job %s: output key is required", p.JobID)
	}
	job, err := s.cmb.call(ctx, p, s.completeOne)
	if err != nil {
		return nil, fmt.Errorf("completing job: %w", err)
	}
	return job, nil
}

// completeOne completes one attempt on its own.
func (s *Store) completeOne(ctx context.Context, p *store.JobCompleteParams) (*store.Job, error) {
	if s.d.ModifyingCTEs {
		job, done, err := s.completeFast(ctx, p)
		if err != nil {
			return nil, err
		}
		if done {
			return job, nil
		}
	}
	var job *store.Job
	err := s.write(ctx, func(t *tx) error {
		if !s.d.ModifyingCTEs {
			// The usual case first, without reading the job: its running
			// attempt ends succeeded.
			var err error
			if job, err = t.completeRunning(ctx, p); job != nil || err != nil {
				return err
			}
		}
		j, err := t.lockJob(ctx, p.JobID)
		if err != nil {
			return err
		}
		if j.State == protocol.JobSucceeded && j.Attempt == p.Attempt && j.OutputKey == p.OutputKey {
			var token string
			err := t.queryRow(ctx, `SELECT token FROM attempts WHERE job_id = ? AND number = ?`, j.ID, j.Attempt).Scan(&token)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("reading attempt %d of job %s: %w", j.Attempt, j.ID, err)
			}
			if err == nil && token == p.Token {
				job = j
				return nil
			}
		}
		if err := checkAttempt(j, &p.AttemptParams); err != nil {
			return err
		}
		job, err = t.endAttempt(ctx, j, &ending{
			outcome: protocol.OutcomeSucceeded, outputKey: p.OutputKey, state: protocol.JobSucceeded,
			failures: j.Failures, interrupts: j.Interruptions, now: p.Now,
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	return job, nil
}

// completeRunning ends the job's running attempt succeeded when p names
// it (the same changes as endAttempt), without reading the job first. It
// returns nil, nil when p does not name the running attempt (a retry, a
// stale attempt, an unknown job), changing nothing.
func (t *tx) completeRunning(ctx context.Context, p *store.JobCompleteParams) (*store.Job, error) {
	s := t.s
	now := s.ts(p.Now)
	j, err := scanJob(t.queryRow(ctx, `UPDATE jobs SET state = 'succeeded', token = '', lease_expires_at = NULL,
	error = '', output_key = ?, finished_at = ?, updated_at = ?
WHERE id = ? AND `+isRunning+` AND attempt = ? AND token = ?
RETURNING `+jobCols, p.OutputKey, now, now, p.JobID, p.Attempt, p.Token))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ending attempt %d of job %s: %w", p.Attempt, p.JobID, err)
	}
	if err := t.closeAttempt(ctx, j, protocol.OutcomeSucceeded, "", p.OutputKey, now); err != nil {
		return nil, err
	}
	return j, nil
}

// JobFail implements store.Store.
func (s *Store) JobFail(ctx context.Context, p *store.JobFailParams) (*store.Job, error) {
	msg := text(p.Error)
	if msg == "" {
		msg = "failed (no error given)"
	}
	var job *store.Job
	err := s.write(ctx, func(t *tx) error {
		j, err := t.lockAttempt(ctx, &p.AttemptParams)
		if err != nil {
			return err
		}
		n := j.Failures + 1
		e := &ending{outcome: protocol.OutcomeFailed, attemptErr: msg, failures: n, interrupts: j.Interruptions, now: p.Now}
		switch {
		case !p.Retryable:
			e.state, e.jobErr = protocol.JobFailed, "permanent failure: "+msg
		case n >= j.MaxFailures:
			e.state, e.jobErr = protocol.JobFailed, fmt.Sprintf("failure budget exhausted after %d failures: %s", n, msg)
		default:
			e.state, e.jobErr, e.runAfter = protocol.JobQueued, msg, p.Now.Add(delay(p.Backoff, n))
		}
		job, err = t.endAttempt(ctx, j, e)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("failing job: %w", err)
	}
	return job, nil
}

// JobRelease implements store.Store.
func (s *Store) JobRelease(ctx context.Context, p *store.JobReleaseParams) (*store.Job, error) {
	reason := text(p.Reason)
	if reason == "" {
		reason = "released"
	}
	var job *store.Job
	err := s.write(ctx, func(t *tx) error {
		j, err := t.lockAttempt(ctx, &p.AttemptParams)
		if err != nil {
			return err
		}
		job, err = t.interrupt(ctx, j, protocol.OutcomeReleased, reason, p.Backoff, p.Now)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("releasing job: %w", err)
	}
	return job, nil
}

// ClaimQuery returns the query that chooses the job a claim with p would
// take (a SELECT of its id; NULL when there is none), in the database's
// placeholder form, with its arguments. It changes and locks nothing
// until run: it lets tests and operators EXPLAIN the one query whose cost
// could grow with the queue.
func (s *Store) ClaimQuery(p *store.JobClaimParams) (string, []any) {
	target, args := s.claimTarget(p)
	return s.sql(`SELECT ` + target), args
}

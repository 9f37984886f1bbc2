package sqlcore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/protocol"
)

// Heartbeat batches: where the database takes arrays as parameters
// (PostgreSQL), the heartbeats that wait are saved together, in one
// transaction of four statements whatever their number: lock their jobs,
// extend the leases of the attempts they hold, save the workers, commit.
// Every fleet's heartbeats are most of its calls, and one round trip and
// one commit per heartbeat would bound them by the round trips the
// database answers.
const (
	maxHeartbeatBatch = 256
	// heartbeatRunners is how many batches may run at once: one can be in
	// its commit (a WAL flush) while the next is built.
	heartbeatRunners = 2
)

// hbCall is one heartbeat waiting for its batch.
type hbCall = batchCall[*hbArgs, *store.HeartbeatResult]

// newHBBatcher saves heartbeats in batches; a worker that appears twice
// goes in a later round.
func newHBBatcher(s *Store) *batcher[*hbArgs, *store.HeartbeatResult] {
	return newRoundBatcher(s, maxHeartbeatBatch, heartbeatRunners,
		func(a *hbArgs) string { return a.p.ID }, s.heartbeatOne, (*tx).heartbeats)
}

// heartbeats saves the round's heartbeats (distinct workers, sorted by
// id), all or none, with array parameters: the jobs they name are locked
// in id order, then the workers are saved in id order, as every
// transaction locks jobs before workers.
func (t *tx) heartbeats(ctx context.Context, round []*hbCall) ([]*store.HeartbeatResult, []bool, error) {
	results := make([]*store.HeartbeatResult, len(round))
	var jobIDs []string
	for i, r := range round {
		results[i] = &store.HeartbeatResult{}
		if r.arg.p.JobID != "" {
			jobIDs = append(jobIDs, r.arg.p.JobID)
		}
	}
	jobs := map[string]*store.Job{}
	if len(jobIDs) > 0 {
		slices.Sort(jobIDs)
		rows, err := t.query(ctx, `SELECT `+jobCols+` FROM jobs WHERE id = ANY(?) ORDER BY id FOR UPDATE`, slices.Compact(jobIDs))
		if err != nil {
			return nil, nil, fmt.Errorf("locking the jobs of %d heartbeats: %w", len(round), err)
		}
		locked, err := collect(rows, scanJob)
		if err != nil {
			return nil, nil, fmt.Errorf("locking the jobs of %d heartbeats: %w", len(round), err)
		}
		for _, j := range locked {
			jobs[j.ID] = j
		}
	}

	// The leases to extend.
	var (
		ids, tokens, progress    []string
		hasProgress              []bool
		progressAt, leases, nows []time.Time
		hasProgressAt            []bool
		attempts                 []int
		heldBy                   = make([]*store.Job, len(round))
	)
	for i, r := range round {
		p := r.arg.p
		if p.JobID == "" {
			continue
		}
		j := jobs[p.JobID]
		switch {
		case j == nil:
			results[i].Cancel = &protocol.CancelOrder{JobID: p.JobID, Attempt: p.Attempt, Reason: "job not found"}
		case holds(j, p):
			np, at := nextProgress(j, p.Progress, p.Now)
			parg, err := progressArg(np)
			if err != nil {
				return nil, nil, err
			}
			ptext, _ := parg.(string)
			ids, tokens, attempts = append(ids, j.ID), append(tokens, j.Token), append(attempts, j.Attempt)
			progress, hasProgress = append(progress, ptext), append(hasProgress, parg != nil)
			var atv time.Time
			if at != nil {
				atv = norm(*at)
			}
			progressAt, hasProgressAt = append(progressAt, atv), append(hasProgressAt, at != nil)
			leases, nows = append(leases, norm(p.Now.Add(p.LeaseDuration))), append(nows, norm(p.Now))
			heldBy[i] = j
		default:
			results[i].Cancel = &protocol.CancelOrder{JobID: p.JobID, Attempt: p.Attempt, Reason: cancelReason(j, p)}
		}
	}
	if len(ids) > 0 {
		rows, err := t.query(ctx, `UPDATE jobs SET
	progress = CASE WHEN u.has_progress THEN u.progress END,
	progress_at = CASE WHEN u.has_progress_at THEN u.progress_at END,
	lease_expires_at = u.lease, updated_at = u.now
FROM unnest(?::text[], ?::integer[], ?::text[], ?::text[], ?::boolean[], ?::timestamptz[], ?::boolean[], ?::timestamptz[], ?::timestamptz[])
	AS u(id, attempt, token, progress, has_progress, progress_at, has_progress_at, lease, now)
WHERE jobs.id = u.id AND `+isRunning+` AND jobs.attempt = u.attempt AND jobs.token = u.token
RETURNING jobs.id, jobs.lease_expires_at`,
			ids, attempts, tokens, progress, hasProgress, progressAt, hasProgressAt, leases, nows)
		if err != nil {
			return nil, nil, fmt.Errorf("extending %d leases: %w", len(ids), err)
		}
		type lease struct {
			id string
			at time.Time
		}
		extended, err := collect(rows, func(r scanner) (lease, error) {
			var l lease
			return l, r.Scan(&l.id, timeDest{&l.at})
		})
		if err != nil {
			return nil, nil, fmt.Errorf("extending %d leases: %w", len(ids), err)
		}
		if len(extended) != len(ids) {
			// Impossible under the row locks; let each go on its own.
			return nil, nil, fmt.Errorf("extending %d leases: %d changed: %w", len(ids), len(extended), store.ErrStaleAttempt)
		}
		byID := make(map[string]time.Time, len(extended))
		for _, l := range extended {
			byID[l.id] = l.at
		}
		for i, j := range heldBy {
			if j != nil {
				at := byID[j.ID]
				results[i].LeaseExpiresAt = &at
			}
		}
	}

	// The workers.
	n := len(round)
	var (
		wids, types, providers, classes, statuses, versions, cached, selfChecks, wjobs = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		hasSelfCheck                                                                   = make([]bool, n)
		seen                                                                           = make([]time.Time, n)
		wattempts                                                                      = make([]int, n)
	)
	for i, r := range round {
		p := r.arg.p
		wids[i], types[i], providers[i], classes[i] = p.ID, string(p.WorkerType), text(p.Provider), text(p.GPUClass)
		statuses[i], versions[i], cached[i], seen[i] = string(p.Status), text(p.Version), r.arg.cached, norm(p.Now)
		if sc, ok := r.arg.selfCheck.(string); ok {
			selfChecks[i], hasSelfCheck[i] = sc, true
		}
		if j := heldBy[i]; j != nil {
			wjobs[i], wattempts[i] = j.ID, j.Attempt
		}
	}
	rows, err := t.query(ctx, `INSERT INTO workers (id, worker_type, provider, gpu_class, status, version,
	first_seen, last_seen, cached_avatars, self_check, job_id, attempt)
SELECT u.id, u.worker_type, u.provider, u.gpu_class, u.status, u.version, u.seen, u.seen, u.cached,
	CASE WHEN u.has_self_check THEN u.self_check END, u.job_id, u.attempt
FROM unnest(?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::timestamptz[], ?::text[], ?::text[], ?::boolean[], ?::text[], ?::integer[])
	AS u(id, worker_type, provider, gpu_class, status, version, seen, cached, self_check, has_self_check, job_id, attempt)
ON CONFLICT (id) DO UPDATE SET `+workerUpsertSet+`
RETURNING `+workerCols,
		wids, types, providers, classes, statuses, versions, seen, cached, selfChecks, hasSelfCheck, wjobs, wattempts)
	if err != nil {
		return nil, nil, fmt.Errorf("saving %d workers: %w", n, err)
	}
	saved, err := collect(rows, scanWorker)
	if err != nil {
		return nil, nil, fmt.Errorf("saving %d workers: %w", n, err)
	}
	if len(saved) != n {
		return nil, nil, errors.New("saving workers: not every worker came back")
	}
	byID := make(map[string]*store.Worker, n)
	for _, w := range saved {
		byID[w.ID] = w
	}
	for i, r := range round {
		if results[i].Worker = byID[r.arg.p.ID]; results[i].Worker == nil {
			return nil, nil, fmt.Errorf("saving worker %s: it did not come back", r.arg.p.ID)
		}
	}
	made := make([]bool, len(round))
	for i := range made {
		made[i] = true
	}
	return results, made, nil
}

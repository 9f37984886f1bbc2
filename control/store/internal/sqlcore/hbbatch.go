package sqlcore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
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

type hbReq struct {
	ctx  context.Context
	a    *hbArgs
	res  *store.HeartbeatResult
	err  error
	done chan struct{}
}

// hbBatcher collects heartbeats for the batch runners.
type hbBatcher struct {
	s    *Store
	reqs chan *hbReq
	quit chan struct{}
	done chan struct{} // closed once the runners have stopped and the queue is answered
	wg   sync.WaitGroup
	once sync.Once
}

func newHBBatcher(s *Store) *hbBatcher {
	b := &hbBatcher{s: s, reqs: make(chan *hbReq, maxHeartbeatBatch), quit: make(chan struct{}), done: make(chan struct{})}
	for range heartbeatRunners {
		b.wg.Add(1)
		go b.run()
	}
	return b
}

// close stops the runners after the batches they run; heartbeats still
// waiting get errClosed. A nil batcher does nothing.
func (b *hbBatcher) close() {
	if b == nil {
		return
	}
	b.once.Do(func() {
		close(b.quit)
		b.wg.Wait()
		for {
			select {
			case r := <-b.reqs:
				r.err = errClosed
				close(r.done)
				continue
			default:
			}
			break
		}
		close(b.done)
	})
}

// do saves one heartbeat in the next batch and waits for it; once its
// batch has started it runs to the end whatever ctx does.
func (b *hbBatcher) do(ctx context.Context, a *hbArgs) (*store.HeartbeatResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r := &hbReq{ctx: ctx, a: a, done: make(chan struct{})}
	select {
	case b.reqs <- r:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-b.quit:
		return nil, errClosed
	}
	select {
	case <-r.done:
	case <-b.done:
		// Every request taken was answered; one queued after the last
		// drain was not.
		select {
		case <-r.done:
		default:
			return nil, errClosed
		}
	}
	return r.res, r.err
}

func (b *hbBatcher) run() {
	defer b.wg.Done()
	batch := make([]*hbReq, 0, maxHeartbeatBatch)
	for {
		select {
		case r := <-b.reqs:
			batch = append(batch[:0], r)
		case <-b.quit:
			return
		}
	more:
		for len(batch) < maxHeartbeatBatch {
			select {
			case r := <-b.reqs:
				batch = append(batch, r)
			default:
				break more
			}
		}
		b.s.heartbeatBatch(batch)
		clear(batch)
	}
}

// heartbeatBatch saves the batch's heartbeats and answers each. A worker
// that appears twice goes in a later round, so that each statement
// changes each row once.
func (s *Store) heartbeatBatch(batch []*hbReq) {
	live := batch[:0:0]
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.err = err
			close(r.done)
			continue
		}
		live = append(live, r)
	}
	for len(live) > 0 {
		slices.SortStableFunc(live, func(x, y *hbReq) int { return strings.Compare(x.a.p.ID, y.a.p.ID) })
		var round, later []*hbReq
		for i, r := range live {
			if i > 0 && r.a.p.ID == live[i-1].a.p.ID {
				later = append(later, r)
			} else {
				round = append(round, r)
			}
		}
		s.heartbeatRound(round)
		live = later
	}
}

// heartbeatRound saves heartbeats of distinct workers, sorted by worker.
func (s *Store) heartbeatRound(round []*hbReq) {
	answer := func(r *hbReq, res *store.HeartbeatResult, err error) {
		r.res, r.err = res, err
		close(r.done)
	}
	if len(round) == 1 {
		r := round[0]
		res, err := s.heartbeatOne(context.WithoutCancel(r.ctx), r.a)
		answer(r, res, err)
		return
	}
	ctx := context.Background()
	var results []*store.HeartbeatResult
	err := s.write(ctx, func(t *tx) error {
		var err error
		results, err = t.heartbeats(ctx, round)
		return err
	})
	if err != nil {
		// Something in the batch failed it as a whole: each heartbeat
		// goes again on its own and learns its own outcome.
		for _, r := range round {
			res, err := s.heartbeatOne(context.WithoutCancel(r.ctx), r.a)
			answer(r, res, err)
		}
		return
	}
	for i, r := range round {
		answer(r, results[i], nil)
	}
}

// heartbeats saves the round's heartbeats (distinct workers, sorted by
// id) with array parameters: the jobs they name are locked in id order,
// then the workers are saved in id order, as every transaction locks jobs
// before workers.
func (t *tx) heartbeats(ctx context.Context, round []*hbReq) ([]*store.HeartbeatResult, error) {
	results := make([]*store.HeartbeatResult, len(round))
	var jobIDs []string
	for i, r := range round {
		results[i] = &store.HeartbeatResult{}
		if r.a.p.JobID != "" {
			jobIDs = append(jobIDs, r.a.p.JobID)
		}
	}
	jobs := map[string]*store.Job{}
	if len(jobIDs) > 0 {
		slices.Sort(jobIDs)
		rows, err := t.query(ctx, `SELECT `+jobCols+` FROM jobs WHERE id = ANY(?) ORDER BY id FOR UPDATE`, slices.Compact(jobIDs))
		if err != nil {
			return nil, fmt.Errorf("locking the jobs of %d heartbeats: %w", len(round), err)
		}
		locked, err := collect(rows, scanJob)
		if err != nil {
			return nil, fmt.Errorf("locking the jobs of %d heartbeats: %w", len(round), err)
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
		p := r.a.p
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
				return nil, err
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
WHERE jobs.id = u.id AND jobs.state = 'running' AND jobs.attempt = u.attempt AND jobs.token = u.token
RETURNING jobs.id, jobs.lease_expires_at`,
			ids, attempts, tokens, progress, hasProgress, progressAt, hasProgressAt, leases, nows)
		if err != nil {
			return nil, fmt.Errorf("extending %d leases: %w", len(ids), err)
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
			return nil, fmt.Errorf("extending %d leases: %w", len(ids), err)
		}
		if len(extended) != len(ids) {
			// Impossible under the row locks; let each go on its own.
			return nil, fmt.Errorf("extending %d leases: %d changed: %w", len(ids), len(extended), store.ErrStaleAttempt)
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
		p := r.a.p
		wids[i], types[i], providers[i], classes[i] = p.ID, string(p.WorkerType), text(p.Provider), text(p.GPUClass)
		statuses[i], versions[i], cached[i], seen[i] = string(p.Status), text(p.Version), r.a.cached, norm(p.Now)
		if sc, ok := r.a.selfCheck.(string); ok {
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
		return nil, fmt.Errorf("saving %d workers: %w", n, err)
	}
	saved, err := collect(rows, scanWorker)
	if err != nil {
		return nil, fmt.Errorf("saving %d workers: %w", n, err)
	}
	if len(saved) != n {
		return nil, errors.New("saving workers: not every worker came back")
	}
	byID := make(map[string]*store.Worker, n)
	for _, w := range saved {
		byID[w.ID] = w
	}
	for i, r := range round {
		if results[i].Worker = byID[r.a.p.ID]; results[i].Worker == nil {
			return nil, fmt.Errorf("saving worker %s: it did not come back", r.a.p.ID)
		}
	}
	return results, nil
}

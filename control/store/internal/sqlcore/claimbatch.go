package sqlcore

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/protocol"
)

// Claim batches: where the database takes arrays and runs INSERT and
// UPDATE inside WITH (PostgreSQL), the claims that wait are made
// together, in one transaction whatever their number: lock their
// workers, find those that still hold an attempt, choose and lock the
// jobs (per worker type in the batch: the claims whose cached avatars
// are in the window get theirs, the others the oldest, skipping jobs
// other transactions hold), start them with their attempts and workers
// in one statement, commit. Each claim gets the job that the rules of a
// single claim (claimTarget) give it when the batch's claims are made in
// turn. Only the jobs taken are locked, so claims elsewhere (another
// replica) skip no job that stays queued. A lone claim, and one whose
// worker still holds an attempt (which must be interrupted first), takes
// the single path.
const (
	maxClaimBatch = 256
	// claimRunners: one batch can be in its commit while the next is
	// built. The next reads the window while the first still holds its
	// jobs: a cached-avatar choice that falls on one of them is skipped
	// when locked, and its claim takes the oldest job instead.
	claimRunners = 2
)

// claimCall is one claim waiting for its batch.
type claimCall = batchCall[*store.JobClaimParams, *store.Job]

// newClaimBatcher makes claims in batches; a worker that claims twice
// goes in a later round.
func newClaimBatcher(s *Store) *batcher[*store.JobClaimParams, *store.Job] {
	return newRoundBatcher(s, maxClaimBatch, claimRunners,
		func(p *store.JobClaimParams) string { return p.WorkerID }, s.claimOne, (*tx).claims)
}

// claims makes the round's claims (distinct workers): jobs[i] is the
// i-th claim's job, nil when none was claimable, where made[i]; a claim
// not made is left to the single path (its worker holds an attempt).
func (t *tx) claims(ctx context.Context, round []*claimCall) (jobs []*store.Job, made []bool, err error) {
	n := len(round)
	jobs, made = make([]*store.Job, n), make([]bool, n)
	ids := make([]string, n)
	for i, r := range round {
		ids[i] = r.arg.WorkerID
	}
	slices.Sort(ids)
	// The workers first, in id order: this transaction never waits for a
	// job (the jobs it takes are skipped when locked), so locking workers
	// before jobs cannot close a cycle with the transactions that lock a
	// job and then its worker; among workers, id order is everyone's.
	if _, err := t.exec(ctx, `SELECT id FROM workers WHERE id = ANY(?) ORDER BY id FOR UPDATE`, ids); err != nil {
		return nil, nil, fmt.Errorf("locking %d workers: %w", n, err)
	}
	rows, err := t.query(ctx, `SELECT DISTINCT worker_id FROM jobs WHERE state = 'running' AND worker_id = ANY(?) AND worker_id <> ''`, ids)
	if err != nil {
		return nil, nil, fmt.Errorf("finding attempts %d workers hold: %w", n, err)
	}
	holding, err := collect(rows, scanString)
	if err != nil {
		return nil, nil, fmt.Errorf("finding attempts %d workers hold: %w", n, err)
	}
	for i, r := range round {
		made[i] = !slices.Contains(holding, r.arg.WorkerID)
	}

	// The jobs, by worker type. A job taken for one type is not offered
	// again to the next (this transaction's own locks are not skipped).
	var (
		taken                []string
		jobIDs, tokens, wkrs []string
		leases, nows         []time.Time
		chosen               = make([]int, 0, n)
		types                []protocol.WorkerType
	)
	for i, r := range round {
		if made[i] && !slices.Contains(types, r.arg.WorkerType) {
			types = append(types, r.arg.WorkerType)
		}
	}
	give := func(i int, jobID string) {
		p := round[i].arg
		jobIDs, tokens, wkrs = append(jobIDs, jobID), append(tokens, p.Token), append(wkrs, p.WorkerID)
		leases, nows = append(leases, norm(p.Now.Add(p.LeaseDuration))), append(nows, norm(p.Now))
		chosen = append(chosen, i)
		taken = append(taken, jobID)
	}
	for _, wt := range types {
		var group []int
		var since time.Time
		for i, r := range round {
			if !made[i] || r.arg.WorkerType != wt {
				continue
			}
			group = append(group, i)
			if since.IsZero() || r.arg.Now.Before(since) {
				since = r.arg.Now // a job is claimable for every claim of the group
			}
		}
		claimable := `state = 'queued' AND run_after <= ? AND ` + otherTypesExcluded(wt) + ` AND NOT (id = ANY(?))`
		const order = ` ORDER BY priority DESC, created_at, id LIMIT `
		// The claims with a cached avatar in the window get it: the
		// window is read without locks, each claim's choice made as a
		// claim alone would make it in turn, and the chosen jobs locked;
		// a job another transaction holds is left to it, and its claim
		// takes the oldest instead.
		oldest := group
		if slices.ContainsFunc(group, func(i int) bool { return hasCached(round[i].arg.CachedAvatars) }) {
			rows, err := t.query(ctx, `SELECT id, avatar_id, priority FROM jobs WHERE `+claimable+order+
				strconv.Itoa(store.CachedAvatarLookahead+len(group)), t.s.ts(since), nonNil(taken))
			if err != nil {
				return nil, nil, fmt.Errorf("reading the window of %d claims: %w", len(group), err)
			}
			window, err := collect(rows, func(r scanner) (candidate, error) {
				var c candidate
				return c, r.Scan(&c.id, &c.avatarID, &c.priority)
			})
			if err != nil {
				return nil, nil, fmt.Errorf("reading the window of %d claims: %w", len(group), err)
			}
			prefer := map[int]string{}
			var want []string
			for _, i := range group {
				if len(window) == 0 {
					break
				}
				k, cached := pick(window, round[i].arg.CachedAvatars)
				if cached {
					prefer[i] = window[k].id
					want = append(want, window[k].id)
				}
				window = slices.Delete(window, k, k+1)
			}
			if len(want) > 0 {
				rows, err := t.query(ctx, `SELECT id FROM jobs WHERE id = ANY(?) AND `+claimable+` FOR UPDATE SKIP LOCKED`,
					want, t.s.ts(since), nonNil(taken))
				if err != nil {
					return nil, nil, fmt.Errorf("locking %d jobs with cached avatars: %w", len(want), err)
				}
				got, err := collect(rows, scanString)
				if err != nil {
					return nil, nil, fmt.Errorf("locking %d jobs with cached avatars: %w", len(want), err)
				}
				oldest = nil
				for _, i := range group {
					if id, ok := prefer[i]; ok && slices.Contains(got, id) {
						give(i, id)
					} else {
						oldest = append(oldest, i)
					}
				}
			}
		}
		if len(oldest) == 0 {
			continue
		}
		rows, err := t.query(ctx, `SELECT id FROM jobs WHERE `+claimable+order+strconv.Itoa(len(oldest))+` FOR UPDATE SKIP LOCKED`,
			t.s.ts(since), nonNil(taken))
		if err != nil {
			return nil, nil, fmt.Errorf("choosing jobs for %d claims: %w", len(oldest), err)
		}
		ids, err := collect(rows, scanString)
		if err != nil {
			return nil, nil, fmt.Errorf("choosing jobs for %d claims: %w", len(oldest), err)
		}
		for k, id := range ids { // the rest find nothing, as a claim would
			give(oldest[k], id)
		}
	}
	if len(jobIDs) == 0 {
		return jobs, made, nil
	}
	rows, err = t.query(ctx, `WITH j AS (UPDATE jobs SET state = 'running', attempt = attempt + 1, token = u.u_token,
	worker_id = u.u_worker, lease_expires_at = u.u_lease, progress = NULL, progress_at = u.u_now, updated_at = u.u_now
	FROM unnest(?::text[], ?::text[], ?::text[], ?::timestamptz[], ?::timestamptz[]) AS u(u_id, u_token, u_worker, u_lease, u_now)
	WHERE jobs.id = u.u_id AND `+isQueued+`
	RETURNING `+qualified("jobs", jobCols)+`),
a AS (INSERT INTO attempts (job_id, number, worker_id, token, outcome, started_at)
	SELECT id, attempt, worker_id, token, 'running', progress_at FROM j),
w AS (UPDATE workers SET job_id = j.id, attempt = j.attempt, status = 'busy',
	last_seen = GREATEST(workers.last_seen, j.progress_at)
	FROM j WHERE workers.id = j.worker_id)
SELECT `+jobCols+` FROM j`, jobIDs, tokens, wkrs, leases, nows)
	if err != nil {
		return nil, nil, fmt.Errorf("starting %d jobs: %w", len(jobIDs), err)
	}
	started, err := collect(rows, scanJob)
	if err != nil {
		return nil, nil, fmt.Errorf("starting %d jobs: %w", len(jobIDs), err)
	}
	if len(started) != len(jobIDs) {
		// Impossible under the row locks; let each claim go on its own.
		return nil, nil, fmt.Errorf("starting %d jobs: %d started", len(jobIDs), len(started))
	}
	byWorker := make(map[string]*store.Job, len(started))
	for _, j := range started {
		byWorker[j.WorkerID] = j
	}
	for _, i := range chosen {
		jobs[i] = byWorker[round[i].arg.WorkerID]
	}
	return jobs, made, nil
}

// candidate is a claimable job as the batch sees it.
type candidate struct {
	id, avatarID string
	priority     int
}

// pick returns the index of the job a claim with these cached avatars
// takes from cands (claimable jobs in claim order, not empty), and
// whether it is there for its avatar: the first job of the top priority
// whose avatar is cached among the first store.CachedAvatarLookahead,
// else the first.
func pick(cands []candidate, cached []string) (int, bool) {
	if !hasCached(cached) {
		return 0, false
	}
	top := cands[0].priority
	for k, c := range cands[:min(len(cands), store.CachedAvatarLookahead)] {
		if c.priority == top && c.avatarID != "" && slices.Contains(cached, c.avatarID) {
			return k, true
		}
	}
	return 0, false
}

func hasCached(cached []string) bool {
	return slices.ContainsFunc(cached, func(a string) bool { return a != "" })
}

// nonNil is ids, or an empty list for nil: a nil slice is a NULL array,
// and id = ANY(NULL) is NULL, not false.
func nonNil(ids []string) []string {
	if ids == nil {
		return []string{}
	}
	return ids
}

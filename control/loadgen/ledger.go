package loadgen

import (
	"fmt"
	"sync"
	"time"
)

// maxViolations bounds how many violations are kept with their details;
// all are counted.
const maxViolations = 20

// ledger checks exactly-once delivery from the workers' side. It records
// every claim the control plane answered and every call of an attempt
// that the control plane accepted, and flags:
//
//   - the same attempt of a job handed out by two claims (a double claim);
//   - an attempt whose call was accepted although it was sent after a later
//     attempt of the same job had been claimed: two attempts held the job
//     at once (an earlier lease that lapsed is fine, as long as the
//     control plane then refuses the old attempt's calls);
//   - a job completed more than once, or claimed again after it completed.
//
// Times are the generator's own clock: "sent" is when a request left,
// "answered" when its answer came back, so only calls that were strictly
// ordered are compared and a race in flight is never mistaken for a fault.
type ledger struct {
	mu         sync.Mutex
	jobs       map[string]*jobRecord
	violations []string
	nViolation int
	claims     int
	completes  int
}

type jobRecord struct {
	attempts   map[int]*attemptRecord
	latest     int       // highest attempt claimed
	latestAt   time.Time // when the claim of latest was answered
	completed  int       // accepted completes
	completeBy int       // the attempt that completed first
}

type attemptRecord struct {
	worker     string
	answeredAt time.Time
}

func newLedger() *ledger { return &ledger{jobs: map[string]*jobRecord{}} }

func (l *ledger) violate(format string, args ...any) {
	l.nViolation++
	if len(l.violations) < maxViolations {
		l.violations = append(l.violations, fmt.Sprintf(format, args...))
	}
}

// claimed records a claim answered at answeredAt with attempt of job.
func (l *ledger) claimed(job string, attempt int, worker string, answeredAt time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.claims++
	r := l.jobs[job]
	if r == nil {
		r = &jobRecord{attempts: map[int]*attemptRecord{}}
		l.jobs[job] = r
	}
	if prev := r.attempts[attempt]; prev != nil {
		l.violate("double claim: job %s attempt %d was handed to worker %s and again to worker %s", job, attempt, prev.worker, worker)
		return
	}
	if r.completed > 0 {
		l.violate("claim after completion: job %s attempt %d was handed to worker %s after attempt %d completed it", job, attempt, worker, r.completeBy)
	}
	r.attempts[attempt] = &attemptRecord{worker: worker, answeredAt: answeredAt}
	if attempt > r.latest {
		r.latest, r.latestAt = attempt, answeredAt
	}
}

// accepted records that the control plane accepted a call (what: heartbeat,
// upload, complete) of attempt of job that was sent at sentAt.
func (l *ledger) accepted(what, job string, attempt int, sentAt time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.checkCurrent(what, job, attempt, sentAt)
}

func (l *ledger) checkCurrent(what, job string, attempt int, sentAt time.Time) *jobRecord {
	r := l.jobs[job]
	if r == nil {
		l.violate("%s of job %s attempt %d accepted, but no claim handed out that job", what, job, attempt)
		return nil
	}
	// Only a claim answered before this call was sent happened before it.
	for n, a := range r.attempts {
		if n > attempt && a.answeredAt.Before(sentAt) {
			l.violate("concurrent holders: %s of job %s attempt %d (worker %s) accepted after attempt %d had been claimed by worker %s",
				what, job, attempt, r.attempts[attempt].workerOr("?"), n, a.worker)
			break
		}
	}
	return r
}

func (a *attemptRecord) workerOr(def string) string {
	if a == nil {
		return def
	}
	return a.worker
}

// completed records an accepted complete of attempt of job sent at sentAt.
func (l *ledger) completed(job string, attempt int, sentAt time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.checkCurrent("complete", job, attempt, sentAt)
	l.completes++
	if r == nil {
		return
	}
	r.completed++
	if r.completed > 1 {
		l.violate("double completion: job %s completed by attempt %d after attempt %d had completed it", job, attempt, r.completeBy)
		return
	}
	r.completeBy = attempt
}

// LedgerSummary is what the exactly-once check found.
type LedgerSummary struct {
	Jobs       int      // distinct jobs claimed
	Claims     int      // claims answered with an attempt
	Completes  int      // completes accepted
	Reclaimed  int      // jobs claimed more than once (after a lapsed lease or a stale call)
	Violations int      // double claims, concurrent holders, double completions
	Details    []string // the first violations, described
}

func (l *ledger) summary() LedgerSummary {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := LedgerSummary{Jobs: len(l.jobs), Claims: l.claims, Completes: l.completes, Violations: l.nViolation,
		Details: append([]string(nil), l.violations...)}
	for _, r := range l.jobs {
		if len(r.attempts) > 1 {
			s.Reclaimed++
		}
	}
	return s
}

// Package store is the control plane's persistence seam: one Store
// interface with two real implementations, sqlite (the embedded default)
// and postgres (several control replicas sharing one database), and one
// conformance suite (storetest) that both must pass.
//
// Every state transition is a single atomic compare-and-set inside the
// store, so any number of control replicas may call any method at once:
// a claim hands a job to exactly one worker, and only the attempt holding
// the current fencing token can progress, complete, fail or release a job.
// Policy (lease lengths, budgets, backoff, token generation) is decided by
// the caller and passed in; time is always passed in (Now), never read.
package store

import (
	"context"
	"errors"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/avatargen/musetalk/protocol"
)

// Errors. Implementations map their driver errors onto these.
var (
	// ErrNotFound: no job or worker with that id.
	ErrNotFound = errors.New("not found")
	// ErrNoJob: a claim found nothing claimable.
	ErrNoJob = errors.New("no job to claim")
	// ErrStaleAttempt: the call named an attempt or token that is not the
	// job's current running attempt. Nothing was changed.
	ErrStaleAttempt = errors.New("not the job's current attempt")
	// ErrFinal: the job is already succeeded or failed; nothing was changed.
	ErrFinal = errors.New("job already finished")
	// ErrNotFailed: JobRetry named a job that is not failed; nothing was
	// changed.
	ErrNotFailed = errors.New("job is not failed")
)

// SanitizeText makes free text storable the same way in every store:
// PostgreSQL's text holds neither NUL nor invalid UTF-8 (it refuses the
// whole statement with "invalid byte sequence for encoding UTF8"), SQLite
// keeps any bytes. Each NUL and each run of invalid bytes becomes U+FFFD.
// The stores apply it to the free text workers send (heartbeat provider,
// GPU class, version and self-check; fail error; release reason), so such
// calls succeed and read back alike on both.
func SanitizeText(s string) string {
	if strings.IndexByte(s, 0) < 0 && utf8.ValidString(s) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// Job is one lip-sync job and the state of its current (or last) attempt.
type Job struct {
	ID             string
	State          protocol.JobState
	Priority       int                 // higher is claimed first
	WorkerType     protocol.WorkerType // "" means any pool
	IdempotencyKey string              // "" means none; otherwise unique
	AvatarKey      string
	AudioKey       string
	AvatarID       string // cache identity; claims prefer workers that cache it
	Params         []byte // JSON of protocol.JobParams, opaque to the store
	TraceContext   map[string]string

	Attempt        int    // number of the current or last attempt; 0 before the first claim
	Token          string // fencing token of the running attempt; "" unless running
	WorkerID       string // worker of the current or last attempt
	LeaseExpiresAt *time.Time
	Progress       *protocol.Progress
	ProgressAt     *time.Time // when Progress last changed, or the claim time

	Interruptions    int // attempts lost to lease expiry, worker loss, stalls, releases
	Failures         int // attempts the worker reported failed
	MaxInterruptions int // budgets: the job fails when a count reaches its max
	MaxFailures      int

	RunAfter   time.Time // not claimable before this (backoff)
	Error      string    // last attempt's error, or why the job ended
	OutputKey  string    // the published output; set only when succeeded
	CreatedAt  time.Time
	UpdatedAt  time.Time
	FinishedAt *time.Time
}

// Attempt is one claim of a job, kept forever as the job's history.
type Attempt struct {
	JobID     string
	Number    int
	WorkerID  string
	Outcome   protocol.AttemptOutcome
	Error     string
	OutputKey string // set when the attempt completed
	StartedAt time.Time
	EndedAt   *time.Time
}

// Worker is a registry entry, created by the worker's first heartbeat.
type Worker struct {
	ID             string
	WorkerType     protocol.WorkerType
	Provider       string
	GPUClass       string
	Status         protocol.WorkerStatus
	Version        string
	FirstSeen      time.Time
	LastSeen       time.Time
	JobID          string // the attempt the worker holds, if any
	Attempt        int
	DrainRequested bool // set by an operator; the heartbeat answer tells the worker
	CachedAvatars  []string
	SelfCheck      *protocol.SelfCheck
}

// Backoff returns how long to wait before the next attempt, given the
// budget's count after this one (1 for the first retry). Nil means no wait.
type Backoff func(count int) time.Duration

// JobInsertParams describes a new job. ID is chosen by the caller.
type JobInsertParams struct {
	ID               string
	Priority         int
	WorkerType       protocol.WorkerType
	IdempotencyKey   string
	AvatarKey        string
	AudioKey         string
	AvatarID         string
	Params           []byte
	TraceContext     map[string]string
	MaxInterruptions int
	MaxFailures      int
	Now              time.Time
}

// JobListParams filters and pages JobList. Jobs come newest first
// (CreatedAt, then ID, descending); Before continues after a page's last job.
type JobListParams struct {
	States     []protocol.JobState // empty: all
	WorkerType protocol.WorkerType // "": all
	WorkerID   string              // "": all; else jobs whose current/last attempt ran there
	Limit      int                 // 1..1000; 0 means 100
	Before     *JobCursor
}

// JobCursor is the position of one job in JobList's order.
type JobCursor struct {
	CreatedAt time.Time
	ID        string
}

// CachedAvatarLookahead is how many of the top priority's claimable jobs,
// oldest first, a claim searches for one whose avatar the worker caches.
const CachedAvatarLookahead = 64

// JobClaimParams asks for one job for one worker.
//
// A claimable job is queued, has RunAfter <= Now, and has an empty
// WorkerType or the worker's. Order: Priority descending, then jobs whose
// AvatarID is in CachedAvatars, then CreatedAt and ID ascending. The
// cached-avatar preference looks at the first CachedAvatarLookahead
// claimable jobs of the top priority only: past them the oldest job comes
// first, so that the claim's cost does not grow with the queue (nor
// depend on the database's statistics of it), and an old job waits for at
// most that many younger ones that suit some worker better.
//
// The claim makes the job running with Attempt+1, Token, WorkerID,
// LeaseExpiresAt = Now+LeaseDuration, Progress nil and ProgressAt = Now,
// records a running Attempt, and points the worker's registry entry (if
// any) at it with status busy. A worker runs one job at a time, so any
// attempt that this worker still holds is first interrupted ("worker
// claimed again": it restarted) and charged to that job's interruption
// budget.
type JobClaimParams struct {
	WorkerID      string
	WorkerType    protocol.WorkerType
	CachedAvatars []string
	Token         string
	LeaseDuration time.Duration
	Backoff       Backoff // for attempts interrupted by this claim
	Now           time.Time
}

// AttemptParams names an attempt: it must be the job's running attempt,
// with the same number and token, or the call returns ErrStaleAttempt.
type AttemptParams struct {
	JobID   string
	Attempt int
	Token   string
	Now     time.Time
}

// JobProgressParams records progress and extends the lease to
// Now+LeaseDuration. ProgressAt moves only if Progress differs from the
// stored one. A report in the stored stage with fewer frames done is a late
// one and leaves the stored progress alone (heartbeats record progress the
// same way).
type JobProgressParams struct {
	AttemptParams
	Progress      protocol.Progress
	LeaseDuration time.Duration
}

// JobCompleteParams ends the job succeeded and publishes OutputKey.
type JobCompleteParams struct {
	AttemptParams
	OutputKey string
}

// JobFailParams records a failure the worker reported. Failures grows by
// one; the job ends failed if the failure is not Retryable or the budget is
// spent, else it is queued again with RunAfter = Now+Backoff(Failures).
type JobFailParams struct {
	AttemptParams
	Error     string
	Retryable bool
	Backoff   Backoff
}

// JobReleaseParams gives an attempt back (a draining worker). It counts
// against the interruption budget like any interruption.
type JobReleaseParams struct {
	AttemptParams
	Reason  string
	Backoff Backoff
}

// WorkerHeartbeatParams is one heartbeat. The worker's entry is created or
// updated (LastSeen = Now; status, provider, gpu class, type, version,
// cached avatars and self-check as reported; FirstSeen kept). A reported
// idle status while the entry still holds an attempt is stored as busy (the
// heartbeat raced the claim); it turns idle once the attempt ends.
//
// If JobID is set and the worker holds that running attempt, its lease is
// extended to Now+LeaseDuration and Progress (if any) is recorded as in
// JobProgress. If JobID is set and the worker does not hold it (cancelled,
// finished, or taken away), the result carries a CancelOrder.
type WorkerHeartbeatParams struct {
	ID            string
	WorkerType    protocol.WorkerType
	Provider      string
	GPUClass      string
	Status        protocol.WorkerStatus
	Version       string
	CachedAvatars []string
	SelfCheck     *protocol.SelfCheck
	JobID         string
	Attempt       int
	Progress      *protocol.Progress
	LeaseDuration time.Duration
	Now           time.Time
}

// HeartbeatResult is what the heartbeat answer is built from.
type HeartbeatResult struct {
	Worker         *Worker
	Cancel         *protocol.CancelOrder
	LeaseExpiresAt *time.Time // the extended lease, when the worker holds its job
}

// WorkerListParams filters WorkerList; empty fields match all.
type WorkerListParams struct {
	Status     protocol.WorkerStatus
	WorkerType protocol.WorkerType
}

// SweepParams drives one maintenance pass; it is safe to run on every
// replica at once (each change is a compare-and-set).
//
//   - Workers not seen since Now-OfflineAfter become offline.
//   - Running attempts are interrupted when their lease has expired
//     ("lease expired 2s ago; worker last heard from 17s ago"), their
//     worker is offline ("worker offline; worker last heard from ..."),
//     or, when StallTimeout > 0, their ProgressAt is older than
//     Now-StallTimeout ("no progress for ..."). The reasons' first words
//     are fixed; the rest tells a silent worker from one whose calls did
//     not renew the lease.
//
// An interruption adds one to Interruptions and ends the attempt
// interrupted; the job is queued again with RunAfter = Now+Backoff(count),
// or ends failed once the interruption budget is spent.
type SweepParams struct {
	OfflineAfter time.Duration
	StallTimeout time.Duration
	Backoff      Backoff
	Now          time.Time
}

// SweepResult says what one pass changed, for logs and metrics.
type SweepResult struct {
	WorkersOffline []string
	Interrupted    []Interruption
}

// Interruption is one attempt the sweeper (or a claim) took away.
type Interruption struct {
	JobID    string
	Attempt  int
	WorkerID string
	Reason   string
	Final    bool // the job ended failed: its budget was spent
}

// Store is the persistence interface of the control plane. Methods that
// take an id return ErrNotFound when it does not exist.
type Store interface {
	// JobInsert adds a queued job. When IdempotencyKey is set and a job with
	// it exists, that job is returned with existed = true and nothing changes.
	JobInsert(ctx context.Context, p *JobInsertParams) (job *Job, existed bool, err error)
	JobGet(ctx context.Context, id string) (*Job, error)
	JobList(ctx context.Context, p *JobListParams) ([]*Job, error)
	// JobAttempts returns the job's attempts, oldest first.
	JobAttempts(ctx context.Context, jobID string) ([]*Attempt, error)
	// JobClaim returns ErrNoJob when nothing is claimable.
	JobClaim(ctx context.Context, p *JobClaimParams) (*Job, error)
	JobProgress(ctx context.Context, p *JobProgressParams) (*Job, error)
	JobComplete(ctx context.Context, p *JobCompleteParams) (*Job, error)
	JobFail(ctx context.Context, p *JobFailParams) (*Job, error)
	JobRelease(ctx context.Context, p *JobReleaseParams) (*Job, error)
	// JobCancel ends a queued or running job cancelled (a running attempt
	// ends cancelled; its worker learns from its next heartbeat answer).
	// Cancelling a cancelled job returns it unchanged; a succeeded or failed
	// job returns ErrFinal.
	JobCancel(ctx context.Context, id string, now time.Time) (*Job, error)
	// JobRetry queues a failed job again, at once and with fresh budgets
	// (Failures and Interruptions 0; Error, Progress and FinishedAt
	// cleared); its attempts stay as its history and the next claim is
	// attempt Attempt+1. Any other state returns ErrNotFailed.
	JobRetry(ctx context.Context, id string, now time.Time) (*Job, error)
	// JobCountByState counts jobs in every state (zero counts included).
	JobCountByState(ctx context.Context) (map[protocol.JobState]int, error)
	// AttemptCountByOutcome counts attempts by outcome (zero counts included).
	AttemptCountByOutcome(ctx context.Context) (map[protocol.AttemptOutcome]int, error)

	WorkerHeartbeat(ctx context.Context, p *WorkerHeartbeatParams) (*HeartbeatResult, error)
	WorkerGet(ctx context.Context, id string) (*Worker, error)
	// WorkerList returns workers ordered by ID.
	WorkerList(ctx context.Context, p *WorkerListParams) ([]*Worker, error)
	// WorkerSetDrain sets or clears an operator's drain request.
	WorkerSetDrain(ctx context.Context, id string, drain bool) (*Worker, error)
	// WorkerCountByStatus counts workers in every status (zero counts included).
	WorkerCountByStatus(ctx context.Context) (map[protocol.WorkerStatus]int, error)

	Sweep(ctx context.Context, p *SweepParams) (*SweepResult, error)

	// Close releases the store's connections.
	Close() error
}

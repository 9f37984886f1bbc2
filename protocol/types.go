package protocol

import (
	"errors"
	"fmt"
	"regexp"
	"time"
)

// WorkerType is the pool a worker belongs to.
type WorkerType string

const (
	WorkerMain      WorkerType = "main"      // steady pool (SaladCloud)
	WorkerTransient WorkerType = "transient" // burst pool (Vast.ai)
)

// Valid reports whether t is a known worker type.
func (t WorkerType) Valid() bool { return t == WorkerMain || t == WorkerTransient }

// WorkerTypes returns every known worker type.
func WorkerTypes() []WorkerType { return []WorkerType{WorkerMain, WorkerTransient} }

// WorkerStatus is a worker's state in the registry. Workers report idle, busy
// or draining; only the control plane's sweeper sets offline.
type WorkerStatus string

const (
	WorkerIdle     WorkerStatus = "idle"
	WorkerBusy     WorkerStatus = "busy"
	WorkerDraining WorkerStatus = "draining"
	WorkerOffline  WorkerStatus = "offline"
)

// Reportable reports whether a worker may send s in a heartbeat.
func (s WorkerStatus) Reportable() bool {
	return s == WorkerIdle || s == WorkerBusy || s == WorkerDraining
}

// JobState is a job's place in its life: queued -> running -> one of the
// three final states. A running job that is interrupted or fails retryably
// goes back to queued for its next attempt.
type JobState string

const (
	JobQueued    JobState = "queued"
	JobRunning   JobState = "running"
	JobSucceeded JobState = "succeeded"
	JobFailed    JobState = "failed"
	JobCancelled JobState = "cancelled"
)

// JobStates lists every state, in life order.
func JobStates() []JobState {
	return []JobState{JobQueued, JobRunning, JobSucceeded, JobFailed, JobCancelled}
}

// Final reports whether no further transition can leave s.
func (s JobState) Final() bool {
	return s == JobSucceeded || s == JobFailed || s == JobCancelled
}

// Valid reports whether s is a known state.
func (s JobState) Valid() bool {
	for _, v := range JobStates() {
		if s == v {
			return true
		}
	}
	return false
}

// AttemptOutcome is how one attempt of a job ended.
type AttemptOutcome string

const (
	OutcomeRunning     AttemptOutcome = "running"     // not ended yet
	OutcomeSucceeded   AttemptOutcome = "succeeded"   // completed; its output is the job's result
	OutcomeFailed      AttemptOutcome = "failed"      // the worker reported a failure (failure budget)
	OutcomeInterrupted AttemptOutcome = "interrupted" // lease lost, worker offline or progress stalled (interruption budget)
	OutcomeReleased    AttemptOutcome = "released"    // the worker gave it back while draining (interruption budget)
	OutcomeCancelled   AttemptOutcome = "cancelled"   // the job was cancelled while this attempt ran
)

// AttemptOutcomes lists every outcome.
func AttemptOutcomes() []AttemptOutcome {
	return []AttemptOutcome{OutcomeRunning, OutcomeSucceeded, OutcomeFailed, OutcomeInterrupted, OutcomeReleased, OutcomeCancelled}
}

// Progress is how far an attempt has come. FramesDone only grows within a
// stage; the control plane treats any change of Stage or FramesDone as
// progress when it looks for stalled attempts.
type Progress struct {
	Stage       string `json:"stage"`
	FramesDone  int    `json:"frames_done"`
	FramesTotal int    `json:"frames_total"`
}

// Validate checks the counters.
func (p *Progress) Validate() error {
	if p.FramesDone < 0 || p.FramesTotal < 0 {
		return errors.New("progress: frames_done and frames_total must not be negative")
	}
	if p.FramesTotal > 0 && p.FramesDone > p.FramesTotal {
		return fmt.Errorf("progress: frames_done %d exceeds frames_total %d", p.FramesDone, p.FramesTotal)
	}
	if len(p.Stage) > 64 {
		return errors.New("progress: stage longer than 64 bytes")
	}
	return nil
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

// ValidID reports whether s can name a worker or a job: 1 to 128 characters
// of letters, digits and . _ : - , not starting with punctuation. IDs appear
// in URL paths and object keys, so nothing else is allowed.
func ValidID(s string) bool { return idPattern.MatchString(s) }

// SelfCheck is what a worker found about itself at start-up; it is sent in
// the first heartbeat and shown in /health.
type SelfCheck struct {
	Engine         string `json:"engine"`
	Device         string `json:"device"`
	FreeDiskBytes  int64  `json:"free_disk_bytes"`
	WeightsPresent bool   `json:"weights_present"`
	Error          string `json:"error,omitempty"`
}

// Heartbeat is the body of POST /internal/main/workers/{id}/heartbeat. The
// first four fields are the deployed fleet's contract and are required; the
// rest are optional. The first heartbeat registers the worker.
type Heartbeat struct {
	Status        WorkerStatus `json:"status"`
	Provider      string       `json:"provider"`
	GPUClass      string       `json:"gpu_class"`
	WorkerType    WorkerType   `json:"worker_type"`
	JobID         string       `json:"job_id,omitempty"`
	Attempt       int          `json:"attempt,omitempty"`
	Progress      *Progress    `json:"progress,omitempty"`
	Version       string       `json:"version,omitempty"`
	CachedAvatars []string     `json:"cached_avatars,omitempty"`
	SelfCheck     *SelfCheck   `json:"self_check,omitempty"`
}

// MaxCachedAvatars bounds Heartbeat.CachedAvatars.
const MaxCachedAvatars = 256

// Validate checks a heartbeat's fields and names the first bad one.
func (h *Heartbeat) Validate() error {
	if !h.Status.Reportable() {
		return fmt.Errorf("status: %q is not one of idle, busy, draining", h.Status)
	}
	if !h.WorkerType.Valid() {
		return fmt.Errorf("worker_type: %q is not one of main, transient", h.WorkerType)
	}
	if len(h.Provider) > 64 || len(h.GPUClass) > 64 || len(h.Version) > 64 {
		return errors.New("provider, gpu_class and version must be at most 64 bytes")
	}
	if h.JobID != "" && !ValidID(h.JobID) {
		return fmt.Errorf("job_id: %q is not a valid id", h.JobID)
	}
	if h.Attempt < 0 {
		return errors.New("attempt: must not be negative")
	}
	if h.Progress != nil {
		if err := h.Progress.Validate(); err != nil {
			return err
		}
	}
	if len(h.CachedAvatars) > MaxCachedAvatars {
		return fmt.Errorf("cached_avatars: more than %d entries", MaxCachedAvatars)
	}
	for _, a := range h.CachedAvatars {
		if !ValidID(a) {
			return fmt.Errorf("cached_avatars: %q is not a valid avatar id", a)
		}
	}
	return nil
}

// CancelOrder tells a worker to stop an attempt: the job was cancelled, or
// the attempt is no longer the job's current one (its lease was lost).
type CancelOrder struct {
	JobID   string `json:"job_id"`
	Attempt int    `json:"attempt"`
	Reason  string `json:"reason"`
}

// HeartbeatResponse tells the worker what to do. Cancel is set when the
// worker should abandon the attempt it reported; Drain when it should stop
// claiming (and finish or release what it holds).
type HeartbeatResponse struct {
	WorkerID       string       `json:"worker_id"`
	Cancel         *CancelOrder `json:"cancel,omitempty"`
	Drain          bool         `json:"drain"`
	LeaseExpiresAt *time.Time   `json:"lease_expires_at,omitempty"`
}

// ClaimRequest is the optional body of a claim. Fields left empty are taken
// from the worker's registry entry (its last heartbeat).
type ClaimRequest struct {
	WorkerType    WorkerType `json:"worker_type,omitempty"`
	Provider      string     `json:"provider,omitempty"`
	GPUClass      string     `json:"gpu_class,omitempty"`
	Version       string     `json:"version,omitempty"`
	CachedAvatars []string   `json:"cached_avatars,omitempty"`
}

// Inputs names a job's input objects in the object store.
type Inputs struct {
	AvatarKey string `json:"avatar_key"`
	AudioKey  string `json:"audio_key"`
}

// Assignment is the 200 answer to a claim: one attempt of one job, owned by
// the claiming worker until LeaseExpiresAt unless heartbeats extend it.
// Every later call about it carries Attempt and Token.
type Assignment struct {
	JobID          string            `json:"job_id"`
	Attempt        int               `json:"attempt"`
	Token          string            `json:"token"`
	LeaseExpiresAt time.Time         `json:"lease_expires_at"`
	Inputs         Inputs            `json:"inputs"`
	AvatarID       string            `json:"avatar_id,omitempty"`
	Params         JobParams         `json:"params"`
	OutputKey      string            `json:"output_key"`
	TraceContext   map[string]string `json:"trace_context,omitempty"`
}

// AttemptRef identifies the attempt a worker speaks for.
type AttemptRef struct {
	Attempt int    `json:"attempt"`
	Token   string `json:"token"`
}

// ProgressRequest is the body of .../progress.
type ProgressRequest struct {
	Attempt  int      `json:"attempt"`
	Token    string   `json:"token"`
	Progress Progress `json:"progress"`
}

// CompleteRequest is the body of .../complete. OutputKey must be the
// attempt-scoped key the assignment named; SHA1 (lower-case hex) and Size
// describe the bytes the worker uploaded there, and the control plane
// publishes the object only if the store holds exactly those.
type CompleteRequest struct {
	Attempt   int    `json:"attempt"`
	Token     string `json:"token"`
	OutputKey string `json:"output_key"`
	SHA1      string `json:"sha1"`
	Size      int64  `json:"size"`
}

// FailRequest is the body of .../fail. Retryable failures are retried while
// the job's failure budget lasts; permanent ones end the job.
type FailRequest struct {
	Attempt   int    `json:"attempt"`
	Token     string `json:"token"`
	Error     string `json:"error"`
	Retryable bool   `json:"retryable"`
}

// ReleaseRequest is the body of .../release: a draining worker gives the
// attempt back; it counts against the interruption budget.
type ReleaseRequest struct {
	Attempt int    `json:"attempt"`
	Token   string `json:"token"`
	Reason  string `json:"reason,omitempty"`
}

// AttemptAck answers progress, complete, fail and release.
type AttemptAck struct {
	JobID          string     `json:"job_id"`
	State          JobState   `json:"state"`
	LeaseExpiresAt *time.Time `json:"lease_expires_at,omitempty"`
}

// ErrorBody is the shape of every error answer: {"error":{"code","message"}}.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail names what went wrong. Code is stable and machine-readable;
// Message is for people.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error codes.
const (
	CodeBadRequest    = "bad_request"
	CodeUnauthorized  = "unauthorized"
	CodeNotFound      = "not_found"
	CodeStaleToken    = "stale_token" // 409: not the job's current attempt
	CodeConflict      = "conflict"    // 409: the job is in a state that forbids the call
	CodeTooLarge      = "too_large"   // 413
	CodeNotReady      = "not_ready"   // 409: no result yet
	CodeInternal      = "internal"
	CodeUnavailable   = "unavailable"
	CodeMethodInvalid = "method_not_allowed"

	// CodeOutputMismatch (409, complete): the output object is missing,
	// empty, or not the size and SHA-1 the call names; nothing was
	// published. The worker uploads its output again and completes again.
	CodeOutputMismatch = "output_mismatch"
)

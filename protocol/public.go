package protocol

import "time"

// SubmitRequest is the JSON form of POST /v1/jobs, naming inputs already in
// the object store. The multipart form carries the same fields as form
// values ("params" as a JSON string) plus "avatar" and "audio" files.
type SubmitRequest struct {
	AvatarKey      string     `json:"avatar_key"`
	AudioKey       string     `json:"audio_key"`
	Params         JobParams  `json:"params"`
	Priority       int        `json:"priority,omitempty"`        // higher runs first; -100..100
	IdempotencyKey string     `json:"idempotency_key,omitempty"` // a repeat submit returns the first job
	WorkerType     WorkerType `json:"worker_type,omitempty"`     // pin to a pool; empty: any
	AvatarID       string     `json:"avatar_id,omitempty"`       // cache identity of the avatar; default: derived from its content
}

// AttemptView is one attempt in a job's history.
type AttemptView struct {
	Attempt   int            `json:"attempt"`
	WorkerID  string         `json:"worker_id"`
	Outcome   AttemptOutcome `json:"outcome"`
	Error     string         `json:"error,omitempty"`
	StartedAt time.Time      `json:"started_at"`
	EndedAt   *time.Time     `json:"ended_at,omitempty"`
	OutputKey string         `json:"output_key,omitempty"`
}

// JobView is a job as the public API shows it. Fencing tokens never appear.
type JobView struct {
	ID               string            `json:"id"`
	State            JobState          `json:"state"`
	Priority         int               `json:"priority"`
	WorkerType       WorkerType        `json:"worker_type,omitempty"`
	IdempotencyKey   string            `json:"idempotency_key,omitempty"`
	Inputs           Inputs            `json:"inputs"`
	AvatarID         string            `json:"avatar_id,omitempty"`
	Params           JobParams         `json:"params"`
	Attempt          int               `json:"attempt"`
	WorkerID         string            `json:"worker_id,omitempty"`
	Progress         *Progress         `json:"progress,omitempty"`
	Interruptions    int               `json:"interruptions"`
	Failures         int               `json:"failures"`
	Error            string            `json:"error,omitempty"`
	OutputKey        string            `json:"output_key,omitempty"`
	CancelRequested  bool              `json:"cancel_requested,omitempty"`
	LeaseExpiresAt   *time.Time        `json:"lease_expires_at,omitempty"`
	RunAfter         *time.Time        `json:"run_after,omitempty"`
	CreatedAt        time.Time         `json:"created_at"`
	UpdatedAt        time.Time         `json:"updated_at"`
	FinishedAt       *time.Time        `json:"finished_at,omitempty"`
	TraceContext     map[string]string `json:"trace_context,omitempty"`
	TraceID          string            `json:"trace_id,omitempty"` // the job's W3C trace id (32 hex digits), from TraceContext
	Attempts         []AttemptView     `json:"attempts,omitempty"`
	ResultPath       string            `json:"result_path,omitempty"` // GET this for the output once succeeded
	ProgressFraction float64           `json:"progress_fraction,omitempty"`
}

// JobList is a page of jobs, newest first. NextCursor, when not empty, is
// passed as ?cursor= to get the next page.
type JobList struct {
	Jobs       []JobView `json:"jobs"`
	NextCursor string    `json:"next_cursor,omitempty"`
}

// WorkerView is a worker registry entry.
type WorkerView struct {
	ID            string       `json:"id"`
	WorkerType    WorkerType   `json:"worker_type"`
	Provider      string       `json:"provider"`
	GPUClass      string       `json:"gpu_class"`
	Status        WorkerStatus `json:"status"`
	Version       string       `json:"version,omitempty"`
	FirstSeen     time.Time    `json:"first_seen"`
	LastSeen      time.Time    `json:"last_seen"`
	JobID         string       `json:"job_id,omitempty"`
	Attempt       int          `json:"attempt,omitempty"`
	DrainRequest  bool         `json:"drain_requested,omitempty"`
	CachedAvatars []string     `json:"cached_avatars,omitempty"`
	SelfCheck     *SelfCheck   `json:"self_check,omitempty"`
}

// WorkerList is the answer of GET /v1/workers.
type WorkerList struct {
	Workers []WorkerView `json:"workers"`
}

package control

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/avatargen/musetalk/blob"
	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/protocol"
)

// Limits on free text a worker sends.
const (
	maxErrorText  = 4096
	maxReasonText = 1024
)

// outputKey is the attempt-scoped object key of an attempt's output. Only
// this key may be published for that attempt.
func outputKey(jobID string, attempt int) string {
	return fmt.Sprintf("outputs/%s/%d.mp4", jobID, attempt)
}

// pathID returns the named path value after checking it is a valid id.
func pathID(r *http.Request, name, what string) (string, error) {
	id := r.PathValue(name)
	if !protocol.ValidID(id) {
		return "", badRequest("%s %q is not a valid id (1-128 of A-Z a-z 0-9 . _ : -, starting with a letter or digit)", what, id)
	}
	return id, nil
}

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }

// handleHeartbeat records a heartbeat (the first one registers the worker)
// and answers with a cancel order, the drain flag and the extended lease.
func (s *Server) handleHeartbeat(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id", "worker id")
	if err != nil {
		return err
	}
	ri := info(r.Context())
	ri.workerID = id
	var hb protocol.Heartbeat
	if err := decodeJSON(w, r, &hb, allowUnknown); err != nil {
		return err
	}
	if err := hb.Validate(); err != nil {
		return badRequest("%v", err)
	}
	ri.jobID, ri.attempt = hb.JobID, hb.Attempt
	res, err := s.store.WorkerHeartbeat(r.Context(), &store.WorkerHeartbeatParams{
		ID: id, WorkerType: hb.WorkerType, Provider: hb.Provider, GPUClass: hb.GPUClass, Status: hb.Status,
		Version: hb.Version, CachedAvatars: hb.CachedAvatars, SelfCheck: hb.SelfCheck,
		JobID: hb.JobID, Attempt: hb.Attempt, Progress: hb.Progress,
		LeaseDuration: s.cfg.LeaseDuration, Now: s.now(),
	})
	if err != nil {
		return err // the store's error names the worker and the step
	}
	if res.Cancel != nil {
		s.log.InfoContext(r.Context(), "cancel order sent to worker", "worker_id", id,
			"job_id", res.Cancel.JobID, "attempt", res.Cancel.Attempt, "reason", res.Cancel.Reason)
	}
	writeJSON(w, http.StatusOK, protocol.HeartbeatResponse{
		WorkerID: id, Cancel: res.Cancel, Drain: res.Worker.DrainRequested, LeaseExpiresAt: res.LeaseExpiresAt,
	})
	return nil
}

// validateClaim checks the optional claim body.
func validateClaim(c *protocol.ClaimRequest) error {
	if c.WorkerType != "" && !c.WorkerType.Valid() {
		return badRequest("worker_type: %q is not one of main, transient", c.WorkerType)
	}
	if len(c.Provider) > 64 || len(c.GPUClass) > 64 || len(c.Version) > 64 {
		return badRequest("provider, gpu_class and version must be at most 64 bytes")
	}
	if len(c.CachedAvatars) > protocol.MaxCachedAvatars {
		return badRequest("cached_avatars: more than %d entries", protocol.MaxCachedAvatars)
	}
	for _, a := range c.CachedAvatars {
		if !protocol.ValidID(a) {
			return badRequest("cached_avatars: %q is not a valid avatar id", a)
		}
	}
	return nil
}

// handleClaim hands the worker one attempt (200 with an Assignment) or
// nothing (204). A worker that has never sent a heartbeat is registered
// from the claim body, which must then name its worker_type. A worker
// with a drain request, or that reported itself draining, gets 204.
func (s *Server) handleClaim(w http.ResponseWriter, r *http.Request) error {
	start := time.Now()
	result := "error"
	defer func() { s.metrics.claimDuration.WithLabelValues(result).Observe(time.Since(start).Seconds()) }()

	id, err := pathID(r, "id", "worker id")
	if err != nil {
		return err
	}
	ri := info(r.Context())
	ri.workerID = id
	var req protocol.ClaimRequest
	if err := decodeJSON(w, r, &req, allowEmpty|allowUnknown); err != nil {
		return err
	}
	if err := validateClaim(&req); err != nil {
		return err
	}
	ctx := r.Context()
	wk, err := s.store.WorkerGet(ctx, id)
	switch {
	case isNotFound(err):
		if req.WorkerType == "" {
			return badRequest("worker_type: required in the claim body of worker %q, which has never sent a heartbeat", id)
		}
		res, err := s.store.WorkerHeartbeat(ctx, &store.WorkerHeartbeatParams{
			ID: id, WorkerType: req.WorkerType, Provider: req.Provider, GPUClass: req.GPUClass,
			Status: protocol.WorkerIdle, Version: req.Version, CachedAvatars: req.CachedAvatars,
			LeaseDuration: s.cfg.LeaseDuration, Now: s.now(),
		})
		if err != nil {
			return fmt.Errorf("registering worker %s from its claim: %w", id, err)
		}
		wk = res.Worker
		s.log.InfoContext(ctx, "worker registered by its claim", "worker_id", id, "worker_type", req.WorkerType)
	case err != nil:
		return fmt.Errorf("reading worker %s: %w", id, err)
	}
	if wk.DrainRequested || wk.Status == protocol.WorkerDraining {
		result = "drained"
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	workerType, cached := wk.WorkerType, wk.CachedAvatars
	if req.WorkerType != "" {
		workerType = req.WorkerType
	}
	if req.CachedAvatars != nil {
		cached = req.CachedAvatars
	}
	token, err := newToken()
	if err != nil {
		return err
	}
	job, err := s.store.JobClaim(ctx, &store.JobClaimParams{
		WorkerID: id, WorkerType: workerType, CachedAvatars: cached, Token: token,
		LeaseDuration: s.cfg.LeaseDuration, Backoff: s.backoff, Now: s.now(),
	})
	if errors.Is(err, store.ErrNoJob) {
		result = "empty"
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	if err != nil {
		return fmt.Errorf("claiming for worker %s: %w", id, err)
	}
	result = "claimed"
	ri.jobID, ri.attempt = job.ID, job.Attempt
	var params protocol.JobParams
	if len(job.Params) > 0 {
		if err := json.Unmarshal(job.Params, &params); err != nil {
			return fmt.Errorf("decoding the stored params of job %s: %w", job.ID, err)
		}
	}
	s.jobEvent(ctx, job, "job.claimed")
	writeJSON(w, http.StatusOK, protocol.Assignment{
		JobID: job.ID, Attempt: job.Attempt, Token: job.Token, LeaseExpiresAt: derefTime(job.LeaseExpiresAt),
		Inputs:   protocol.Inputs{AvatarKey: job.AvatarKey, AudioKey: job.AudioKey},
		AvatarID: job.AvatarID, Params: params, OutputKey: outputKey(job.ID, job.Attempt),
		TraceContext: job.TraceContext,
	})
	return nil
}

func derefTime(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

// attemptCall reads the job id from the path and the body into dst, and
// checks the attempt reference.
func attemptCall(w http.ResponseWriter, r *http.Request, dst any, ref func() (int, string)) (string, error) {
	jobID, err := pathID(r, "job_id", "job id")
	if err != nil {
		return "", err
	}
	ri := info(r.Context())
	ri.jobID = jobID
	if err := decodeJSON(w, r, dst, 0); err != nil {
		return "", err
	}
	attempt, token := ref()
	ri.attempt = attempt
	switch {
	case attempt < 1:
		return "", badRequest("attempt: required, a positive attempt number from the assignment")
	case token == "":
		return "", badRequest("token: required, the fencing token from the assignment")
	case len(token) > 256:
		return "", badRequest("token: longer than 256 bytes")
	}
	return jobID, nil
}

// attemptError maps the store's errors for an attempt call to answers.
func attemptError(err error, jobID string, attempt int) error {
	switch {
	case isNotFound(err):
		return notFound("job %q not found", jobID)
	case errors.Is(err, store.ErrStaleAttempt), errors.Is(err, store.ErrFinal):
		return errorf(http.StatusConflict, protocol.CodeStaleToken,
			"attempt %d of job %s is not the job's current attempt, or the token does not match; nothing was changed", attempt, jobID)
	}
	return fmt.Errorf("job %s attempt %d: %w", jobID, attempt, err)
}

func ack(j *store.Job) protocol.AttemptAck {
	a := protocol.AttemptAck{JobID: j.ID, State: j.State}
	if j.State == protocol.JobRunning {
		a.LeaseExpiresAt = j.LeaseExpiresAt
	}
	return a
}

// handleProgress records an attempt's progress and extends its lease.
func (s *Server) handleProgress(w http.ResponseWriter, r *http.Request) error {
	var req protocol.ProgressRequest
	jobID, err := attemptCall(w, r, &req, func() (int, string) { return req.Attempt, req.Token })
	if err != nil {
		return err
	}
	if err := req.Progress.Validate(); err != nil {
		return badRequest("%v", err)
	}
	job, err := s.store.JobProgress(r.Context(), &store.JobProgressParams{
		AttemptParams: store.AttemptParams{JobID: jobID, Attempt: req.Attempt, Token: req.Token, Now: s.now()},
		Progress:      req.Progress, LeaseDuration: s.cfg.LeaseDuration,
	})
	if err != nil {
		return attemptError(err, jobID, req.Attempt)
	}
	writeJSON(w, http.StatusOK, ack(job))
	return nil
}

// handleComplete publishes an attempt's output: the key must be the
// attempt-scoped one, and the object must be in the store with exactly the
// size and SHA-1 the call names, before the job is marked succeeded; the
// store's compare-and-set admits only the current attempt. So the
// published bytes are always the completing attempt's, also when workers
// write to the object store directly (where uploads cannot be fenced). A
// retried complete of the same attempt answers 200 again.
func (s *Server) handleComplete(w http.ResponseWriter, r *http.Request) error {
	var req protocol.CompleteRequest
	jobID, err := attemptCall(w, r, &req, func() (int, string) { return req.Attempt, req.Token })
	if err != nil {
		return err
	}
	ctx := r.Context()
	if want := outputKey(jobID, req.Attempt); req.OutputKey != want {
		return badRequest("output_key: %q is not this attempt's output key; want %q", req.OutputKey, want)
	}
	switch {
	case !blob.ValidSHA1(req.SHA1):
		return badRequest("sha1: %q is not a SHA-1 in lower-case hex (40 digits) of the uploaded output", req.SHA1)
	case req.Size <= 0:
		return badRequest("size: %d; want the uploaded output's size in bytes (positive)", req.Size)
	}
	cur, err := s.store.JobGet(ctx, jobID)
	if err != nil {
		return attemptError(err, jobID, req.Attempt)
	}
	retry := cur.State == protocol.JobSucceeded && cur.Attempt == req.Attempt && cur.OutputKey == req.OutputKey
	if !retry {
		if cur.State != protocol.JobRunning || cur.Attempt != req.Attempt ||
			subtle.ConstantTimeCompare([]byte(cur.Token), []byte(req.Token)) != 1 {
			return attemptError(store.ErrStaleAttempt, jobID, req.Attempt)
		}
		if err := s.checkOutput(ctx, jobID, &req); err != nil {
			return err
		}
	}
	job, err := s.store.JobComplete(ctx, &store.JobCompleteParams{
		AttemptParams: store.AttemptParams{JobID: jobID, Attempt: req.Attempt, Token: req.Token, Now: s.now()},
		OutputKey:     req.OutputKey,
	})
	if err != nil {
		return attemptError(err, jobID, req.Attempt)
	}
	if !retry {
		s.jobEvent(ctx, job, "job.succeeded")
		s.log.InfoContext(ctx, "job succeeded", "job_id", jobID, "attempt", req.Attempt, "output_key", req.OutputKey,
			"size", req.Size, "sha1", req.SHA1)
	}
	writeJSON(w, http.StatusOK, ack(job))
	return nil
}

// checkOutput compares the object a complete names with the size and
// SHA-1 the worker says it uploaded: 409 output_mismatch when it is
// missing, empty or different (another writer replaced it, or the upload
// went wrong), so nothing else is ever published.
func (s *Server) checkOutput(ctx context.Context, jobID string, req *protocol.CompleteRequest) error {
	mismatch := func(format string, args ...any) error {
		return errorf(http.StatusConflict, protocol.CodeOutputMismatch, format, args...)
	}
	d, err := blob.Digest(ctx, s.blob, req.OutputKey)
	switch {
	case errors.Is(err, blob.ErrNotFound):
		return mismatch("output_key: object %q is not in the object store; upload it before completing", req.OutputKey)
	case err != nil:
		return fmt.Errorf("checking output %s: %w", req.OutputKey, err)
	case d.Size == 0:
		return mismatch("output_key: object %q is empty", req.OutputKey)
	case d.Size != req.Size || d.SHA1 != req.SHA1:
		s.log.WarnContext(ctx, "output object is not what the attempt uploaded; not published",
			"job_id", jobID, "attempt", req.Attempt, "output_key", req.OutputKey,
			"stored_size", d.Size, "stored_sha1", d.SHA1, "size", req.Size, "sha1", req.SHA1)
		return mismatch("output_key: object %q holds %d bytes with SHA-1 %s, not the %d bytes with SHA-1 %s this attempt uploaded; nothing was published, upload it again",
			req.OutputKey, d.Size, d.SHA1, req.Size, req.SHA1)
	}
	return nil
}

// handleFail records a failure the worker reports.
func (s *Server) handleFail(w http.ResponseWriter, r *http.Request) error {
	var req protocol.FailRequest
	jobID, err := attemptCall(w, r, &req, func() (int, string) { return req.Attempt, req.Token })
	if err != nil {
		return err
	}
	if req.Error == "" {
		return badRequest("error: required, what went wrong")
	}
	// NUL and invalid UTF-8 become U+FFFD (as the store would), before the
	// limit, so that what is kept is at most maxErrorText bytes.
	msg := truncate(store.SanitizeText(req.Error), maxErrorText)
	job, err := s.store.JobFail(r.Context(), &store.JobFailParams{
		AttemptParams: store.AttemptParams{JobID: jobID, Attempt: req.Attempt, Token: req.Token, Now: s.now()},
		Error:         msg, Retryable: req.Retryable, Backoff: s.backoff,
	})
	if err != nil {
		return attemptError(err, jobID, req.Attempt)
	}
	s.jobEvent(r.Context(), job, "job.attempt_failed")
	s.log.InfoContext(r.Context(), "attempt failed", "job_id", jobID, "attempt", req.Attempt,
		"retryable", req.Retryable, "state", job.State, "failures", job.Failures, "error", msg)
	writeJSON(w, http.StatusOK, ack(job))
	return nil
}

// handleRelease takes an attempt back from a draining worker.
func (s *Server) handleRelease(w http.ResponseWriter, r *http.Request) error {
	var req protocol.ReleaseRequest
	jobID, err := attemptCall(w, r, &req, func() (int, string) { return req.Attempt, req.Token })
	if err != nil {
		return err
	}
	job, err := s.store.JobRelease(r.Context(), &store.JobReleaseParams{
		AttemptParams: store.AttemptParams{JobID: jobID, Attempt: req.Attempt, Token: req.Token, Now: s.now()},
		Reason:        truncate(store.SanitizeText(req.Reason), maxReasonText), Backoff: s.backoff,
	})
	if err != nil {
		return attemptError(err, jobID, req.Attempt)
	}
	s.jobEvent(r.Context(), job, "job.attempt_released")
	s.log.InfoContext(r.Context(), "attempt released", "job_id", jobID, "attempt", req.Attempt, "state", job.State)
	writeJSON(w, http.StatusOK, ack(job))
	return nil
}

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

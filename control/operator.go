package control

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/avatargen/musetalk/control/dashboard"
	"github.com/avatargen/musetalk/control/store"
)

// The operator's actions, shared by the public API's routes and the
// dashboard: each returns an *apiError for what the caller did wrong.

// cancelJob cancels a queued or running job; a cancelled job is returned
// unchanged and a succeeded or failed one refused.
func (s *Server) cancelJob(ctx context.Context, id string) (*store.Job, error) {
	info(ctx).jobID = id
	job, err := s.store.JobCancel(ctx, id, s.now())
	switch {
	case isNotFound(err):
		return nil, notFound("job %q not found", id)
	case errors.Is(err, store.ErrFinal):
		state := "finished"
		if j, gerr := s.store.JobGet(ctx, id); gerr == nil {
			state = string(j.State)
		}
		return nil, conflict("job %s is already %s and cannot be cancelled", id, state)
	case err != nil:
		return nil, fmt.Errorf("cancelling job %s: %w", id, err)
	}
	s.jobEvent(ctx, job, "job.cancelled")
	s.log.InfoContext(ctx, "job cancelled", "job_id", id, "attempt", job.Attempt, "worker_id", job.WorkerID)
	return job, nil
}

// retryJob queues a failed job again with fresh budgets.
func (s *Server) retryJob(ctx context.Context, id string) (*store.Job, error) {
	info(ctx).jobID = id
	job, err := s.store.JobRetry(ctx, id, s.now())
	switch {
	case isNotFound(err):
		return nil, notFound("job %q not found", id)
	case errors.Is(err, store.ErrNotFailed):
		state := "not failed"
		if j, gerr := s.store.JobGet(ctx, id); gerr == nil {
			state = string(j.State)
		}
		return nil, conflict("job %s is %s; only a failed job can be retried", id, state)
	case err != nil:
		return nil, fmt.Errorf("retrying job %s: %w", id, err)
	}
	s.jobEvent(ctx, job, "job.retried")
	s.log.InfoContext(ctx, "job queued again by an operator", "job_id", id, "attempts", job.Attempt)
	return job, nil
}

// setDrain sets or clears an operator's drain request.
func (s *Server) setDrain(ctx context.Context, id string, drain bool) (*store.Worker, error) {
	info(ctx).workerID = id
	wk, err := s.store.WorkerSetDrain(ctx, id, drain)
	if isNotFound(err) {
		return nil, notFound("worker %q not found", id)
	}
	if err != nil {
		return nil, fmt.Errorf("setting drain of worker %s: %w", id, err)
	}
	s.log.InfoContext(ctx, "worker drain request set", "worker_id", id, "drain", drain)
	return wk, nil
}

// handleRetry queues a failed job again: 200 with the job, 409 when it is
// not failed.
func (s *Server) handleRetry(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id", "job id")
	if err != nil {
		return err
	}
	job, err := s.retryJob(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, jobView(job, nil))
	return nil
}

// operator is the dashboard's way into the Server's operations.
type operator struct{ s *Server }

var _ dashboard.Operator = operator{}

// refusal turns an *apiError into the dashboard's Refusal; other errors
// stay internal.
func refusal(err error) error {
	var ae *apiError
	if errors.As(err, &ae) {
		return &dashboard.Refusal{Status: ae.status, Message: ae.message}
	}
	return err
}

func (o operator) CancelJob(ctx context.Context, id string) error {
	_, err := o.s.cancelJob(ctx, id)
	return refusal(err)
}

func (o operator) RetryJob(ctx context.Context, id string) error {
	_, err := o.s.retryJob(ctx, id)
	return refusal(err)
}

func (o operator) SetDrain(ctx context.Context, id string, drain bool) error {
	_, err := o.s.setDrain(ctx, id, drain)
	return refusal(err)
}

func (o operator) ServeResult(w http.ResponseWriter, r *http.Request, id string) {
	r.SetPathValue("id", id)
	serve(o.s.handleResult).ServeHTTP(w, r)
}

// RunDashboard samples the store's counts for the dashboard's charts until
// ctx is done (see dashboard.Dashboard.Run). Safe on every replica.
func (s *Server) RunDashboard(ctx context.Context) { s.dash.Run(ctx) }

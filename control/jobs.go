package control

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/protocol"
)

// Page sizes of GET /v1/jobs.
const (
	defaultListLimit = 100
	maxListLimit     = 1000
)

// checkQuery rejects query parameters other than allowed, naming them.
func checkQuery(q url.Values, allowed ...string) error {
	for k := range q {
		if !slices.Contains(allowed, k) {
			return badRequest("unknown query parameter %q; want one of %s", k, strings.Join(allowed, ", "))
		}
	}
	return nil
}

// handleGetJob answers with the job and its attempt history.
func (s *Server) handleGetJob(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id", "job id")
	if err != nil {
		return err
	}
	info(r.Context()).jobID = id
	job, err := s.store.JobGet(r.Context(), id)
	if isNotFound(err) {
		return notFound("job %q not found", id)
	}
	if err != nil {
		return fmt.Errorf("reading job %s: %w", id, err)
	}
	attempts, err := s.store.JobAttempts(r.Context(), id)
	if err != nil {
		return fmt.Errorf("reading the attempts of job %s: %w", id, err)
	}
	writeJSON(w, http.StatusOK, jobView(job, attempts))
	return nil
}

// handleListJobs answers a page of jobs, newest first, with filters.
func (s *Server) handleListJobs(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	if err := checkQuery(q, "state", "worker_type", "worker_id", "limit", "cursor"); err != nil {
		return err
	}
	p := &store.JobListParams{Limit: defaultListLimit}
	for _, v := range q["state"] {
		for st := range strings.SplitSeq(v, ",") {
			state := protocol.JobState(strings.TrimSpace(st))
			if !state.Valid() {
				return badRequest("state: %q is not one of queued, running, succeeded, failed, cancelled", state)
			}
			p.States = append(p.States, state)
		}
	}
	if v := q.Get("worker_type"); v != "" {
		p.WorkerType = protocol.WorkerType(v)
		if !p.WorkerType.Valid() {
			return badRequest("worker_type: %q is not a known worker type; want main or transient", v)
		}
	}
	if v := q.Get("worker_id"); v != "" {
		if !protocol.ValidID(v) {
			return badRequest("worker_id: %q is not a valid id", v)
		}
		p.WorkerID = v
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListLimit {
			return badRequest("limit: %q is not an integer in 1..%d", v, maxListLimit)
		}
		p.Limit = n
	}
	if v := q.Get("cursor"); v != "" {
		c, err := decodeCursor(v)
		if err != nil {
			return err
		}
		p.Before = c
	}
	want := p.Limit
	p.Limit = min(want+1, maxListLimit) // one more tells whether a next page exists
	jobs, err := s.store.JobList(r.Context(), p)
	if err != nil {
		return fmt.Errorf("listing jobs: %w", err)
	}
	out := protocol.JobList{Jobs: []protocol.JobView{}}
	more := len(jobs) > want || (want == maxListLimit && len(jobs) == maxListLimit)
	if len(jobs) > want {
		jobs = jobs[:want]
	}
	for _, j := range jobs {
		out.Jobs = append(out.Jobs, jobView(j, nil))
	}
	if more && len(jobs) > 0 {
		out.NextCursor = encodeCursor(jobs[len(jobs)-1])
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// handleCancel cancels a queued or running job. A running attempt learns
// of it from its worker's next heartbeat answer. Cancelling a cancelled
// job answers it unchanged; a succeeded or failed job answers 409.
func (s *Server) handleCancel(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id", "job id")
	if err != nil {
		return err
	}
	job, err := s.cancelJob(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, jobView(job, nil))
	return nil
}

// handleResult streams the job's published output as video/mp4.
func (s *Server) handleResult(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id", "job id")
	if err != nil {
		return err
	}
	info(r.Context()).jobID = id
	job, err := s.store.JobGet(r.Context(), id)
	if isNotFound(err) {
		return notFound("job %q not found", id)
	}
	if err != nil {
		return fmt.Errorf("reading job %s: %w", id, err)
	}
	if job.State != protocol.JobSucceeded || job.OutputKey == "" {
		return errorf(http.StatusConflict, protocol.CodeNotReady,
			"job %s is %s; its result is ready only once it has succeeded", id, job.State)
	}
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", id+".mp4"))
	return s.streamObject(w, r, job.OutputKey, "video/mp4")
}

// handleListWorkers answers the worker registry, filtered by status and
// worker type.
func (s *Server) handleListWorkers(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	if err := checkQuery(q, "status", "worker_type"); err != nil {
		return err
	}
	p := &store.WorkerListParams{}
	if v := q.Get("status"); v != "" {
		p.Status = protocol.WorkerStatus(v)
		if !p.Status.Reportable() && p.Status != protocol.WorkerOffline {
			return badRequest("status: %q is not one of idle, busy, draining, offline", v)
		}
	}
	if v := q.Get("worker_type"); v != "" {
		p.WorkerType = protocol.WorkerType(v)
		if !p.WorkerType.Valid() {
			return badRequest("worker_type: %q is not a known worker type; want main or transient", v)
		}
	}
	workers, err := s.store.WorkerList(r.Context(), p)
	if err != nil {
		return fmt.Errorf("listing workers: %w", err)
	}
	out := protocol.WorkerList{Workers: []protocol.WorkerView{}}
	for _, wk := range workers {
		out.Workers = append(out.Workers, workerView(wk))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// handleDrain sets or clears an operator's drain request. A drained
// worker gets no more claims and is told to drain in its heartbeat answer.
func (s *Server) handleDrain(drain bool) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		id, err := pathID(r, "id", "worker id")
		if err != nil {
			return err
		}
		wk, err := s.setDrain(r.Context(), id, drain)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, workerView(wk))
		return nil
	}
}

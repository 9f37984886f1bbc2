package dashboard

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/protocol"
)

// lowDisk is the free space below which a worker's self-check shows a
// problem.
const lowDisk = 2 << 30

// fleetModel is the fleet page: every worker, grouped by pool, provider
// and GPU class.
type fleetModel struct {
	Total    int
	Statuses []count
	Drains   int // workers with a drain request
	Problems int // workers whose self-check found a problem
	Late     int // workers whose last heartbeat is late
	Rate     float64
	Groups   []*workerGroup
}

type count struct {
	Name string
	N    int
}

type workerGroup struct {
	Pool, Provider, GPUClass string
	Workers                  []*workerRow
	Statuses                 []count
	Rate                     float64 // frames/s of the group's running attempts
}

type workerRow struct {
	ID             string
	Status         protocol.WorkerStatus
	DrainRequested bool
	Version        string
	LastSeen       time.Time
	Age            time.Duration
	Late           bool
	JobID          string
	Attempt        int
	Progress       *protocol.Progress
	Fraction       float64
	Rate           float64
	HasRate        bool
	CachedAvatars  []string
	SelfCheck      *protocol.SelfCheck
	Problems       []string
}

func (d *Dashboard) loadFleet(ctx context.Context) (*fleetModel, error) {
	workers, err := d.store.WorkerList(ctx, &store.WorkerListParams{})
	if err != nil {
		return nil, fmt.Errorf("listing workers: %w", err)
	}
	running, err := d.store.JobList(ctx, &store.JobListParams{States: []protocol.JobState{protocol.JobRunning}, Limit: 1000})
	if err != nil {
		return nil, fmt.Errorf("listing running jobs: %w", err)
	}
	now := d.now()
	d.rates.observe(running, now)
	jobs := map[string]*store.Job{}
	for _, j := range running {
		jobs[j.ID] = j
	}
	m := &fleetModel{Total: len(workers)}
	statuses := map[string]int{}
	groups := map[[3]string]*workerGroup{}
	for _, w := range workers {
		row := &workerRow{
			ID: w.ID, Status: w.Status, DrainRequested: w.DrainRequested, Version: w.Version,
			LastSeen: w.LastSeen, Age: now.Sub(w.LastSeen), JobID: w.JobID, Attempt: w.Attempt,
			CachedAvatars: w.CachedAvatars, SelfCheck: w.SelfCheck, Problems: problems(w.SelfCheck),
		}
		row.Late = w.Status != protocol.WorkerOffline && row.Age > 2*d.cfg.HeartbeatInterval
		if j := jobs[w.JobID]; j != nil && j.Attempt == w.Attempt {
			row.Progress, row.Fraction = j.Progress, progressFraction(j.Progress)
			row.Rate, row.HasRate = d.rates.rate(j.ID, j.Attempt)
		}
		key := [3]string{string(w.WorkerType), w.Provider, w.GPUClass}
		g := groups[key]
		if g == nil {
			g = &workerGroup{Pool: cmp.Or(string(w.WorkerType), "any"), Provider: cmp.Or(w.Provider, "—"), GPUClass: cmp.Or(w.GPUClass, "—")}
			groups[key] = g
		}
		g.Workers = append(g.Workers, row)
		g.Rate += row.Rate
		m.Rate += row.Rate
		statuses[string(w.Status)]++
		if w.DrainRequested {
			m.Drains++
		}
		if len(row.Problems) > 0 {
			m.Problems++
		}
		if row.Late {
			m.Late++
		}
	}
	m.Statuses = statusCounts(statuses)
	for _, g := range groups {
		// Working workers first, then offline ones; by id within each.
		slices.SortStableFunc(g.Workers, func(a, b *workerRow) int {
			return cmp.Or(cmp.Compare(boolInt(a.Status == protocol.WorkerOffline), boolInt(b.Status == protocol.WorkerOffline)),
				cmp.Compare(a.ID, b.ID))
		})
		st := map[string]int{}
		for _, w := range g.Workers {
			st[string(w.Status)]++
		}
		g.Statuses = statusCounts(st)
		m.Groups = append(m.Groups, g)
	}
	slices.SortFunc(m.Groups, func(a, b *workerGroup) int {
		return cmp.Or(cmp.Compare(a.Pool, b.Pool), cmp.Compare(a.Provider, b.Provider), cmp.Compare(a.GPUClass, b.GPUClass))
	})
	return m, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// statusCounts orders worker statuses as an operator reads them.
func statusCounts(m map[string]int) []count {
	var out []count
	for _, s := range []protocol.WorkerStatus{protocol.WorkerBusy, protocol.WorkerIdle, protocol.WorkerDraining, protocol.WorkerOffline} {
		if n := m[string(s)]; n > 0 {
			out = append(out, count{string(s), n})
		}
	}
	return out
}

// problems lists what a worker's self-check found wrong.
func problems(sc *protocol.SelfCheck) []string {
	if sc == nil {
		return nil
	}
	var out []string
	if sc.Error != "" {
		out = append(out, sc.Error)
	}
	if !sc.WeightsPresent {
		out = append(out, "weights missing")
	}
	if sc.FreeDiskBytes > 0 && sc.FreeDiskBytes < lowDisk {
		out = append(out, "low disk: "+humanBytes(sc.FreeDiskBytes)+" free")
	}
	return out
}

func progressFraction(p *protocol.Progress) float64 {
	if p == nil || p.FramesTotal <= 0 {
		return 0
	}
	return min(float64(p.FramesDone)/float64(p.FramesTotal), 1)
}

// queueModel is the queue page.
type queueModel struct {
	States     []count
	Queued     int
	Scanned    int  // queued jobs read for the priorities
	Partial    bool // more are queued than were read
	Priorities []priorityRow
	Oldest     *jobRow
	Throughput template.HTML
	Rescues    template.HTML
	Since      time.Time // the charts' first sample
	Totals     map[protocol.AttemptOutcome]int
	Running    []*jobRow
	Waiting    []*jobRow // next to be claimed, in claim order
	Failed     []*jobRow
	Recent     []*jobRow
}

type priorityRow struct {
	Priority int
	N        int
	Oldest   time.Time
}

type jobRow struct {
	ID         string
	State      protocol.JobState
	Priority   int
	WorkerType string
	WorkerID   string
	Attempt    int
	Progress   *protocol.Progress
	Fraction   float64
	Error      string
	CreatedAt  time.Time
	UpdatedAt  time.Time
	RunAfter   *time.Time
}

func newJobRow(j *store.Job, now time.Time) *jobRow {
	r := &jobRow{ID: j.ID, State: j.State, Priority: j.Priority, WorkerType: cmp.Or(string(j.WorkerType), "any"),
		WorkerID: j.WorkerID, Attempt: j.Attempt, Progress: j.Progress, Fraction: progressFraction(j.Progress),
		Error: j.Error, CreatedAt: j.CreatedAt, UpdatedAt: j.UpdatedAt}
	if j.State == protocol.JobSucceeded {
		r.Fraction = 1
	}
	if j.State == protocol.JobQueued && j.RunAfter.After(now) {
		t := j.RunAfter
		r.RunAfter = &t
	}
	return r
}

// maxQueueScan bounds how many queued jobs one queue page reads.
const maxQueueScan = 10000

func (d *Dashboard) loadQueue(ctx context.Context) (*queueModel, error) {
	if err := d.sampleIfStale(ctx); err != nil {
		return nil, err
	}
	now := d.now()
	states, err := d.store.JobCountByState(ctx)
	if err != nil {
		return nil, fmt.Errorf("counting jobs: %w", err)
	}
	m := &queueModel{Queued: states[protocol.JobQueued]}
	for _, s := range protocol.JobStates() {
		m.States = append(m.States, count{string(s), states[s]})
	}

	// Every queued job, newest first, page by page: depth by priority, the
	// oldest waiting, and the next to be claimed.
	var queued []*store.Job
	p := &store.JobListParams{States: []protocol.JobState{protocol.JobQueued}, Limit: 1000}
	for len(queued) < maxQueueScan {
		page, err := d.store.JobList(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("listing queued jobs: %w", err)
		}
		queued = append(queued, page...)
		if len(page) < p.Limit {
			break
		}
		last := page[len(page)-1]
		p.Before = &store.JobCursor{CreatedAt: last.CreatedAt, ID: last.ID}
	}
	m.Scanned, m.Partial = len(queued), len(queued) < m.Queued
	byPriority := map[int]*priorityRow{}
	for _, j := range queued {
		pr := byPriority[j.Priority]
		if pr == nil {
			pr = &priorityRow{Priority: j.Priority, Oldest: j.CreatedAt}
			byPriority[j.Priority] = pr
		}
		pr.N++
		if j.CreatedAt.Before(pr.Oldest) {
			pr.Oldest = j.CreatedAt
		}
	}
	for _, pr := range byPriority {
		m.Priorities = append(m.Priorities, *pr)
	}
	slices.SortFunc(m.Priorities, func(a, b priorityRow) int { return cmp.Compare(b.Priority, a.Priority) })
	// The claim's order: priority, then age (avatar affinity aside).
	slices.SortFunc(queued, func(a, b *store.Job) int {
		return cmp.Or(cmp.Compare(b.Priority, a.Priority), a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID))
	})
	for i, j := range queued {
		if i < 15 {
			m.Waiting = append(m.Waiting, newJobRow(j, now))
		}
		if m.Oldest == nil || j.CreatedAt.Before(m.Oldest.CreatedAt) {
			m.Oldest = newJobRow(j, now)
		}
	}

	running, err := d.store.JobList(ctx, &store.JobListParams{States: []protocol.JobState{protocol.JobRunning}, Limit: 50})
	if err != nil {
		return nil, fmt.Errorf("listing running jobs: %w", err)
	}
	for _, j := range running {
		m.Running = append(m.Running, newJobRow(j, now))
	}
	failed, err := d.store.JobList(ctx, &store.JobListParams{States: []protocol.JobState{protocol.JobFailed}, Limit: 10})
	if err != nil {
		return nil, fmt.Errorf("listing failed jobs: %w", err)
	}
	for _, j := range failed {
		m.Failed = append(m.Failed, newJobRow(j, now))
	}
	recent, err := d.store.JobList(ctx, &store.JobListParams{Limit: 10})
	if err != nil {
		return nil, fmt.Errorf("listing recent jobs: %w", err)
	}
	for _, j := range recent {
		m.Recent = append(m.Recent, newJobRow(j, now))
	}

	s := d.history.perMinute(now)
	m.Since, m.Totals = s.Since, s.Totals
	m.Throughput = barChart("Attempts ended per minute: succeeded and failed", s, []chartSeries{
		{protocol.OutcomeSucceeded, "succeeded", "ok"}, {protocol.OutcomeFailed, "failed", "bad"},
	})
	m.Rescues = barChart("Attempts rescued per minute (interrupted: lease lost, worker offline, stalled) and released by draining workers", s, []chartSeries{
		{protocol.OutcomeInterrupted, "interrupted", "warn"}, {protocol.OutcomeReleased, "released", "muted"},
	})
	return m, nil
}

// jobModel is a job's page.
type jobModel struct {
	Job       *store.Job
	Params    protocol.JobParams
	ParamsRaw string
	Fraction  float64
	Rate      float64
	HasRate   bool
	Stages    []stageRow
	Attempts  []*store.Attempt
	Timeline  template.HTML
	TraceID   string
	CanCancel bool
	CanRetry  bool
	ResultURL string
	RunAfter  *time.Time
}

type stageRow struct {
	Name     string
	State    string // done, current, stopped, pending
	Progress *protocol.Progress
	Fraction float64
}

// engineStages are the stages each engine reports, in order (docs/API.md).
var engineStages = map[string][]string{
	"musetalk": {"load", "prepare", "features", "generate", "encode"},
	"preview":  {"probe", "render"},
}

func (d *Dashboard) loadJob(ctx context.Context, id string) (*jobModel, error) {
	if !protocol.ValidID(id) {
		return nil, &Refusal{Status: http.StatusNotFound, Message: fmt.Sprintf("%q is not a job id.", id)}
	}
	j, err := d.store.JobGet(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, &Refusal{Status: http.StatusNotFound, Message: "There is no job " + id + "."}
	}
	if err != nil {
		return nil, fmt.Errorf("reading job %s: %w", id, err)
	}
	attempts, err := d.store.JobAttempts(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("reading the attempts of job %s: %w", id, err)
	}
	now := d.now()
	m := &jobModel{Job: j, Attempts: attempts, Fraction: progressFraction(j.Progress),
		TraceID:   traceID(j.TraceContext),
		CanCancel: j.State == protocol.JobQueued || j.State == protocol.JobRunning,
		CanRetry:  j.State == protocol.JobFailed}
	if len(j.Params) > 0 {
		_ = json.Unmarshal(j.Params, &m.Params)
		m.ParamsRaw = string(j.Params)
	}
	if j.State == protocol.JobRunning {
		d.rates.observe([]*store.Job{j}, now)
		m.Rate, m.HasRate = d.rates.rate(j.ID, j.Attempt)
	}
	if j.State == protocol.JobSucceeded {
		m.Fraction = 1
		m.ResultURL = Prefix + "jobs/" + j.ID + "/result"
	}
	if j.State == protocol.JobQueued && j.RunAfter.After(now) {
		t := j.RunAfter
		m.RunAfter = &t
	}
	m.Stages = stages(cmp.Or(m.Params.Engine, "musetalk"), j)
	m.Timeline = timeline(attempts, now)
	return m, nil
}

// stages lays a job's progress over its engine's stages.
func stages(engine string, j *store.Job) []stageRow {
	names := engineStages[engine]
	cur := ""
	if j.Progress != nil {
		cur = j.Progress.Stage
	}
	if cur != "" && !slices.Contains(names, cur) {
		names = []string{cur}
	}
	at := slices.Index(names, cur)
	out := make([]stageRow, len(names))
	for i, n := range names {
		row := stageRow{Name: n, State: "pending"}
		switch {
		case j.State == protocol.JobSucceeded || (at >= 0 && i < at):
			row.State, row.Fraction = "done", 1
		case i == at:
			row.State, row.Progress, row.Fraction = "current", j.Progress, progressFraction(j.Progress)
			if j.State != protocol.JobRunning {
				row.State = "stopped"
			}
		}
		out[i] = row
	}
	return out
}

// traceID reads the trace id out of a W3C traceparent
// ("00-<trace id>-<span id>-<flags>").
func traceID(tc map[string]string) string {
	parts := strings.Split(tc["traceparent"], "-")
	if len(parts) != 4 || len(parts[1]) != 32 || strings.Trim(parts[1], "0") == "" {
		return ""
	}
	for _, c := range parts[1] {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return ""
		}
	}
	return parts[1]
}

// handleJobLookup sends the "open a job" form to the job's page.
func (d *Dashboard) handleJobLookup(w http.ResponseWriter, r *http.Request, _ *session) {
	id := strings.TrimSpace(r.URL.Query().Get("id"))
	if !protocol.ValidID(id) {
		d.renderError(w, r, http.StatusBadRequest, fmt.Sprintf("%q is not a job id.", id))
		return
	}
	http.Redirect(w, r, Prefix+"jobs/"+id, http.StatusSeeOther)
}

// handleResult plays the job's output in the page's <video>, through the
// public API's result route.
func (d *Dashboard) handleResult(w http.ResponseWriter, r *http.Request, _ *session) {
	id := r.PathValue("id")
	if !protocol.ValidID(id) {
		d.renderError(w, r, http.StatusNotFound, fmt.Sprintf("%q is not a job id.", id))
		return
	}
	d.op.ServeResult(w, r, id)
}

package storetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/protocol"
)

func jobTests() map[string]func(t *testing.T, h *harness) {
	return map[string]func(t *testing.T, h *harness){
		"InsertRoundTrip": func(t *testing.T, h *harness) {
			// A time with nanoseconds in another zone comes back truncated
			// to microseconds, in UTC.
			zone := time.FixedZone("UTC+5", 5*3600)
			now := base().Add(789 * time.Nanosecond).In(zone)
			p := &store.JobInsertParams{
				ID: "job-1", Priority: 7, WorkerType: protocol.WorkerTransient, IdempotencyKey: "idem-1",
				AvatarKey: "inputs/job-1/avatar.png", AudioKey: "inputs/job-1/audio.wav", AvatarID: "av-1",
				Params:           []byte(`{"version":"v1","bbox_shift":-7}`),
				TraceContext:     map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
				MaxInterruptions: 5, MaxFailures: 2, Now: now,
			}
			j, existed, err := h.s.JobInsert(h.ctx, p)
			if err != nil || existed {
				t.Fatalf("JobInsert = %v, %v; want a new job", existed, err)
			}
			want := &store.Job{
				ID: "job-1", State: protocol.JobQueued, Priority: 7, WorkerType: protocol.WorkerTransient,
				IdempotencyKey: "idem-1", AvatarKey: p.AvatarKey, AudioKey: p.AudioKey, AvatarID: "av-1",
				Params: p.Params, TraceContext: p.TraceContext, MaxInterruptions: 5, MaxFailures: 2,
				RunAfter: base(), CreatedAt: base(), UpdatedAt: base(),
			}
			eq(t, "inserted job", j, want)
			eq(t, "JobGet", h.job("job-1"), want)
			if loc := h.job("job-1").CreatedAt.Location(); loc != time.UTC {
				t.Errorf("CreatedAt location = %v, want UTC", loc)
			}
			eq(t, "attempts of a new job", len(h.attempts("job-1")), 0)
		},
		"InsertEmptyParams": func(t *testing.T, h *harness) {
			j := h.insert("job-1", func(p *store.JobInsertParams) { p.Params, p.AvatarID = nil, "" })
			eq(t, "Params", j.Params, nil)
			eq(t, "TraceContext", j.TraceContext, nil)
			eq(t, "AvatarID", h.job("job-1").AvatarID, "")
		},
		"InsertIdempotent": func(t *testing.T, h *harness) {
			first := h.insert("job-1", func(p *store.JobInsertParams) { p.IdempotencyKey = "k" })
			again, existed, err := h.s.JobInsert(h.ctx, &store.JobInsertParams{
				ID: "job-2", IdempotencyKey: "k", AvatarKey: "a", AudioKey: "b",
				MaxInterruptions: 1, MaxFailures: 1, Now: at(time.Hour),
			})
			if err != nil || !existed {
				t.Fatalf("repeat JobInsert = existed %v, %v; want the first job", existed, err)
			}
			eq(t, "repeat returns the first job", again, first)
			if _, err := h.s.JobGet(h.ctx, "job-2"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("JobGet(job-2) after a repeat: %v, want ErrNotFound", err)
			}
			// Empty keys never collide.
			h.insert("job-3")
			h.insert("job-4")
		},
		"InsertDuplicateID": func(t *testing.T, h *harness) {
			h.insert("job-1")
			_, _, err := h.s.JobInsert(h.ctx, &store.JobInsertParams{
				ID: "job-1", AvatarKey: "a", AudioKey: "b", MaxInterruptions: 1, MaxFailures: 1, Now: base(),
			})
			isSomeErr(t, "inserting a duplicate id", err)
			// A duplicate id with a new idempotency key is still an error.
			_, _, err = h.s.JobInsert(h.ctx, &store.JobInsertParams{
				ID: "job-1", IdempotencyKey: "new", AvatarKey: "a", AudioKey: "b", MaxInterruptions: 1, MaxFailures: 1, Now: base(),
			})
			isSomeErr(t, "inserting a duplicate id with a new key", err)
			eq(t, "count", len(list(t, h, &store.JobListParams{})), 1)
		},
		"InsertInvalid": func(t *testing.T, h *harness) {
			good := func() *store.JobInsertParams {
				return &store.JobInsertParams{ID: "job-1", AvatarKey: "a", AudioKey: "b", MaxInterruptions: 1, MaxFailures: 1, Now: base()}
			}
			bad := map[string]func(p *store.JobInsertParams){
				"empty id":           func(p *store.JobInsertParams) { p.ID = "" },
				"id with slash":      func(p *store.JobInsertParams) { p.ID = "a/b" },
				"worker type":        func(p *store.JobInsertParams) { p.WorkerType = "gpu" },
				"max interruptions":  func(p *store.JobInsertParams) { p.MaxInterruptions = 0 },
				"max failures":       func(p *store.JobInsertParams) { p.MaxFailures = -1 },
				"missing avatar key": func(p *store.JobInsertParams) { p.AvatarKey = "" },
				"zero now":           func(p *store.JobInsertParams) { p.Now = time.Time{} },
			}
			for name, mutate := range bad {
				p := good()
				mutate(p)
				_, _, err := h.s.JobInsert(h.ctx, p)
				isSomeErr(t, name, err)
			}
			eq(t, "jobs after invalid inserts", len(list(t, h, &store.JobListParams{})), 0)
		},
		"GetNotFound": func(t *testing.T, h *harness) {
			_, err := h.s.JobGet(h.ctx, "nope")
			isErr(t, "JobGet", err, store.ErrNotFound)
			_, err = h.s.JobAttempts(h.ctx, "nope")
			isErr(t, "JobAttempts", err, store.ErrNotFound)
		},
		"ListFilters": func(t *testing.T, h *harness) {
			h.insert("a", func(p *store.JobInsertParams) { p.WorkerType = protocol.WorkerMain })
			h.insert("b", func(p *store.JobInsertParams) { p.WorkerType = protocol.WorkerTransient; p.Now = at(time.Second) })
			h.insert("c", func(p *store.JobInsertParams) { p.Now = at(2 * time.Second) })
			h.insert("d", func(p *store.JobInsertParams) { p.Now = at(3 * time.Second) })
			// Main workers claim a (the oldest), then c (b is transient's).
			ja := h.claim("w1", at(time.Minute))
			eq(t, "claimed", ja.ID, "a")
			jc := h.claim("w2", at(time.Minute))
			eq(t, "claimed", jc.ID, "c")
			h.complete(jc, at(2*time.Minute))

			ids := func(p *store.JobListParams) []string { return jobIDs(list(t, h, p)) }
			eq(t, "all, newest first", ids(&store.JobListParams{}), []string{"d", "c", "b", "a"})
			eq(t, "queued", ids(&store.JobListParams{States: []protocol.JobState{protocol.JobQueued}}), []string{"d", "b"})
			eq(t, "running or succeeded", ids(&store.JobListParams{
				States: []protocol.JobState{protocol.JobRunning, protocol.JobSucceeded}}), []string{"c", "a"})
			eq(t, "transient", ids(&store.JobListParams{WorkerType: protocol.WorkerTransient}), []string{"b"})
			eq(t, "worker w1", ids(&store.JobListParams{WorkerID: "w1"}), []string{"a"})
			eq(t, "worker w2, succeeded", ids(&store.JobListParams{WorkerID: "w2", States: []protocol.JobState{protocol.JobSucceeded}}), []string{"c"})
			eq(t, "worker w2, queued", ids(&store.JobListParams{WorkerID: "w2", States: []protocol.JobState{protocol.JobQueued}}), []string(nil))
		},
		"ListPaging": func(t *testing.T, h *harness) {
			// 7 jobs, two sharing each creation time, so that the cursor's
			// id breaks ties.
			var want []string
			for i := range 7 {
				id := fmt.Sprintf("job-%d", i)
				h.insert(id, func(p *store.JobInsertParams) { p.Now = at(time.Duration(i/2) * time.Second) })
				want = append([]string{id}, want...)
			}
			var got []string
			var cursor *store.JobCursor
			for pages := 0; ; pages++ {
				if pages > 4 {
					t.Fatalf("paging did not end; got %v", got)
				}
				page := list(t, h, &store.JobListParams{Limit: 2, Before: cursor})
				if len(page) == 0 {
					break
				}
				if len(page) > 2 {
					t.Fatalf("page of %d jobs with limit 2", len(page))
				}
				got = append(got, jobIDs(page)...)
				last := page[len(page)-1]
				cursor = &store.JobCursor{CreatedAt: last.CreatedAt, ID: last.ID}
			}
			eq(t, "paged ids", got, want)
			eq(t, "default limit", len(list(t, h, &store.JobListParams{})), 7)
		},
		"ListInvalid": func(t *testing.T, h *harness) {
			for name, p := range map[string]*store.JobListParams{
				"limit 1001": {Limit: 1001},
				"limit -1":   {Limit: -1},
				"state":      {States: []protocol.JobState{"paused"}},
			} {
				_, err := h.s.JobList(h.ctx, p)
				isSomeErr(t, name, err)
			}
		},
	}
}

func list(t *testing.T, h *harness, p *store.JobListParams) []*store.Job {
	t.Helper()
	js, err := h.s.JobList(h.ctx, p)
	if err != nil {
		t.Fatalf("JobList(%+v): %v", *p, err)
	}
	return js
}

func jobIDs(js []*store.Job) []string {
	var ids []string
	for _, j := range js {
		ids = append(ids, j.ID)
	}
	return ids
}

package dashboard

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/protocol"
)

// historySpan is how far back the charts look.
const historySpan = time.Hour

// history keeps samples of the store's attempt counts by outcome. Attempts
// are never deleted and an ended attempt never changes its outcome, so the
// counts only grow and the difference between two samples is what ended
// between them, across every replica. The charts need no table of their
// own; they start when this process does.
type history struct {
	mu      sync.Mutex
	samples []countSample // oldest first
}

type countSample struct {
	at     time.Time
	counts map[protocol.AttemptOutcome]int
}

func newHistory() *history { return &history{} }

// add records a sample and drops those older than the span needs.
func (h *history) add(at time.Time, counts map[protocol.AttemptOutcome]int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if n := len(h.samples); n > 0 && at.Before(h.samples[n-1].at) {
		return // a late sampler; keep the series ordered
	}
	h.samples = append(h.samples, countSample{at: at, counts: counts})
	// Keep one sample from before the span so that its first minute has a
	// difference to show.
	cut := 0
	for cut+1 < len(h.samples) && h.samples[cut+1].at.Before(at.Add(-historySpan-time.Minute)) {
		cut++
	}
	h.samples = slices.Delete(h.samples, 0, cut)
}

// last returns the time of the newest sample.
func (h *history) last() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.samples) == 0 {
		return time.Time{}
	}
	return h.samples[len(h.samples)-1].at
}

// series is a per-minute history of attempt endings.
type series struct {
	End     time.Time                         // the end of the last bucket
	Buckets int                               // one per minute
	Counts  map[protocol.AttemptOutcome][]int // per bucket, oldest first
	Covered []bool                            // whether samples cover the bucket
	Since   time.Time                         // the first sample; zero when none
	Totals  map[protocol.AttemptOutcome]int   // over the covered span
}

// perMinute spreads the differences between consecutive samples over the
// minutes of the last hour, each into the minute its later sample fell in.
func (h *history) perMinute(now time.Time) *series {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := int(historySpan / time.Minute)
	s := &series{End: now, Buckets: n, Counts: map[protocol.AttemptOutcome][]int{},
		Covered: make([]bool, n), Totals: map[protocol.AttemptOutcome]int{}}
	for _, o := range protocol.AttemptOutcomes() {
		s.Counts[o] = make([]int, n)
	}
	start := now.Add(-historySpan)
	bucket := func(t time.Time) int { return int(t.Sub(start) / time.Minute) }
	if len(h.samples) > 0 {
		s.Since = h.samples[0].at
		for i := max(bucket(s.Since), 0); i < n; i++ {
			s.Covered[i] = true
		}
	}
	for i := 1; i < len(h.samples); i++ {
		a, b := h.samples[i-1], h.samples[i]
		k := bucket(b.at)
		if k == n && b.at.Equal(now) {
			k = n - 1 // sampled just now
		}
		if k < 0 || k >= n {
			continue
		}
		for o, v := range b.counts {
			if d := v - a.counts[o]; d > 0 {
				s.Counts[o][k] += d
				s.Totals[o] += d
			}
		}
	}
	return s
}

// sample reads the store's attempt counts and the running jobs' progress
// (for frames per second) and records both.
func (d *Dashboard) sample(ctx context.Context) error {
	counts, err := d.store.AttemptCountByOutcome(ctx)
	if err != nil {
		return fmt.Errorf("counting attempts: %w", err)
	}
	d.history.add(d.now(), counts)
	running, err := d.store.JobList(ctx, &store.JobListParams{States: []protocol.JobState{protocol.JobRunning}, Limit: 1000})
	if err != nil {
		return fmt.Errorf("listing running jobs: %w", err)
	}
	d.rates.observe(running, d.now())
	return nil
}

// sampleIfStale samples when the newest sample is older than the sample
// interval: pages keep the charts going where nothing calls Run.
func (d *Dashboard) sampleIfStale(ctx context.Context) error {
	if d.now().Sub(d.history.last()) < d.cfg.SampleInterval {
		return nil
	}
	return d.sample(ctx)
}

// rates estimates each running attempt's frames per second from the
// progress the store records: the frames done within one stage between
// two observations, over the time between the store's ProgressAt stamps
// (when the progress changed), so how often anyone looks does not matter.
type rates struct {
	mu     sync.Mutex
	tracks map[rateKey]*rateTrack
}

type rateKey struct {
	job     string
	attempt int
}

type rateTrack struct {
	obs  []rateObs // one stage, oldest first
	seen time.Time
}

type rateObs struct {
	stage  string
	frames int
	at     time.Time
}

// rateWindow is how far back a rate looks.
const rateWindow = time.Minute

func newRates() *rates { return &rates{tracks: map[rateKey]*rateTrack{}} }

// observe records the progress of running jobs.
func (r *rates) observe(jobs []*store.Job, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, j := range jobs {
		if j.State != protocol.JobRunning || j.Progress == nil || j.ProgressAt == nil {
			continue
		}
		k := rateKey{j.ID, j.Attempt}
		t := r.tracks[k]
		if t == nil {
			t = &rateTrack{}
			r.tracks[k] = t
		}
		t.seen = now
		o := rateObs{stage: j.Progress.Stage, frames: j.Progress.FramesDone, at: *j.ProgressAt}
		if n := len(t.obs); n > 0 {
			last := t.obs[n-1]
			if last == o || o.at.Before(last.at) {
				continue
			}
			if last.stage != o.stage {
				t.obs = t.obs[:0]
			}
		}
		t.obs = append(t.obs, o)
		// Keep the window, and at least two observations.
		for len(t.obs) > 2 && t.obs[1].at.Before(o.at.Add(-rateWindow)) {
			t.obs = t.obs[1:]
		}
	}
	for k, t := range r.tracks {
		if now.Sub(t.seen) > 10*time.Minute {
			delete(r.tracks, k)
		}
	}
}

// rate returns the frames per second of a job's attempt in its current
// stage, when two observations of that stage tell it.
func (r *rates) rate(job string, attempt int) (float64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.tracks[rateKey{job, attempt}]
	if t == nil || len(t.obs) < 2 {
		return 0, false
	}
	a, b := t.obs[0], t.obs[len(t.obs)-1]
	dt := b.at.Sub(a.at).Seconds()
	if dt <= 0 || b.frames < a.frames {
		return 0, false
	}
	return float64(b.frames-a.frames) / dt, true
}

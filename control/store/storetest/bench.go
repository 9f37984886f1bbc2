package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/protocol"
)

// BenchOpenFunc returns a fresh, empty store, closed by the benchmark's
// cleanup.
type BenchOpenFunc func(b *testing.B) store.Store

// Bench runs the store's benchmarks: heartbeats of idle workers and of
// workers that hold an attempt, and whole jobs (insert, claim, complete),
// each from many goroutines at once (b.SetParallelism: 64 per CPU), as a
// control plane under a fleet calls them. The time per operation is the
// wall time divided by the operations of all goroutines.
func Bench(b *testing.B, open BenchOpenFunc) {
	b.Run("HeartbeatIdle", func(b *testing.B) { benchHeartbeats(b, open(b), false) })
	b.Run("HeartbeatHolding", func(b *testing.B) { benchHeartbeats(b, open(b), true) })
	b.Run("InsertClaimComplete", func(b *testing.B) { benchJobs(b, open(b)) })
}

const benchWorkers = 500

func benchHeartbeats(b *testing.B, s store.Store, holding bool) {
	ctx := context.Background()
	jobs := make([]*store.Job, benchWorkers)
	for i := range benchWorkers {
		id := idOf("bench-w", i)
		if _, err := s.WorkerHeartbeat(ctx, &store.WorkerHeartbeatParams{ID: id, WorkerType: protocol.WorkerMain,
			Status: protocol.WorkerIdle, Now: base()}); err != nil {
			b.Fatal(err)
		}
		if !holding {
			continue
		}
		if _, _, err := s.JobInsert(ctx, &store.JobInsertParams{ID: idOf("bench-j", i), AvatarKey: "a", AudioKey: "b",
			MaxInterruptions: 1, MaxFailures: 1, Now: base()}); err != nil {
			b.Fatal(err)
		}
		j, err := s.JobClaim(ctx, &store.JobClaimParams{WorkerID: id, WorkerType: protocol.WorkerMain,
			Token: "t" + id, LeaseDuration: time.Hour, Now: base()})
		if err != nil {
			b.Fatal(err)
		}
		jobs[i] = j
	}
	var next atomic.Int64
	b.SetParallelism(64)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := next.Add(1)
			i := int(n % benchWorkers)
			p := &store.WorkerHeartbeatParams{ID: idOf("bench-w", i), WorkerType: protocol.WorkerMain,
				Status: protocol.WorkerIdle, Provider: "bench", GPUClass: "bench", Version: "bench",
				CachedAvatars: []string{"a1", "a2"}, Now: at(time.Duration(n) * time.Microsecond)}
			if j := jobs[i]; j != nil {
				p.Status, p.JobID, p.Attempt, p.LeaseDuration = protocol.WorkerBusy, j.ID, j.Attempt, time.Hour
				p.Progress = &protocol.Progress{Stage: "unet", FramesDone: int(n), FramesTotal: 1 << 30}
			}
			res, err := s.WorkerHeartbeat(ctx, p)
			if err != nil {
				b.Fatal(err)
			}
			if holding && (res.Cancel != nil || res.LeaseExpiresAt == nil) {
				b.Fatalf("heartbeat of %s: %s", p.ID, dump(res))
			}
		}
	})
}

// benchJobs runs jobs through: each operation inserts one job, claims one
// (cached avatar preferred) and completes it.
func benchJobs(b *testing.B, s store.Store) {
	ctx := context.Background()
	var next, claims atomic.Int64
	defer func() { b.ReportMetric(float64(claims.Load())/float64(b.N), "claims/op") }()
	b.SetParallelism(64)
	b.ResetTimer()
	var workers atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		// A worker of its own: a worker's next claim would take away
		// what it still holds.
		worker := idOf("bench-w", int(workers.Add(1)))
		for pb.Next() {
			n := next.Add(1)
			now := at(time.Duration(n) * time.Microsecond)
			if _, _, err := s.JobInsert(ctx, &store.JobInsertParams{ID: idOf("bench-j", int(n)), AvatarKey: "a",
				AudioKey: "b", AvatarID: idOf("avatar", int(n%16)), MaxInterruptions: 3, MaxFailures: 3, Now: base()}); err != nil {
				b.Fatal(err)
			}
			// Another goroutine may have taken this job, or hold the
			// last ones locked: claim until one comes.
			var j *store.Job
			for j == nil {
				claims.Add(1)
				var err error
				j, err = s.JobClaim(ctx, &store.JobClaimParams{WorkerID: worker, WorkerType: protocol.WorkerMain,
					CachedAvatars: []string{idOf("avatar", int(n%16))}, Token: fmt.Sprint("t", n), LeaseDuration: time.Hour,
					Now: now})
				if err != nil && !errors.Is(err, store.ErrNoJob) {
					b.Fatal(err)
				}
			}
			if _, err := s.JobComplete(ctx, &store.JobCompleteParams{
				AttemptParams: store.AttemptParams{JobID: j.ID, Attempt: j.Attempt, Token: j.Token, Now: now},
				OutputKey:     fmt.Sprintf("outputs/%s/%d.mp4", j.ID, j.Attempt)}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

package sqlite_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/control/store/sqlite"
	"github.com/avatargen/musetalk/control/store/storetest"
)

func open(t testing.TB, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, filepath.Join(t.TempDir(), "control.db"))
	})
}

// BenchmarkStore: go test -run '^$' -bench . ./control/store/sqlite/
func BenchmarkStore(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) store.Store {
		return open(b, filepath.Join(b.TempDir(), "control.db"))
	})
}

// migrations reads schema_migrations straight from the file.
func migrations(t *testing.T, path string) map[int]string {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT version, applied_at FROM schema_migrations`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[int]string{}
	for rows.Next() {
		var v int
		var at string
		if err := rows.Scan(&v, &at); err != nil {
			t.Fatal(err)
		}
		out[v] = at
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestReopenKeepsEverything(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "nested", "dir", "control.db") // parents are created
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

	s, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.JobInsert(ctx, &store.JobInsertParams{ID: "job-1", IdempotencyKey: "k", AvatarKey: "a", AudioKey: "b",
		MaxInterruptions: 2, MaxFailures: 2, Now: now}); err != nil {
		t.Fatal(err)
	}
	claimed, err := s.JobClaim(ctx, &store.JobClaimParams{WorkerID: "w1", Token: "t1", LeaseDuration: time.Minute, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.WorkerHeartbeat(ctx, &store.WorkerHeartbeatParams{ID: "w1", Status: "busy", WorkerType: "main", JobID: "job-1",
		Attempt: 1, LeaseDuration: time.Minute, Now: now}); err != nil {
		t.Fatal(err)
	}
	job, _ := s.JobGet(ctx, "job-1")
	worker, _ := s.WorkerGet(ctx, "w1")
	attempts, _ := s.JobAttempts(ctx, "job-1")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	first := migrations(t, path)
	if len(first) == 0 {
		t.Fatal("no migrations recorded")
	}

	s2 := open(t, path)
	if got := migrations(t, path); !equalMaps(got, first) {
		t.Errorf("migrations after reopening = %v, want %v (none reapplied)", got, first)
	}
	job2, err := s2.JobGet(ctx, "job-1")
	if err != nil {
		t.Fatal(err)
	}
	if job2.Token != claimed.Token || job2.State != "running" || !job2.UpdatedAt.Equal(job.UpdatedAt) || *job2.LeaseExpiresAt != *job.LeaseExpiresAt {
		t.Errorf("job after reopening = %+v, want %+v", job2, job)
	}
	if w2, _ := s2.WorkerGet(ctx, "w1"); w2 == nil || w2.JobID != worker.JobID || !w2.LastSeen.Equal(worker.LastSeen) {
		t.Errorf("worker after reopening = %+v, want %+v", w2, worker)
	}
	if a2, _ := s2.JobAttempts(ctx, "job-1"); len(a2) != len(attempts) {
		t.Errorf("attempts after reopening: %d, want %d", len(a2), len(attempts))
	}
	// The idempotency index survived too.
	if _, existed, err := s2.JobInsert(ctx, &store.JobInsertParams{ID: "job-2", IdempotencyKey: "k", AvatarKey: "a", AudioKey: "b",
		MaxInterruptions: 1, MaxFailures: 1, Now: now}); err != nil || !existed {
		t.Errorf("repeat insert after reopening: existed %v, %v", existed, err)
	}
}

// Two Store values on one file are two processes: claims stay exactly-once
// across them (BEGIN IMMEDIATE and busy_timeout).
func TestTwoOpenersClaimExactlyOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.db")
	a, b := open(t, path), open(t, path)
	storetest.InsertJobs(t, a, 200)
	storetest.ClaimAll(t, []store.Store{a, b}, 200, 10)
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := sqlite.Open(ctx, ""); err == nil {
		t.Error("Open(\"\") succeeded")
	}
	// A directory where the file should be.
	if _, err := sqlite.Open(ctx, t.TempDir()); err == nil {
		t.Error("Open(a directory) succeeded")
	}
}

func equalMaps(a, b map[int]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

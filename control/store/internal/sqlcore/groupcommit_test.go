package sqlcore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"testing/fstest"
	"time"
)

// openGroup opens a Store over a SQLite file with group commit and a
// table t (k TEXT PRIMARY KEY, v INTEGER).
func openGroup(t *testing.T) *Store {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "g.db")+"?_txlock=immediate&_pragma=journal_mode(WAL)")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	s, err := New(context.Background(), Config{
		Dialect: Dialect{Name: "sqlite", EncodeTime: func(t time.Time) any { return t.UnixMicro() },
			CacheStatements: true, GroupCommit: true,
			Migrations: fstest.MapFS{"0001_t.sql": {Data: []byte("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")}}},
		Write: db, Read: db,
	})
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func count(t *testing.T, s *Store, where string) int {
	t.Helper()
	var n int
	if err := s.r.QueryRow(`SELECT COUNT(*) FROM t WHERE ` + where).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestGroupCommitIsolatesFailures runs many writes at once, every third
// of which fails after changing a row: the failed ones leave nothing, the
// others all stand, and each caller gets its own outcome.
func TestGroupCommitIsolatesFailures(t *testing.T) {
	s := openGroup(t)
	errBoom := errors.New("boom")
	const n = 300
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.write(context.Background(), func(t *tx) error {
				if _, err := t.exec(context.Background(), `INSERT INTO t (k, v) VALUES (?, ?)`, fmt.Sprint("k", i), i); err != nil {
					return err
				}
				if _, err := t.exec(context.Background(), `UPDATE t SET v = v + 1000 WHERE k = ?`, fmt.Sprint("k", i)); err != nil {
					return err
				}
				if i%3 == 0 {
					return fmt.Errorf("write %d: %w", i, errBoom)
				}
				return nil
			})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if (i%3 == 0) != errors.Is(err, errBoom) {
			t.Errorf("write %d: %v", i, err)
		}
	}
	if s.gc.shared.Load() == 0 {
		t.Error("no two writes shared a commit")
	}
	if got, want := count(t, s, "1"), n-n/3; got != want {
		t.Errorf("%d rows stand, want %d", got, want)
	}
	if got := count(t, s, "v < 1000"); got != 0 {
		t.Errorf("%d rows lost their update", got)
	}
	// A failing statement (a duplicate key) fails only its own write.
	err := s.write(context.Background(), func(t *tx) error {
		_, err := t.exec(context.Background(), `INSERT INTO t (k, v) VALUES ('k1', 1)`)
		return err
	})
	if err == nil {
		t.Error("inserting a duplicate key succeeded")
	}
}

// TestGroupCommitCancelledBeforeRun: a write whose context ends before
// its group starts is not run.
func TestGroupCommitCancelledBeforeRun(t *testing.T) {
	s := openGroup(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ran := false
	err := s.write(ctx, func(t *tx) error { ran = true; return nil })
	if !errors.Is(err, context.Canceled) || ran {
		t.Errorf("write with a cancelled context: %v, ran %v", err, ran)
	}
}

// TestGroupCommitPanic: a panic in one write reaches its caller; the
// other writes of its group stand.
func TestGroupCommitPanic(t *testing.T) {
	s := openGroup(t)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if i == 7 {
				defer func() {
					if v := recover(); v != "seven" {
						t.Errorf("recovered %v, want the write's panic", v)
					}
				}()
			}
			err := s.write(context.Background(), func(t *tx) error {
				if _, err := t.exec(context.Background(), `INSERT INTO t (k, v) VALUES (?, 1)`, fmt.Sprint("p", i)); err != nil {
					return err
				}
				if i == 7 {
					panic("seven")
				}
				return nil
			})
			if err != nil {
				t.Errorf("write %d: %v", i, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if got := count(t, s, "k LIKE 'p%'"); got != 19 {
		t.Errorf("%d rows stand, want 19", got)
	}
}

// TestGroupCommitClose: writes after Close fail, they do not hang.
func TestGroupCommitClose(t *testing.T) {
	s := openGroup(t)
	s.gc.close()
	err := s.write(context.Background(), func(t *tx) error { return nil })
	if !errors.Is(err, errClosed) {
		t.Errorf("write after close: %v, want errClosed", err)
	}
}

// TestGroupCommitSingleStatements: writes of one statement share groups
// without savepoints; a failing one (a duplicate key) changes nothing and
// fails only itself.
func TestGroupCommitSingleStatements(t *testing.T) {
	s := openGroup(t)
	const n = 200
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			errs[i] = s.writeStatement(context.Background(), func(t *tx) error {
				_, err := t.exec(context.Background(), `INSERT INTO t (k, v) VALUES (?, ?)`, fmt.Sprint("s", i%(n/2)), i)
				return err
			})
		})
	}
	wg.Wait()
	failed := 0
	for _, err := range errs {
		if err != nil {
			failed++
		}
	}
	if failed != n/2 || count(t, s, "k LIKE 's%'") != n/2 {
		t.Errorf("%d inserts failed and %d rows stand; want %d and %d", failed, count(t, s, "k LIKE 's%'"), n/2, n/2)
	}
}

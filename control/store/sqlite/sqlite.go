// Package sqlite is the embedded store.Store: one SQLite file (pure Go,
// modernc.org/sqlite) in WAL mode. Writes run in BEGIN IMMEDIATE
// transactions on a single connection, so claims and other transitions
// are serialised and never fail with SQLITE_BUSY inside this process;
// busy_timeout covers other processes sharing the file. Writes that wait
// for the connection are committed in groups: one transaction runs them
// one after another, each in a savepoint of its own, and commits once
// (sqlcore's GroupCommit); each keeps its own all-or-nothing outcome and
// none is answered before the commit. Reads use a separate read-only pool
// and run beside the writer.
//
// synchronous=NORMAL: in WAL mode a commit is written to the log but the
// log is synced only at checkpoints. A crash of the process loses nothing;
// a power loss or kernel crash may lose the last commits before the
// latest checkpoint (the database stays consistent). docs/BENCHMARKS.md
// has the figures; use PostgreSQL where that matters.
//
// temp_store=MEMORY: the group's savepoints journal the pages they change
// in memory rather than in a temporary file (a group holds at most 128
// small writes, so this stays within a few MB).
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"time"

	msqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/control/store/internal/sqlcore"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// busyTimeout is how long a connection waits for another process's lock.
const busyTimeout = 10 * time.Second

// readConns is the size of the read pool.
const readConns = 4

// Store is a store.Store in one SQLite file.
type Store struct {
	*sqlcore.Store
}

var _ store.Store = (*Store)(nil)

// Open opens (creating it and its directory if needed) the SQLite database
// at path and applies the migrations it lacks.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("opening sqlite store: path is empty")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("opening sqlite store %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
		return nil, fmt.Errorf("opening sqlite store: creating its directory: %w", err)
	}
	migrations, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return nil, fmt.Errorf("opening sqlite store: %w", err)
	}
	uri := (&url.URL{Scheme: "file", Path: filepath.ToSlash(abs)}).String()
	common := fmt.Sprintf("_pragma=busy_timeout(%d)&_pragma=foreign_keys(1)", busyTimeout.Milliseconds())

	w, err := sql.Open("sqlite", uri+"?"+common+"&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=temp_store(MEMORY)&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("opening sqlite store %s: %w", abs, err)
	}
	w.SetMaxOpenConns(1) // one writer: BEGIN IMMEDIATE never waits on ourselves
	w.SetConnMaxIdleTime(0)
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("opening sqlite store %s: %w", abs, err)
	}
	r, err := sql.Open("sqlite", uri+"?"+common+"&_pragma=query_only(1)")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("opening sqlite store %s: %w", abs, err)
	}
	r.SetMaxOpenConns(readConns)
	r.SetMaxIdleConns(readConns)

	core, err := sqlcore.New(ctx, sqlcore.Config{
		Dialect: sqlcore.Dialect{
			Name:            "sqlite",
			CacheStatements: true,
			GroupCommit:     true,
			EncodeTime:      func(t time.Time) any { return t.UnixMicro() },
			Retryable:       retryable,
			Migrations:      migrations,
		},
		Write: w,
		Read:  r,
	})
	if err != nil {
		w.Close()
		r.Close()
		return nil, fmt.Errorf("opening sqlite store %s: %w", abs, err)
	}
	return &Store{Store: core}, nil
}

// retryable: the database stayed locked by another process past
// busy_timeout.
func retryable(err error) bool {
	var e *msqlite.Error
	if !errors.As(err, &e) {
		return false
	}
	code := e.Code() & 0xff
	return code == sqlite3.SQLITE_BUSY || code == sqlite3.SQLITE_LOCKED
}

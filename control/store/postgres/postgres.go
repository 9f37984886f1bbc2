// Package postgres is the store.Store for several control replicas
// sharing one PostgreSQL database (github.com/jackc/pgx/v5, pgxpool).
// Claims take rows with FOR UPDATE SKIP LOCKED, so replicas claim side by
// side; every transition locks the job's row and is a conditional UPDATE
// on state, attempt and token. Migrations run under an advisory lock, so
// replicas may start together.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/control/store/internal/sqlcore"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// DefaultMaxConns is the pool size of Open unless the URL sets
// pool_max_conns. Every write waits for its commit's WAL flush (about half
// a millisecond on the development VMs); PostgreSQL flushes the commits
// that wait together, so writes per second grow with the connections
// that commit at once. pgx's default (the number of CPUs, at least 4)
// held a 2-core control plane to a few hundred jobs per second; 16 per
// replica leaves room for six replicas under the server's default
// max_connections of 100.
const DefaultMaxConns = 16

// Store is a store.Store in a PostgreSQL schema (the connection's
// search_path).
type Store struct {
	*sqlcore.Store
}

var _ store.Store = (*Store)(nil)

// Open connects to the database at url (postgres://user:pass@host/db?...)
// and applies the migrations it lacks. Pool settings such as
// pool_max_conns (default DefaultMaxConns) may be given in the URL's
// query; search_path picks the schema.
func Open(ctx context.Context, url string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx hides the password in its parse errors.
		return nil, fmt.Errorf("opening postgres store: parsing the database url: %w", err)
	}
	if !strings.Contains(url, "pool_max_conns") {
		cfg.MaxConns = DefaultMaxConns
	}
	return OpenConfig(ctx, cfg)
}

// OpenConfig is Open with a parsed pool configuration, e.g. one whose
// ConnConfig.RuntimeParams["search_path"] names the schema to use.
func OpenConfig(ctx context.Context, cfg *pgxpool.Config) (*Store, error) {
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("opening postgres store: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("opening postgres store: connecting to %s:%d: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, err)
	}
	migrations, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("opening postgres store: %w", err)
	}
	db := stdlib.OpenDBFromPool(pool)
	core, err := sqlcore.New(ctx, sqlcore.Config{
		Dialect: sqlcore.Dialect{
			Name:               "postgres",
			DollarPlaceholders: true,
			RowLocks:           true,
			Arrays:             true,
			ModifyingCTEs:      true,
			EncodeTime:         func(t time.Time) any { return t },
			// One lock per schema: replicas of one deployment migrate in
			// turn, other schemas in the same database are not held up.
			MigrationLock: `SELECT pg_advisory_xact_lock(hashtext('musetalk schema migration ' || current_schema()))`,
			Retryable:     retryable,
			Migrations:    migrations,
		},
		Write: db,
		Read:  db,
		Close: func() error { pool.Close(); return nil },
	})
	if err != nil {
		db.Close()
		pool.Close()
		return nil, fmt.Errorf("opening postgres store: %w", err)
	}
	return &Store{Store: core}, nil
}

// retryable: serialisation failures and deadlocks, after which the whole
// transaction can run again.
func retryable(err error) bool {
	var e *pgconn.PgError
	return errors.As(err, &e) && (e.Code == "40001" || e.Code == "40P01")
}

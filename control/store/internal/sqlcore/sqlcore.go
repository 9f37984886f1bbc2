package sqlcore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/avatargen/musetalk/control/store"
)

// Config is what a driver hands to New.
type Config struct {
	Dialect Dialect
	// Write runs every write transaction. Read serves plain reads; it may
	// be the same pool.
	Write, Read *sql.DB
	// Close, if set, runs after both pools are closed (e.g. to close the
	// pgx pool behind them).
	Close func() error
}

// Store implements store.Store over database/sql.
type Store struct {
	d       Dialect
	w, r    *sql.DB
	wc, rc  *stmtCache                                     // nil unless the dialect caches statements
	gc      *groupCommit                                   // nil unless the dialect commits in groups
	hb      *batcher[*hbArgs, *store.HeartbeatResult]      // nil unless the dialect takes arrays
	cb      *batcher[*store.JobClaimParams, *store.Job]    // nil unless it also runs INSERT and UPDATE inside WITH
	cmb     *batcher[*store.JobCompleteParams, *store.Job] // as cb
	onClose func() error

	// rebound caches the dialect's form of each query text (at most
	// maxRebound of them): rewriting the placeholders of a long query on
	// every call showed in profiles.
	rebound  sync.Map
	nRebound atomic.Int64
}

// maxRebound bounds the rebound cache; queries beyond it are rewritten
// on every call.
const maxRebound = 1024

// sql returns q with the dialect's placeholders.
func (s *Store) sql(q string) string {
	if !s.d.DollarPlaceholders {
		return q
	}
	if v, ok := s.rebound.Load(q); ok {
		return v.(string)
	}
	r := s.d.rebind(q)
	if s.nRebound.Load() < maxRebound {
		if _, loaded := s.rebound.LoadOrStore(q, r); !loaded {
			s.nRebound.Add(1)
		}
	}
	return r
}

var _ store.Store = (*Store)(nil)

// maxTries bounds how often a transaction is run again after a retryable
// error.
const maxTries = 5

// New applies the missing migrations and returns the Store. It does not
// close the pools on error; the caller owns them until New succeeds.
func New(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Dialect.EncodeTime == nil || cfg.Dialect.Migrations == nil {
		return nil, errors.New("sqlcore: dialect needs EncodeTime and Migrations")
	}
	if cfg.Write == nil || cfg.Read == nil {
		return nil, errors.New("sqlcore: both pools are required")
	}
	s := &Store{d: cfg.Dialect, w: cfg.Write, r: cfg.Read, onClose: cfg.Close}
	if s.d.CacheStatements {
		s.wc = newStmtCache(s.w)
		s.rc = s.wc
		if s.r != s.w {
			s.rc = newStmtCache(s.r)
		}
	}
	if err := s.migrate(ctx); err != nil {
		return nil, err
	}
	if s.d.GroupCommit {
		s.gc = newGroupCommit(s)
	}
	if s.d.Arrays {
		s.hb = newHBBatcher(s)
		if s.d.ModifyingCTEs {
			s.cb = newClaimBatcher(s)
			s.cmb = newCompleteBatcher(s)
		}
	}
	return s, nil
}

// Close stops the batchers and the group commit and closes the pools.
func (s *Store) Close() error {
	s.hb.close() // the batches end with writes of their own
	s.cb.close()
	s.cmb.close()
	s.gc.close()
	err := s.wc.close()
	if s.rc != s.wc {
		err = errors.Join(err, s.rc.close())
	}
	err = errors.Join(err, s.w.Close())
	if s.r != s.w {
		err = errors.Join(err, s.r.Close())
	}
	if s.onClose != nil {
		err = errors.Join(err, s.onClose())
	}
	return err
}

// execer runs statements: a *sql.Tx, or a *sql.DB for a write that is a
// single statement.
type execer interface {
	ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

// tx is one write transaction with the dialect's placeholders. It uses
// the cached statements and notes the queries that are not cached yet.
type tx struct {
	execer
	sqlTx *sql.Tx // nil for a single statement outside a transaction
	s     *Store
	// ctx, when set, runs every statement instead of the context its
	// caller passes: in a group commit one caller's cancelled context
	// must not interrupt a statement of the shared transaction.
	ctx      context.Context
	bound    map[string]*sql.Stmt // cached statements bound to this transaction
	uncached []string
}

// stmtCtx is the context a statement of the transaction runs with.
func (t *tx) stmtCtx(ctx context.Context) context.Context {
	if t.ctx != nil {
		return t.ctx
	}
	return ctx
}

// stmt returns q's cached statement bound to the transaction, or nil.
func (t *tx) stmt(ctx context.Context, q string) *sql.Stmt {
	if t.s.wc == nil || t.sqlTx == nil {
		return nil
	}
	if st := t.bound[q]; st != nil {
		return st
	}
	if st := t.s.wc.get(q); st != nil {
		st = t.sqlTx.StmtContext(ctx, st)
		if t.bound == nil {
			t.bound = map[string]*sql.Stmt{}
		}
		t.bound[q] = st
		return st
	}
	t.uncached = append(t.uncached, q)
	return nil
}

func (t *tx) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	ctx = t.stmtCtx(ctx)
	q = t.s.sql(q)
	if st := t.stmt(ctx, q); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return t.ExecContext(ctx, q, args...)
}

func (t *tx) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	ctx = t.stmtCtx(ctx)
	q = t.s.sql(q)
	if st := t.stmt(ctx, q); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return t.QueryContext(ctx, q, args...)
}

func (t *tx) queryRow(ctx context.Context, q string, args ...any) *sql.Row {
	ctx = t.stmtCtx(ctx)
	q = t.s.sql(q)
	if st := t.stmt(ctx, q); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return t.QueryRowContext(ctx, q, args...)
}

// write runs fn in a transaction and commits it, running it again (up to
// maxTries) after an error the dialect calls retryable. fn must not keep
// state between runs. An error from fn rolls everything fn did back.
// Where the dialect commits in groups, fn may share its transaction with
// other callers' (each in a savepoint of its own); it is run to the end
// once it has started, even if ctx ends meanwhile.
func (s *Store) write(ctx context.Context, fn func(t *tx) error) error {
	for try := 1; ; try++ {
		var err error
		if s.gc != nil {
			err = s.gc.do(ctx, fn, false)
		} else {
			err = s.writeOnce(ctx, fn)
		}
		if err == nil || try == maxTries || s.d.Retryable == nil || !s.d.Retryable(err) || ctx.Err() != nil {
			return err
		}
	}
}

func (s *Store) writeOnce(ctx context.Context, fn func(t *tx) error) error {
	sqlTx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("beginning %s transaction: %w", s.d.Name, err)
	}
	t := &tx{execer: sqlTx, sqlTx: sqlTx, s: s}
	// The connection is free again once this returns.
	defer func() { s.wc.prepare(ctx, t.uncached) }()
	if err := fn(t); err != nil {
		_ = sqlTx.Rollback()
		return err
	}
	if err := sqlTx.Commit(); err != nil {
		return fmt.Errorf("committing %s transaction: %w", s.d.Name, err)
	}
	return nil
}

// writeStatement runs fn, which must make at most one change (one
// statement; reads around it are fine) and keep it even when it fails
// afterwards, outside an explicit transaction: the statement commits on
// its own, which saves the round trips of BEGIN and COMMIT. Where the
// dialect commits in groups it joins a group, without a savepoint.
func (s *Store) writeStatement(ctx context.Context, fn func(t *tx) error) error {
	for try := 1; ; try++ {
		var err error
		if s.gc != nil {
			err = s.gc.do(ctx, fn, true)
		} else {
			err = fn(&tx{execer: s.w, s: s})
		}
		if err == nil || try == maxTries || s.d.Retryable == nil || !s.d.Retryable(err) || ctx.Err() != nil {
			return err
		}
	}
}

// queryRead and queryRowRead run plain reads on the read pool.
func (s *Store) queryRead(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	q = s.sql(q)
	if st := s.readStmt(ctx, q); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return s.r.QueryContext(ctx, q, args...)
}

func (s *Store) queryRowRead(ctx context.Context, q string, args ...any) *sql.Row {
	q = s.sql(q)
	if st := s.readStmt(ctx, q); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return s.r.QueryRowContext(ctx, q, args...)
}

// readStmt returns q's cached statement on the read pool, preparing it
// first (no read holds a connection here).
func (s *Store) readStmt(ctx context.Context, q string) *sql.Stmt {
	if s.rc == nil {
		return nil
	}
	if st := s.rc.get(q); st != nil {
		return st
	}
	s.rc.prepare(ctx, []string{q})
	return s.rc.get(q)
}

// scanner is *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

// scanString reads a row of one text column.
func scanString(r scanner) (string, error) {
	var v string
	return v, r.Scan(&v)
}

// collect scans every row with scan and closes rows.
func collect[T any](rows *sql.Rows, scan func(scanner) (T, error)) ([]T, error) {
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

package sqlcore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// maxGroup bounds how many write transactions share one commit.
const maxGroup = 128

// errClosed answers writes that arrive after Close.
var errClosed = errors.New("store is closed")

// groupCommit runs the write transactions of a database that serialises
// its writers (SQLite: one connection, BEGIN IMMEDIATE) on one goroutine.
// Each time the previous commit is done it takes every transaction that
// waits (up to maxGroup) and runs them one after another inside one
// database transaction, each between SAVEPOINT and RELEASE, so that an
// error rolls back only that caller's changes, then commits once. The
// callers learn their outcomes after that commit. Isolation is unchanged
// (the writes are serial either way); what is saved is a BEGIN and a
// COMMIT per write, and, with WAL, the log frames of pages that several
// writes of a group change (the workers' and the claim index's pages).
type groupCommit struct {
	s    *Store
	reqs chan *writeReq
	quit chan struct{}
	done chan struct{}
	once sync.Once
	// shared counts the writes that ran in a group of more than one (for
	// tests).
	shared atomic.Int64
}

type writeReq struct {
	ctx context.Context
	fn  func(t *tx) error
	// single: fn makes at most one change, one statement, which SQLite
	// makes atomic by itself (a failed statement changes nothing), so it
	// needs no savepoint of its own.
	single bool
	err    chan error // buffered: the committer never waits on a caller
}

func newGroupCommit(s *Store) *groupCommit {
	g := &groupCommit{s: s, reqs: make(chan *writeReq, maxGroup), quit: make(chan struct{}), done: make(chan struct{})}
	go g.run()
	return g
}

// close stops the committer after the group it runs; writes still
// waiting get errClosed. A nil groupCommit does nothing.
func (g *groupCommit) close() {
	if g == nil {
		return
	}
	g.once.Do(func() { close(g.quit) })
	<-g.done
}

// do runs fn in the next group. Once queued, fn may run whatever ctx
// does, so do waits for its outcome; a write whose ctx ended before its
// group started is not run and returns ctx's error.
func (g *groupCommit) do(ctx context.Context, fn func(t *tx) error, single bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	req := &writeReq{ctx: ctx, fn: fn, single: single, err: make(chan error, 1)}
	select {
	case g.reqs <- req:
	case <-ctx.Done():
		return ctx.Err()
	case <-g.done:
		return fmt.Errorf("writing to the %s store: %w", g.s.d.Name, errClosed)
	}
	var err error
	select {
	case err = <-req.err:
	case <-g.done:
		// The committer stopped; it answered every request it took.
		select {
		case err = <-req.err:
		default:
			return fmt.Errorf("writing to the %s store: %w", g.s.d.Name, errClosed)
		}
	}
	if p, ok := err.(*panicked); ok {
		panic(p.v) // fn panicked on the committer: go on panicking here
	}
	return err
}

// panicked carries a panic of a caller's fn back to the caller.
type panicked struct{ v any }

func (p *panicked) Error() string { return fmt.Sprintf("panic: %v", p.v) }

// call runs fn, turning a panic into a *panicked error.
func call(fn func(t *tx) error, t *tx) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &panicked{v}
		}
	}()
	return fn(t)
}

func (g *groupCommit) run() {
	defer close(g.done)
	group := make([]*writeReq, 0, maxGroup)
	for {
		select {
		case r := <-g.reqs:
			group = append(group[:0], r)
		case <-g.quit:
			for {
				select {
				case r := <-g.reqs:
					r.err <- fmt.Errorf("writing to the %s store: %w", g.s.d.Name, errClosed)
				default:
					return
				}
			}
		}
	more:
		for len(group) < maxGroup {
			select {
			case r := <-g.reqs:
				group = append(group, r)
			default:
				break more
			}
		}
		if len(group) > 1 {
			g.shared.Add(int64(len(group)))
		}
		g.s.runGroup(group)
		clear(group) // let the requests go
	}
}

// runGroup runs the group's transactions and answers each request.
func (s *Store) runGroup(group []*writeReq) {
	live := group[:0:0]
	for _, r := range group {
		if err := r.ctx.Err(); err != nil {
			r.err <- err
			continue
		}
		live = append(live, r)
	}
	switch len(live) {
	case 0:
		return
	case 1:
		r := live[0]
		r.err <- s.writeAlone(r)
		return
	}
	errs, err := s.writeGroup(live)
	if err != nil {
		// The shared transaction failed as a whole (its begin or commit,
		// or a savepoint that could not be rolled back): nothing of it
		// stands. Each write runs again on its own, so that each learns
		// its own outcome.
		for _, r := range live {
			r.err <- s.writeAlone(r)
		}
		return
	}
	for i, r := range live {
		r.err <- errs[i]
	}
}

// writeAlone runs one request in a transaction of its own.
func (s *Store) writeAlone(r *writeReq) error {
	return s.writeOnce(context.WithoutCancel(r.ctx), func(t *tx) error { return call(r.fn, t) })
}

// writeGroup runs every request's fn in one transaction, each in a
// savepoint, and commits. errs holds each fn's own error (its changes
// rolled back); err is set when the transaction as a whole failed.
func (s *Store) writeGroup(group []*writeReq) (errs []error, err error) {
	ctx := context.Background()
	sqlTx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("beginning %s transaction: %w", s.d.Name, err)
	}
	t := &tx{execer: sqlTx, sqlTx: sqlTx, s: s, ctx: ctx}
	defer func() { s.wc.prepare(ctx, t.uncached) }()
	errs = make([]error, len(group))
	for i, r := range group {
		if r.single {
			if errs[i] = call(r.fn, t); errs[i] != nil {
				var p *panicked
				if errors.As(errs[i], &p) {
					_ = sqlTx.Rollback()
					return nil, errs[i]
				}
			}
			continue
		}
		if _, err := t.exec(ctx, `SAVEPOINT w`); err != nil {
			_ = sqlTx.Rollback()
			return nil, fmt.Errorf("opening a savepoint: %w", err)
		}
		if errs[i] = call(r.fn, t); errs[i] != nil {
			var p *panicked
			if errors.As(errs[i], &p) {
				// What the panic left behind is unknown: drop it all.
				_ = sqlTx.Rollback()
				return nil, errs[i]
			}
			if _, err := t.exec(ctx, `ROLLBACK TO w`); err != nil {
				_ = sqlTx.Rollback()
				return nil, fmt.Errorf("rolling back to a savepoint after %v: %w", errs[i], err)
			}
		}
		if _, err := t.exec(ctx, `RELEASE w`); err != nil {
			_ = sqlTx.Rollback()
			return nil, fmt.Errorf("releasing a savepoint: %w", err)
		}
	}
	if err := sqlTx.Commit(); err != nil {
		return nil, fmt.Errorf("committing %s transaction: %w", s.d.Name, err)
	}
	return errs, nil
}

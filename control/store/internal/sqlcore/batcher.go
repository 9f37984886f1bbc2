package sqlcore

import (
	"context"
	"slices"
	"strings"
	"sync"
)

// batcher hands the calls that wait for the database to run in batches:
// where the database takes arrays as parameters (PostgreSQL), a batch
// of calls is a few statements and one commit whatever its size, where
// each call alone would cost a round trip and a commit of its own. A
// lone call is a batch of one; calls only wait while a batch runs.
type batcher[A, R any] struct {
	max  int
	run  func(batch []*batchCall[A, R])
	reqs chan *batchCall[A, R]
	quit chan struct{}
	done chan struct{} // closed once the runners have stopped and the queue is answered
	wg   sync.WaitGroup
	once sync.Once
}

// batchCall is one waiting call: its context, its argument and, once run
// answers it, its result.
type batchCall[A, R any] struct {
	ctx  context.Context
	arg  A
	res  R
	err  error
	done chan struct{}
}

// answer records the call's outcome and wakes its caller; exactly once.
func (c *batchCall[A, R]) answer(res R, err error) {
	c.res, c.err = res, err
	close(c.done)
}

// newBatcher starts runners goroutines, each running one batch of at
// most max calls at a time: with two, one batch can be in its commit (a
// WAL flush) while the next is built.
func newBatcher[A, R any](max, runners int, run func([]*batchCall[A, R])) *batcher[A, R] {
	b := &batcher[A, R]{max: max, run: run, reqs: make(chan *batchCall[A, R], max), quit: make(chan struct{}), done: make(chan struct{})}
	for range runners {
		b.wg.Add(1)
		go b.loop()
	}
	return b
}

// close stops the runners after the batches they run; calls still
// waiting get errClosed. A nil batcher does nothing.
func (b *batcher[A, R]) close() {
	if b == nil {
		return
	}
	b.once.Do(func() {
		close(b.quit)
		b.wg.Wait()
		for {
			select {
			case c := <-b.reqs:
				var zero R
				c.answer(zero, errClosed)
				continue
			default:
			}
			break
		}
		close(b.done)
	})
}

// call runs arg in the next batch, or alone with one where b is nil (the
// dialect does not batch these calls).
func (b *batcher[A, R]) call(ctx context.Context, arg A, one func(context.Context, A) (R, error)) (R, error) {
	if b == nil {
		return one(ctx, arg)
	}
	return b.do(ctx, arg)
}

// do runs arg in the next batch and waits for its answer; once its batch
// has started it runs to the end whatever ctx does.
func (b *batcher[A, R]) do(ctx context.Context, arg A) (R, error) {
	var zero R
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	c := &batchCall[A, R]{ctx: ctx, arg: arg, done: make(chan struct{})}
	select {
	case b.reqs <- c:
	case <-ctx.Done():
		return zero, ctx.Err()
	case <-b.quit:
		return zero, errClosed
	}
	select {
	case <-c.done:
	case <-b.done:
		// Every call taken was answered; one queued after the last drain
		// was not.
		select {
		case <-c.done:
		default:
			return zero, errClosed
		}
	}
	return c.res, c.err
}

func (b *batcher[A, R]) loop() {
	defer b.wg.Done()
	batch := make([]*batchCall[A, R], 0, b.max)
	for {
		select {
		case c := <-b.reqs:
			batch = append(batch[:0], c)
		case <-b.quit:
			return
		}
	more:
		for len(batch) < b.max {
			select {
			case c := <-b.reqs:
				batch = append(batch, c)
			default:
				break more
			}
		}
		b.run(batch)
		clear(batch)
	}
}

// newRoundBatcher returns a batcher that sorts each batch by key, splits
// it into rounds of calls with distinct keys (each sorted, the order its
// rows are locked in where the key names them) and answers each round
// with runRound.
func newRoundBatcher[A, R any](s *Store, max, runners int, key func(A) string, one func(context.Context, A) (R, error),
	many func(t *tx, ctx context.Context, round []*batchCall[A, R]) ([]R, []bool, error)) *batcher[A, R] {
	return newBatcher(max, runners, func(batch []*batchCall[A, R]) {
		calls := live(batch)
		slices.SortStableFunc(calls, func(x, y *batchCall[A, R]) int { return strings.Compare(key(x.arg), key(y.arg)) })
		for _, round := range rounds(calls, key) {
			runRound(s, round, one, many)
		}
	})
}

// runRound answers one round of calls (distinct keys). A lone call goes
// to one. Otherwise many makes the calls in one transaction and returns
// each one's result and whether it made it; the calls it did not make,
// and all of them when the transaction fails, go to one each, which
// answers them as always.
func runRound[A, R any](s *Store, round []*batchCall[A, R], one func(context.Context, A) (R, error),
	many func(t *tx, ctx context.Context, round []*batchCall[A, R]) ([]R, []bool, error)) {
	if len(round) == 1 {
		r := round[0]
		r.answer(one(context.WithoutCancel(r.ctx), r.arg))
		return
	}
	ctx := context.Background()
	var res []R
	var made []bool
	err := s.write(ctx, func(t *tx) error {
		var err error
		res, made, err = many(t, ctx, round)
		return err
	})
	for i, r := range round {
		if err == nil && made[i] {
			r.answer(res[i], nil)
		} else {
			r.answer(one(context.WithoutCancel(r.ctx), r.arg))
		}
	}
}

// live answers the calls whose context has ended and returns the others.
func live[A, R any](batch []*batchCall[A, R]) []*batchCall[A, R] {
	out := batch[:0:0]
	for _, c := range batch {
		if err := c.ctx.Err(); err != nil {
			var zero R
			c.answer(zero, err)
			continue
		}
		out = append(out, c)
	}
	return out
}

// rounds splits calls into rounds in which no key appears twice, keeping
// each key's calls in their order; every statement of a round then
// changes each row once.
func rounds[A, R any](calls []*batchCall[A, R], key func(A) string) [][]*batchCall[A, R] {
	var out [][]*batchCall[A, R]
	for len(calls) > 0 {
		seen := make(map[string]bool, len(calls))
		var round, later []*batchCall[A, R]
		for _, c := range calls {
			if k := key(c.arg); seen[k] {
				later = append(later, c)
			} else {
				seen[k] = true
				round = append(round, c)
			}
		}
		out = append(out, round)
		calls = later
	}
	return out
}

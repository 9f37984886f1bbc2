package cpu

import (
	"sync"
	"sync/atomic"
	"unsafe"
)

// workers is the backend's thread pool: threads−1 goroutines plus the
// calling goroutine run the items of a parallel loop. Each thread owns a
// scratch arena, so loop bodies never allocate.
type workers struct {
	threads int
	jobs    chan *job
	done    sync.WaitGroup // running worker goroutines

	mu   sync.Mutex
	idle []*scratch // arenas for calling goroutines
}

func newWorkers(threads int) *workers {
	w := &workers{threads: threads, jobs: make(chan *job, threads)}
	for range threads - 1 {
		w.done.Add(1)
		go w.loop(new(scratch))
	}
	return w
}

// close stops the worker goroutines and waits for them.
func (w *workers) close() {
	close(w.jobs)
	w.done.Wait()
}

func (w *workers) loop(s *scratch) {
	defer w.done.Done()
	for j := range w.jobs {
		j.mu.Lock()
		if j.closed {
			j.mu.Unlock()
			continue
		}
		j.active.Add(1)
		j.mu.Unlock()
		j.work(s)
		j.active.Done()
	}
}

// job is one parallel loop.
type job struct {
	fn   func(s *scratch, i int)
	n    int64
	next atomic.Int64

	mu     sync.Mutex
	closed bool           // no further helper may join
	active sync.WaitGroup // helpers that joined and have not finished
	panic  any            // first panic of a helper, re-raised by the caller
}

// work runs items until none are left. A panicking item stops this
// thread's share; the panic is recorded for the caller.
func (j *job) work(s *scratch) {
	defer func() {
		if r := recover(); r != nil {
			j.mu.Lock()
			if j.panic == nil {
				j.panic = r
			}
			j.mu.Unlock()
			j.next.Store(j.n) // stop the other threads early
		}
	}()
	for {
		i := j.next.Add(1) - 1
		if i >= j.n {
			return
		}
		j.fn(s, int(i))
	}
}

// parallel calls fn(s, i) for i in [0, n) on up to w.threads threads,
// including the caller, and returns when all calls have returned. s is the
// executing thread's scratch arena. A panic in fn is re-raised here.
func (w *workers) parallel(n int, fn func(s *scratch, i int)) {
	if n <= 0 {
		return
	}
	s := w.getScratch()
	defer w.putScratch(s)
	if w.threads == 1 || n == 1 {
		for i := range n {
			fn(s, i)
		}
		return
	}
	j := &job{fn: fn, n: int64(n)}
	for range min(w.threads-1, n-1) {
		select {
		case w.jobs <- j:
		default: // every worker is busy; the caller does the work
		}
	}
	j.work(s)
	j.mu.Lock()
	j.closed = true
	j.mu.Unlock()
	j.active.Wait()
	if j.panic != nil {
		panic(j.panic)
	}
}

func (w *workers) getScratch() *scratch {
	w.mu.Lock()
	defer w.mu.Unlock()
	if n := len(w.idle); n > 0 {
		s := w.idle[n-1]
		w.idle = w.idle[:n-1]
		return s
	}
	return new(scratch)
}

func (w *workers) putScratch(s *scratch) {
	w.mu.Lock()
	w.idle = append(w.idle, s)
	w.mu.Unlock()
}

// Scratch slots: each names one buffer of a thread's arena.
const (
	slotPackA = iota
	slotPackB
	slotTile
	slotScores
	slotRow
	slotWinoPad // a Winograd input channel with its zero border
	slotWinoTmp // a Winograd transform's intermediate vectors
	slotCount
)

// scratch is one thread's arena: one growable buffer per slot, reused by
// every op that thread runs.
type scratch struct {
	bufs [slotCount][]float32
}

// get returns slot's buffer resized to n elements (64-byte aligned,
// contents unspecified).
func (s *scratch) get(slot, n int) []float32 {
	if cap(s.bufs[slot]) < n {
		s.bufs[slot] = alignedFloats(n + n/4)
	}
	return s.bufs[slot][:n]
}

// alignedFloats returns a zeroed slice of n floats whose first element is
// 64-byte aligned, so packed panels never split cache lines.
func alignedFloats(n int) []float32 {
	buf := make([]float32, n+16)
	off := int(uintptr(unsafe.Pointer(&buf[0]))&63) / 4
	if off != 0 {
		off = 16 - off
	}
	return buf[off : off+n : off+n]
}

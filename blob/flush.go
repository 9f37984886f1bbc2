package blob

import "sync"

// flusher runs a filesystem-wide sync for many writers at once: a caller
// joins the next flush, and one flush runs at a time, so writers that
// arrive while one runs share the next. Each flush starts after every
// caller that joined it had called sync, so what they wrote before is
// covered. It is group commit for files: with many concurrent Puts, one
// syncfs(2) replaces two fsync(2)s per Put.
type flusher struct {
	do  func() error  // the sync; errors go to every caller of that flush
	run chan struct{} // held by the caller running a flush

	mu   sync.Mutex
	next *flush // the flush that callers join; nil until one joins
}

type flush struct {
	done chan struct{}
	err  error
}

func newFlusher(do func() error) *flusher {
	return &flusher{do: do, run: make(chan struct{}, 1)}
}

// sync returns once a flush that started after this call has finished,
// with that flush's error.
func (f *flusher) sync() error {
	f.mu.Lock()
	if f.next == nil {
		f.next = &flush{done: make(chan struct{})}
	}
	fl := f.next
	f.mu.Unlock()
	select {
	case f.run <- struct{}{}:
		// Free to run one. If our flush is still unclaimed, run it; if
		// another caller took it, that caller finished it before letting
		// go of run, so fl.done is already closed.
		f.mu.Lock()
		lead := f.next == fl
		if lead {
			f.next = nil
		}
		f.mu.Unlock()
		if lead {
			fl.err = f.do()
			close(fl.done)
		}
		<-f.run
	case <-fl.done:
	}
	<-fl.done
	return fl.err
}

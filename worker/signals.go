package worker

import (
	"context"
	"os"
)

// RunWithSignals runs the worker until ctx is done or signals end it, with
// the two-stage stop that deployments rely on: the first signal drains (no
// new claims; the current job gets Grace to finish, then is released), the
// second releases the job at once. It returns Run's result: nil after a
// clean drain, so the process exits 0. The caller subscribes sigs (for
// example with signal.Notify for SIGTERM and SIGINT) and owns the channel.
func (w *Worker) RunWithSignals(ctx context.Context, sigs <-chan os.Signal) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	defer close(done)
	go func() {
		for n := 1; ; n++ {
			select {
			case <-done:
				return
			case s := <-sigs:
				if n == 1 {
					w.log.Info("signal: draining; send it again to release the job at once", "signal", s.String(), "grace", w.cfg.Grace)
					cancel()
					continue
				}
				w.log.Warn("second signal: releasing the job now", "signal", s.String())
				w.Stop()
				return
			}
		}
	}()
	return w.Run(ctx)
}

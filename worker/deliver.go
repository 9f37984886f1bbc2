package worker

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/avatargen/musetalk/protocol"
	"github.com/avatargen/musetalk/worker/controlblob"
	"github.com/avatargen/musetalk/worker/engine"
)

// A finished render is the job's most expensive state, and an unreachable
// control plane or object store is never the job's fault. So once the
// engine has written the output, the worker keeps it on disk and retries
// the upload and the complete call with exponential backoff and jitter for
// as long as the attempt can still be current: until the control plane
// answers 409 (the attempt was taken away or the job ended), a cancel
// order arrives with a heartbeat, the worker is stopped (the grace period
// after SIGTERM runs out, or a second signal: the attempt is released and
// its output left on disk), or Config.DeliverTimeout passes (the attempt
// is released). Transport errors, 5xx, 408 and 429 answers are retried and
// never reported as a failure, so they never spend the job's failure
// budget. The heartbeat goroutine keeps the lease alive meanwhile (and
// renews it as soon as the control plane answers again: a restarted
// control plane waits a lease before it sweeps).

var (
	// errDeliverTimeout ends the retries after Config.DeliverTimeout.
	errDeliverTimeout = errors.New("the control plane or the object store stayed unreachable")
	// errOutputMismatch is complete's 409 output_mismatch: the store does
	// not hold the bytes this attempt uploaded (upload them again).
	errOutputMismatch = errors.New("the stored output is not the one this attempt uploaded")
)

// deliveryError marks an error of the delivery phase (after the engine
// finished): the runner releases instead of failing when the cause is an
// outage, and keeps the output on disk when the worker is stopping.
type deliveryError struct{ err error }

func (e *deliveryError) Error() string { return e.err.Error() }
func (e *deliveryError) Unwrap() error { return e.err }

// permanentError is an error that retrying will not cure (a 4xx answer
// other than 408/429/409, a local file that cannot be read).
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// fencedStore is an object store whose uploads carry the attempt and its
// fencing token, so that the control plane can refuse a stale attempt's
// upload (controlblob.Store).
type fencedStore interface {
	PutAttempt(ctx context.Context, key string, r io.Reader, size int64, attempt int, token string) error
}

// deliver uploads the attempt's output from src and completes the attempt,
// retrying as described above. ctx is the attempt's context. It returns
// nil once the control plane has accepted the complete; otherwise an error
// wrapping errAttemptGone, errDeliverTimeout, the context's cause, or a
// permanent error, inside a *deliveryError.
func (w *Worker) deliver(ctx context.Context, att *attempt, src, engineName string) error {
	if err := w.deliverOutput(ctx, att, src, engineName); err != nil {
		return &deliveryError{err: err}
	}
	return nil
}

func (w *Worker) deliverOutput(ctx context.Context, att *attempt, src, engineName string) error {
	a := att.a
	sha, size, err := fileDigest(src)
	if err != nil {
		return &permanentError{fmt.Errorf("reading the output %s: %w", src, err)}
	}
	dctx, cancel := context.WithTimeoutCause(ctx, w.cfg.DeliverTimeout, errDeliverTimeout)
	defer cancel()
	bo := &retryWait{next: w.retryBase, max: w.retryMax()}
	for round := 1; ; round++ {
		start := time.Now()
		err := w.phase(dctx, bo, "upload", []attribute.KeyValue{attribute.String("musetalk.output_key", a.OutputKey)},
			w.uploadTimeout(size), func(ctx context.Context) error { return w.putOutput(ctx, a, src) })
		if err != nil {
			w.setStorage(errors.Is(err, errAttemptGone)) // gone: the store answered
			return err
		}
		w.setStorage(true)
		w.met.stageTime(ctx, engineName, "upload", time.Since(start))
		err = w.phase(dctx, bo, "complete", nil, 3*w.cfg.HeartbeatTimeout, func(ctx context.Context) error {
			return w.client.complete(ctx, a.JobID, &protocol.CompleteRequest{
				Attempt: a.Attempt, Token: a.Token, OutputKey: a.OutputKey, SHA1: sha, Size: size})
		})
		if !errors.Is(err, errOutputMismatch) {
			return err
		}
		// Someone replaced the object after this attempt uploaded it (or
		// the upload went wrong): upload it again, a few times at most.
		if round == 3 {
			return &permanentError{err}
		}
		w.log.Warn("the control plane found another object under the output key; uploading again",
			"job_id", a.JobID, "attempt", a.Attempt, "err", err)
	}
}

// phase runs one step of the delivery (upload or complete) in its own
// span, retrying transient errors with backoff until it succeeds, fails
// for good, or ctx ends (then it returns ctx's cause, wrapping the last
// error). Each try has its own timeout.
func (w *Worker) phase(ctx context.Context, bo *retryWait, op string, attrs []attribute.KeyValue, tryTimeout time.Duration, f func(context.Context) error) error {
	ctx, span := w.tracer.Start(ctx, op, trace.WithAttributes(attrs...))
	var err error
	defer func() { endSpan(span, err) }()
	for try := 1; ; try++ {
		tctx, cancel := context.WithTimeout(ctx, tryTimeout)
		err = classify(f(tctx))
		cancel()
		if err == nil {
			bo.reset(w.retryBase)
			return nil
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (last try: %v)", context.Cause(ctx), err)
			return err
		}
		if !transientErr(err) {
			return err
		}
		wait := bo.step()
		span.AddEvent("retry", trace.WithAttributes(attribute.Int("musetalk.try", try), attribute.String("error", err.Error())))
		w.log.Warn("retrying: the output is kept until the call gets through", "call", op, "try", try, "wait", wait.Round(time.Millisecond), "err", err)
		if !sleep(ctx, wait, nil) {
			err = fmt.Errorf("%w (last try: %v)", context.Cause(ctx), err)
			return err
		}
	}
}

// classify turns answers into the worker's error kinds: 409 stale_token
// and conflict (and 404: the job is gone) wrap errAttemptGone, 409
// output_mismatch wraps errOutputMismatch, other 4xx but 408 and 429 are
// permanent; the rest (5xx, 408, 429, transport errors) is transient.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var ae *apiError
	if errors.As(err, &ae) {
		switch {
		case errors.Is(err, errAttemptGone), ae.temporary():
			return err
		case ae.Status == http.StatusConflict && ae.Code == protocol.CodeOutputMismatch:
			return fmt.Errorf("%w: %w", errOutputMismatch, err)
		case ae.Status == http.StatusNotFound:
			return fmt.Errorf("%w: %w", errAttemptGone, err)
		}
		return &permanentError{err}
	}
	var se *controlblob.StatusError
	if errors.As(err, &se) {
		switch {
		case se.Temporary():
			return err
		case se.Status == http.StatusNotFound,
			se.Status == http.StatusConflict && (se.Code == protocol.CodeStaleToken || se.Code == protocol.CodeConflict):
			return fmt.Errorf("%w: %w", errAttemptGone, err)
		}
		return &permanentError{err}
	}
	return err
}

// transientErr reports whether a classified error is worth another try.
func transientErr(err error) bool {
	var pe *permanentError
	return !errors.As(err, &pe) && !errors.Is(err, errAttemptGone) && !errors.Is(err, errOutputMismatch)
}

// putOutput uploads the output file once, fenced when the store supports
// it (uploads through the control plane).
func (w *Worker) putOutput(ctx context.Context, a *protocol.Assignment, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return &permanentError{fmt.Errorf("opening the output: %w", err)}
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return &permanentError{fmt.Errorf("opening the output: %w", err)}
	}
	if fs, ok := w.cfg.Blob.(fencedStore); ok {
		err = fs.PutAttempt(ctx, a.OutputKey, f, st.Size(), a.Attempt, a.Token)
	} else {
		err = w.cfg.Blob.Put(ctx, a.OutputKey, f, st.Size())
	}
	if err != nil {
		return fmt.Errorf("uploading %s: %w", a.OutputKey, err)
	}
	return nil
}

// uploadTimeout bounds one upload try: two minutes plus 256 KiB/s.
func (w *Worker) uploadTimeout(size int64) time.Duration {
	return 2*time.Minute + time.Duration(size/(256<<10))*time.Second
}

// retryMax is the longest wait between two tries: two poll intervals
// (heartbeats retry as often), between 1 s and 30 s, so that a call gets
// through within seconds of the control plane's return.
func (w *Worker) retryMax() time.Duration {
	return min(max(2*w.cfg.PollInterval, time.Second), 30*time.Second)
}

// retryWait is exponential backoff with ±20% jitter.
type retryWait struct{ next, max time.Duration }

func (r *retryWait) step() time.Duration {
	d := jitter(r.next)
	r.next = min(2*r.next, r.max)
	return d
}

func (r *retryWait) reset(base time.Duration) { r.next = base }

// fileDigest is the lower-case hex SHA-1 and the size of a file.
func fileDigest(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha1.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// downloadBound is how long an input download is retried through an
// outage before the attempt is released (not failed): four default
// leases (3 poll intervals each), at least 30 s.
func (w *Worker) downloadBound() time.Duration {
	return max(12*w.cfg.PollInterval, 30*time.Second)
}

// download copies one input to a local file, retrying transient errors
// (the object store or the control plane unreachable) for downloadBound.
// A missing input is permanent; an outage that outlasts the bound ends in
// an error wrapping errStoreUnreachable, which the runner answers with a
// release: an outage is not the job's failure.
func (w *Worker) download(ctx context.Context, key, dst string) error {
	bctx, cancel := context.WithTimeoutCause(ctx, w.downloadBound(), errStoreUnreachable)
	defer cancel()
	bo := &retryWait{next: w.retryBase, max: w.retryMax()}
	for try := 1; ; try++ {
		err := w.downloadOnce(bctx, key, dst)
		switch {
		case err == nil:
			w.setStorage(true)
			return nil
		case isNotFound(err):
			return engine.Permanent(fmt.Errorf("input %s is missing from the object store", key))
		case ctx.Err() != nil:
			return err
		}
		if !transientErr(classify(err)) {
			return engine.Retryable(fmt.Errorf("downloading %s: %w", key, err))
		}
		w.setStorage(false)
		wait := bo.step()
		if bctx.Err() == nil {
			w.log.Warn("retrying the download", "key", key, "try", try, "wait", wait.Round(time.Millisecond), "err", err)
		}
		if !sleep(bctx, wait, nil) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("downloading %s: %w after %d tries: %w", key, errStoreUnreachable, try, err)
		}
	}
}

// errStoreUnreachable ends an input download that an outage kept from
// succeeding for downloadBound.
var errStoreUnreachable = errors.New("object store unreachable")

func (w *Worker) downloadOnce(ctx context.Context, key, dst string) error {
	rc, err := w.cfg.Blob.Get(ctx, key)
	if err != nil {
		return err
	}
	defer rc.Close()
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, rc); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// truncateText cuts s to at most n bytes.
func truncateText(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

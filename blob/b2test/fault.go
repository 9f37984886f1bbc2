package b2test

import (
	"context"
	"io"
	"net/http"
	"time"
)

// Fault is one programmed misbehaviour. A request matches when its B2
// operation is Op (or Op is "*"); the first Skip matching requests pass, the
// next Count (all, if Count is 0) get the fault. Faults are tried in the
// order injected and at most one applies to a request.
//
// Over the admin API (see Server) a Fault is JSON with these field names in
// snake case; Delay is in nanoseconds.
type Fault struct {
	// Op is a B2 operation name, such as "b2_upload_part",
	// "b2_download_file_by_name" or "b2_authorize_account", or "*".
	Op    string `json:"op"`
	Skip  int    `json:"skip,omitempty"`
	Count int    `json:"count,omitempty"`

	// Delay waits before the request is handled (or ends early when the
	// client goes away).
	Delay time.Duration `json:"delay,omitempty"`
	// ExpireTokens expires every token issued so far (as
	// Server.ExpireTokens) just before the request is handled.
	ExpireTokens bool `json:"expire_tokens,omitempty"`
	// Drop closes the connection without any response.
	Drop bool `json:"drop,omitempty"`
	// DropResponse handles the request (its effects stand) but closes the
	// connection instead of sending the response: the answer is lost.
	DropResponse bool `json:"drop_response,omitempty"`
	// Status, when not 0, answers with this HTTP status and a B2 error body
	// (code Code, or one fitting the status) instead of handling the
	// request. The request body is read first.
	Status     int    `json:"status,omitempty"`
	Code       string `json:"code,omitempty"`
	RetryAfter int    `json:"retry_after,omitempty"` // seconds, sent with Status

	// Truncate (downloads) sends headers promising the whole body, then
	// only TruncateAfter bytes of it, then closes the connection.
	Truncate      bool  `json:"truncate,omitempty"`
	TruncateAfter int64 `json:"truncate_after,omitempty"`
	// Corrupt (downloads) flips one bit in the middle of the body sent.
	Corrupt bool `json:"corrupt,omitempty"`
	// BytesPerSecond throttles download bodies and upload request bodies.
	BytesPerSecond int64 `json:"bytes_per_second,omitempty"`
}

type faultState struct {
	f       Fault
	seen    int
	applied int
}

// Inject adds a fault to the plan.
func (s *Server) Inject(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &faultState{f: f})
}

// ClearFaults removes every fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// matchFault finds the fault for a request of op; s.mu must be held.
func (s *Server) matchFault(op string) *Fault {
	for _, fs := range s.faults {
		if fs.f.Op != op && fs.f.Op != "*" {
			continue
		}
		fs.seen++
		if fs.seen <= fs.f.Skip {
			continue
		}
		if fs.f.Count > 0 && fs.applied >= fs.f.Count {
			continue
		}
		fs.applied++
		f := fs.f
		return &f
	}
	return nil
}

func codeForStatus(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "bad_request"
	case http.StatusUnauthorized:
		return "unauthorized"
	case http.StatusForbidden:
		return "cap_exceeded"
	case http.StatusNotFound:
		return "not_found"
	case http.StatusRequestTimeout:
		return "request_timeout"
	case http.StatusTooManyRequests:
		return "too_many_requests"
	case http.StatusServiceUnavailable:
		return "service_unavailable"
	default:
		if status >= 500 {
			return "internal_error"
		}
		return "bad_request"
	}
}

// sleepCtx waits d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// throttledReader reads at most bps bytes per second.
type throttledReader struct {
	ctx   context.Context
	r     io.Reader
	bps   int64
	start time.Time
	n     int64
}

func (t *throttledReader) Read(p []byte) (int, error) {
	if t.start.IsZero() {
		t.start = time.Now()
	}
	if max := t.bps / 10; max > 0 && int64(len(p)) > max {
		p = p[:max]
	} else if max == 0 {
		p = p[:1]
	}
	n, err := t.r.Read(p)
	t.n += int64(n)
	due := t.start.Add(time.Duration(float64(t.n) / float64(t.bps) * float64(time.Second)))
	if d := time.Until(due); d > 0 {
		if serr := sleepCtx(t.ctx, d); serr != nil && err == nil {
			err = serr
		}
	}
	return n, err
}

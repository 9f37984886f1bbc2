package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"go.opentelemetry.io/otel/propagation"

	"github.com/avatargen/musetalk/protocol"
)

// errAttemptGone matches answers saying the attempt is no longer this
// worker's: 409 stale_token (another attempt holds the job) or 409
// conflict (the job ended, e.g. cancelled).
var errAttemptGone = errors.New("the attempt is no longer this worker's")

// apiError is an unexpected answer from the control plane.
type apiError struct {
	Op      string
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	if e.Code != "" {
		return fmt.Sprintf("%s: HTTP %d %s: %s", e.Op, e.Status, e.Code, msg)
	}
	return fmt.Sprintf("%s: HTTP %d: %s", e.Op, e.Status, msg)
}

// Is makes errors.Is(err, errAttemptGone) true for stale and conflict answers.
func (e *apiError) Is(target error) bool {
	return target == errAttemptGone && e.Status == http.StatusConflict &&
		(e.Code == protocol.CodeStaleToken || e.Code == protocol.CodeConflict)
}

// temporary reports whether the same call may succeed later.
func (e *apiError) temporary() bool {
	return e.Status >= 500 || e.Status == http.StatusTooManyRequests || e.Status == http.StatusRequestTimeout
}

// transient reports whether a control plane call that failed with err is
// worth retrying: network errors and temporary answers, not 4xx and not
// the caller's own cancellation.
func transient(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.temporary()
	}
	return true
}

// client speaks the worker API of one control plane for one worker. The
// key is kept out of every error and log line.
type client struct {
	base     string
	apiKey   string
	workerID string
	hc       *http.Client
}

func newClient(baseURL, apiKey, workerID string, hc *http.Client) *client {
	if hc == nil {
		hc = &http.Client{}
	}
	return &client{base: strings.TrimRight(baseURL, "/"), apiKey: apiKey, workerID: workerID, hc: hc}
}

// post sends body as JSON and decodes a 200 answer into out. It returns
// (false, nil) on 204 No Content.
func (c *client) post(ctx context.Context, op, path string, body, out any) (bool, error) {
	buf, err := json.Marshal(body)
	if err != nil {
		return false, fmt.Errorf("%s: encoding the request: %w", op, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(buf))
	if err != nil {
		return false, fmt.Errorf("%s: %w", op, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.apiKey)
	req.Header.Set("Content-Type", "application/json")
	// The attempt's calls (complete, fail, release) continue its trace on
	// the control plane; heartbeats and claims carry no span.
	propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(req.Header))
	resp, err := c.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is in op already; keep the message short
		}
		return false, fmt.Errorf("%s: %w", op, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return false, fmt.Errorf("%s: reading the answer: %w", op, err)
	}
	switch {
	case resp.StatusCode == http.StatusNoContent:
		return false, nil
	case resp.StatusCode/100 == 2:
		if out != nil {
			if err := json.Unmarshal(data, out); err != nil {
				return false, fmt.Errorf("%s: decoding the answer: %w", op, err)
			}
		}
		return true, nil
	default:
		e := &apiError{Op: op, Status: resp.StatusCode}
		var eb protocol.ErrorBody
		if json.Unmarshal(data, &eb) == nil {
			e.Code, e.Message = eb.Error.Code, eb.Error.Message
		}
		return false, e
	}
}

func (c *client) heartbeat(ctx context.Context, hb *protocol.Heartbeat) (*protocol.HeartbeatResponse, error) {
	var out protocol.HeartbeatResponse
	if _, err := c.post(ctx, "heartbeat", protocol.Path(protocol.HeartbeatRoute, c.workerID), hb, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// claim returns nil and no error when there is no job (204).
func (c *client) claim(ctx context.Context, req *protocol.ClaimRequest) (*protocol.Assignment, error) {
	var a protocol.Assignment
	got, err := c.post(ctx, "claim", protocol.Path(protocol.ClaimRoute, c.workerID), req, &a)
	if err != nil || !got {
		return nil, err
	}
	if !protocol.ValidID(a.JobID) || a.Attempt <= 0 || a.Token == "" || a.OutputKey == "" {
		return nil, fmt.Errorf("claim: the control plane answered an incomplete assignment (job %q, attempt %d)", a.JobID, a.Attempt)
	}
	return &a, nil
}

func (c *client) progress(ctx context.Context, jobID string, req *protocol.ProgressRequest) error {
	_, err := c.post(ctx, "progress", protocol.Path(protocol.ProgressRoute, jobID), req, nil)
	return err
}

func (c *client) complete(ctx context.Context, jobID string, req *protocol.CompleteRequest) error {
	_, err := c.post(ctx, "complete", protocol.Path(protocol.CompleteRoute, jobID), req, nil)
	return err
}

func (c *client) fail(ctx context.Context, jobID string, req *protocol.FailRequest) error {
	_, err := c.post(ctx, "fail", protocol.Path(protocol.FailRoute, jobID), req, nil)
	return err
}

func (c *client) release(ctx context.Context, jobID string, req *protocol.ReleaseRequest) error {
	_, err := c.post(ctx, "release", protocol.Path(protocol.ReleaseRoute, jobID), req, nil)
	return err
}

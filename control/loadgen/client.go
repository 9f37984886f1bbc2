package loadgen

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

	"github.com/avatargen/musetalk/protocol"
)

// maxAnswer bounds how much of an answer is read.
const maxAnswer = 1 << 20

// conn is one simulated caller's view of the control plane: it reuses its
// buffers between calls, so a loop that owns a conn allocates little per
// call. It is not safe for concurrent use; each loop has its own.
type conn struct {
	hc   *http.Client
	base string
	key  string
	req  bytes.Buffer
	resp bytes.Buffer
}

func newConn(hc *http.Client, base, key string) *conn {
	return &conn{hc: hc, base: base, key: key}
}

// callError is an answer with an unexpected status.
type callError struct {
	Status int
	Code   string
	Msg    string
}

func (e *callError) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.Code, e.Msg)
	}
	return fmt.Sprintf("HTTP %d", e.Status)
}

// stale reports whether err is the control plane's 409 saying the attempt
// is no longer current (stale_token or conflict).
func stale(err error) bool {
	var ce *callError
	return errors.As(err, &ce) && ce.Status == http.StatusConflict &&
		(ce.Code == protocol.CodeStaleToken || ce.Code == protocol.CodeConflict)
}

// postJSON sends v as JSON and decodes a 2xx answer into out (when not
// nil). It returns the answer's status; 204 is not an error.
func (c *conn) postJSON(ctx context.Context, path string, v, out any) (int, error) {
	c.req.Reset()
	if err := json.NewEncoder(&c.req).Encode(v); err != nil {
		return 0, fmt.Errorf("encoding the request: %w", err)
	}
	return c.do(ctx, http.MethodPost, path, "application/json", bytes.NewReader(c.req.Bytes()), nil, out)
}

// do sends one request and reads the whole answer (so the connection is
// reused).
func (c *conn) do(ctx context.Context, method, path, contentType string, body io.Reader, hdr http.Header, out any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return 0, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, err
	}
	defer resp.Body.Close()
	c.resp.Reset()
	if _, err := c.resp.ReadFrom(io.LimitReader(resp.Body, maxAnswer)); err != nil {
		return resp.StatusCode, fmt.Errorf("reading the answer: %w", err)
	}
	switch {
	case resp.StatusCode == http.StatusNoContent:
		return resp.StatusCode, nil
	case resp.StatusCode/100 == 2:
		if out != nil {
			if err := json.Unmarshal(c.resp.Bytes(), out); err != nil {
				return resp.StatusCode, fmt.Errorf("decoding the answer: %w", err)
			}
		}
		return resp.StatusCode, nil
	}
	e := &callError{Status: resp.StatusCode}
	var eb protocol.ErrorBody
	if json.Unmarshal(c.resp.Bytes(), &eb) == nil {
		e.Code, e.Msg = eb.Error.Code, eb.Error.Message
	} else {
		e.Msg = strings.TrimSpace(string(c.resp.Bytes()[:min(c.resp.Len(), 200)]))
	}
	return resp.StatusCode, e
}

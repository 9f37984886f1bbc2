// Package controlblob is a blob.Store that keeps objects in the control
// plane's own object store over HTTP, through the worker routes under
// protocol.InternalBlobPath (GET, HEAD, PUT, DELETE {base}/internal/main/blobs/{key}),
// authenticated with the internal API key. Workers use it when they have no
// B2 credentials of their own.
package controlblob

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/propagation"

	"github.com/avatargen/musetalk/blob"
	"github.com/avatargen/musetalk/protocol"
)

// Store talks to one control plane. It is safe for concurrent use.
type Store struct {
	base   *url.URL
	apiKey string
	hc     *http.Client
}

var _ blob.Store = (*Store)(nil)

// New returns a store for the control plane at baseURL (http or https,
// without credentials), sending apiKey as a bearer token. A nil hc uses a
// plain http.Client; requests are bounded by their contexts.
func New(baseURL, apiKey string, hc *http.Client) (*Store, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("controlblob: the base URL is not an http:// or https:// URL with a host")
	}
	if u.User != nil {
		return nil, errors.New("controlblob: the base URL must not carry credentials")
	}
	if apiKey == "" {
		return nil, errors.New("controlblob: an internal API key is required")
	}
	if hc == nil {
		hc = &http.Client{}
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return &Store{base: u, apiKey: apiKey, hc: hc}, nil
}

// StatusError is an unexpected HTTP answer from the control plane.
type StatusError struct {
	Op      string // get, stat, put, delete
	Key     string
	Status  int
	Code    string // the error body's code, when it had one
	Message string
}

func (e *StatusError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	return fmt.Sprintf("controlblob: %s %s: HTTP %d: %s", e.Op, e.Key, e.Status, msg)
}

// Temporary reports whether the control plane may answer differently later
// (5xx, 408, 429).
func (e *StatusError) Temporary() bool {
	return e.Status >= 500 || e.Status == http.StatusTooManyRequests || e.Status == http.StatusRequestTimeout
}

func (s *Store) url(key string) string {
	segs := strings.Split(key, "/")
	for i, seg := range segs {
		segs[i] = url.PathEscape(seg)
	}
	u := *s.base
	u.RawPath = u.Path + protocol.InternalBlobPath + strings.Join(segs, "/")
	u.Path = s.base.Path + protocol.InternalBlobPath + key
	return u.String()
}

func (s *Store) do(ctx context.Context, method, key string, body io.Reader, size int64, header ...string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, s.url(key), body)
	if err != nil {
		return nil, fmt.Errorf("controlblob: %s %s: %w", strings.ToLower(method), key, err)
	}
	req.Header.Set("Authorization", "Bearer "+s.apiKey)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	// A download or upload of an attempt continues its trace.
	propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(req.Header))
	if body != nil {
		req.ContentLength = size
		req.Header.Set("Content-Type", "application/octet-stream")
		if size == 0 {
			req.Body = http.NoBody
		}
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("controlblob: %s %s: %w", strings.ToLower(method), key, err)
	}
	return resp, nil
}

// statusError reads resp's error body and closes it.
func statusError(op, key string, resp *http.Response) error {
	defer resp.Body.Close()
	e := &StatusError{Op: op, Key: key, Status: resp.StatusCode}
	var body protocol.ErrorBody
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&body); err == nil {
		e.Code, e.Message = body.Error.Code, body.Error.Message
	}
	if resp.StatusCode == http.StatusNotFound {
		return fmt.Errorf("%w: %w", blob.ErrNotFound, e)
	}
	return e
}

// Put uploads r under key. The control plane accepts only fenced uploads
// of attempts' outputs (see PutAttempt); Put sends no fence, so it answers
// 400.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	return s.put(ctx, key, r, size)
}

// PutAttempt uploads an attempt's output under key (the attempt's
// output_key), fenced with the attempt's number and fencing token: the
// control plane refuses it with 409 stale_token (a *StatusError) once the
// attempt is no longer the job's current one.
func (s *Store) PutAttempt(ctx context.Context, key string, r io.Reader, size int64, attempt int, token string) error {
	if attempt < 1 || token == "" {
		return errors.New("controlblob: an attempt's upload needs its attempt number and fencing token")
	}
	return s.put(ctx, key, r, size, protocol.AttemptHeader, strconv.Itoa(attempt), protocol.TokenHeader, token)
}

func (s *Store) put(ctx context.Context, key string, r io.Reader, size int64, header ...string) error {
	if err := blob.ValidateKey(key); err != nil {
		return err
	}
	if size < 0 {
		size = -1
	}
	resp, err := s.do(ctx, http.MethodPut, key, r, size, header...)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return statusError("put", key, resp)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}

// Get opens the object; a missing key wraps blob.ErrNotFound.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := blob.ValidateKey(key); err != nil {
		return nil, err
	}
	resp, err := s.do(ctx, http.MethodGet, key, nil, 0)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, statusError("get", key, resp)
	}
	return resp.Body, nil
}

// Stat describes the object with a HEAD request; a missing key wraps
// blob.ErrNotFound.
func (s *Store) Stat(ctx context.Context, key string) (blob.Info, error) {
	if err := blob.ValidateKey(key); err != nil {
		return blob.Info{}, err
	}
	resp, err := s.do(ctx, http.MethodHead, key, nil, 0)
	if err != nil {
		return blob.Info{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return blob.Info{}, statusError("stat", key, resp)
	}
	resp.Body.Close()
	info := blob.Info{Key: key, Size: resp.ContentLength}
	if n, err := strconv.ParseInt(resp.Header.Get("Content-Length"), 10, 64); err == nil {
		info.Size = n
	}
	if t, err := http.ParseTime(resp.Header.Get("Last-Modified")); err == nil {
		info.Modified = t.UTC()
	} else {
		info.Modified = time.Time{}
	}
	return info, nil
}

// Delete removes the object; a missing key is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := blob.ValidateKey(key); err != nil {
		return err
	}
	resp, err := s.do(ctx, http.MethodDelete, key, nil, 0)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 == 2 {
		resp.Body.Close()
		return nil
	}
	err = statusError("delete", key, resp)
	if errors.Is(err, blob.ErrNotFound) {
		return nil
	}
	return err
}

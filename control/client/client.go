// Package client is a Go client for the control plane's public API
// (docs/API.md): submit a job with its avatar and audio files, read its
// state, wait for it with progress, download its result, cancel it.
//
// It speaks only the public routes of package protocol, with the bearer key
// given to New (none when empty: the embedded default on loopback). Every
// error answer of the server comes back as an *Error carrying its status,
// code and message.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/avatargen/musetalk/internal/outfile"
	"github.com/avatargen/musetalk/protocol"
)

// Defaults of the polling in Wait.
const (
	DefaultPollMin = 250 * time.Millisecond
	DefaultPollMax = 5 * time.Second
	// DefaultMaxPollErrors is how many polls in a row Wait lets fail with a
	// transient error (the network, 5xx, 429) before it gives up.
	DefaultMaxPollErrors = 8
)

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 64 << 10

// Client calls one control plane. It is safe for concurrent use.
type Client struct {
	base          *url.URL
	apiKey        string
	hc            *http.Client
	pollMin       time.Duration
	pollMax       time.Duration
	maxPollErrors int
}

// Option adjusts a Client made by New.
type Option func(*Client)

// WithHTTPClient makes the client send its requests through hc instead of
// a plain http.Client. Downloads and uploads can be long, so hc should have
// no overall Timeout; every call takes a context instead.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) { c.hc = hc }
}

// WithPolling sets the polling of Wait: the first wait between two reads of
// the job is min; it grows by half while nothing changes, up to max, and
// starts again from min on every change. maxErrors is how many transient
// failures in a row Wait accepts. Values <= 0 keep the defaults.
func WithPolling(min, max time.Duration, maxErrors int) Option {
	return func(c *Client) {
		if min > 0 {
			c.pollMin = min
		}
		if max > 0 {
			c.pollMax = max
		}
		if maxErrors > 0 {
			c.maxPollErrors = maxErrors
		}
	}
}

// New returns a client of the control plane at baseURL (http or https, with
// an optional path prefix), authenticating with apiKey as a bearer key when
// it is not empty.
func New(baseURL, apiKey string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimSpace(baseURL))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("control plane URL %q: want http:// or https:// with a host", baseURL)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("control plane URL %q: must not carry credentials, a query or a fragment", u.Redacted())
	}
	if strings.ContainsAny(apiKey, "\r\n") {
		return nil, errors.New("API key: must be one line")
	}
	c := &Client{
		base:          u,
		apiKey:        strings.TrimSpace(apiKey),
		hc:            &http.Client{},
		pollMin:       DefaultPollMin,
		pollMax:       DefaultPollMax,
		maxPollErrors: DefaultMaxPollErrors,
	}
	for _, o := range opts {
		o(c)
	}
	if c.pollMax < c.pollMin {
		c.pollMax = c.pollMin
	}
	return c, nil
}

// Error is an error answer of the control plane.
type Error struct {
	Status  int    // HTTP status
	Code    string // protocol.Code*, e.g. "bad_request"; empty when the answer had no error body
	Message string // the server's message, for people
}

func (e *Error) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status)
	}
	return fmt.Sprintf("%s (HTTP %d %s)", e.Message, e.Status, e.Code)
}

// transient reports whether trying the same call again later may succeed.
func (e *Error) transient() bool {
	return e.Status >= 500 || e.Status == http.StatusTooManyRequests
}

// HasCode reports whether err is, or wraps, an *Error with the given code.
func HasCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// JobError is what Wait returns when the job ended failed or cancelled.
type JobError struct {
	ID      string
	State   protocol.JobState
	Message string // the job's error, empty when there is none
}

func (e *JobError) Error() string {
	msg := fmt.Sprintf("job %s %s", e.ID, e.State)
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// SubmitRequest is a job to submit with its files. Only AvatarPath and
// AudioPath are required.
type SubmitRequest struct {
	AvatarPath     string              // video or still image of the face
	AudioPath      string              // speech track
	Params         protocol.JobParams  // zero values: the engine's defaults
	IdempotencyKey string              // a repeat with the same key returns the first job
	Priority       int                 // -100..100, higher runs first
	WorkerType     protocol.WorkerType // pin to a pool; empty: any
	AvatarID       string              // cache identity of the avatar; empty: from its content
}

// Submit uploads the two files and creates the job. The files are streamed
// from disk (never read whole into memory) with an exact Content-Length, so
// the server can refuse an oversized upload before it is sent. It returns
// the job as the server answered: a new one, or the first job of a repeated
// idempotency key.
func (c *Client) Submit(ctx context.Context, req SubmitRequest) (protocol.JobView, error) {
	var job protocol.JobView
	if err := req.Params.Validate(); err != nil {
		return job, err
	}
	body, size, closeFiles, err := multipartBody(&req)
	if err != nil {
		return job, err
	}
	defer closeFiles()
	hreq, err := c.newRequest(ctx, http.MethodPost, protocol.Path(protocol.SubmitRoute), body.reader)
	if err != nil {
		return job, err
	}
	hreq.ContentLength = size
	hreq.Header.Set("Content-Type", body.contentType)
	err = c.do(hreq, &job)
	if err != nil {
		return job, fmt.Errorf("submitting the job: %w", err)
	}
	return job, nil
}

// multipartParts is a multipart body laid out as a reader.
type multipartParts struct {
	reader      io.Reader
	contentType string
}

// multipartBody opens the two files and lays out the multipart form around
// them: the form fields and part headers are small and built in memory, the
// file contents are read from disk as the body is sent. It returns the
// body, its exact length and a function that closes the files; on error
// nothing is left open.
func multipartBody(req *SubmitRequest) (parts multipartParts, size int64, closeFiles func(), err error) {
	var files []*os.File
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	defer func() {
		if err != nil {
			closeAll()
		}
	}()
	params, err := json.Marshal(req.Params)
	if err != nil {
		return parts, 0, nil, fmt.Errorf("encoding params: %w", err)
	}
	fields := [][2]string{
		{"params", string(params)},
		{"idempotency_key", req.IdempotencyKey},
		{"worker_type", string(req.WorkerType)},
		{"avatar_id", req.AvatarID},
	}
	if req.Priority != 0 {
		fields = append(fields, [2]string{"priority", strconv.Itoa(req.Priority)})
	}
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, f := range fields {
		if f[1] == "" {
			continue
		}
		if err := mw.WriteField(f[0], f[1]); err != nil {
			return parts, 0, nil, fmt.Errorf("building the form: %w", err)
		}
	}
	var readers []io.Reader
	cut := func() { // the bytes written so far become the next piece
		piece := bytes.Clone(buf.Bytes())
		buf.Reset()
		readers = append(readers, bytes.NewReader(piece))
		size += int64(len(piece))
	}
	for _, in := range [][2]string{{"avatar", req.AvatarPath}, {"audio", req.AudioPath}} {
		field, path := in[0], in[1]
		if path == "" {
			return parts, 0, nil, fmt.Errorf("%s: no file given", field)
		}
		f, err := os.Open(path)
		if err != nil {
			return parts, 0, nil, fmt.Errorf("%s: %w", field, err)
		}
		files = append(files, f)
		st, err := f.Stat()
		if err != nil {
			return parts, 0, nil, fmt.Errorf("%s: %w", field, err)
		}
		if !st.Mode().IsRegular() {
			return parts, 0, nil, fmt.Errorf("%s: %s is not a regular file", field, path)
		}
		if st.Size() == 0 {
			return parts, 0, nil, fmt.Errorf("%s: %s is empty", field, path)
		}
		if _, err := mw.CreateFormFile(field, filepath.Base(path)); err != nil {
			return parts, 0, nil, fmt.Errorf("building the form: %w", err)
		}
		cut()
		readers = append(readers, &exactReader{r: f, left: st.Size(), name: path})
		size += st.Size()
	}
	if err := mw.Close(); err != nil {
		return parts, 0, nil, fmt.Errorf("building the form: %w", err)
	}
	cut()
	parts.reader = io.MultiReader(readers...)
	parts.contentType = mw.FormDataContentType()
	return parts, size, closeAll, nil
}

// exactReader reads exactly the size a file had when it was opened, so the
// body matches its Content-Length: bytes appended meanwhile are not sent,
// and a file that shrank is an error naming it.
type exactReader struct {
	r    io.Reader
	left int64
	name string
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if errors.Is(err, io.EOF) {
		if e.left > 0 {
			return n, fmt.Errorf("%s: the file shrank while it was uploaded", e.name)
		}
		err = nil
	}
	if e.left == 0 && err == nil {
		return n, io.EOF
	}
	return n, err
}

// Ping asks the control plane's /healthz once: nil when it answers 200.
func (c *Client) Ping(ctx context.Context) error {
	req, err := c.newRequest(ctx, http.MethodGet, protocol.Path(protocol.HealthzRoute), nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errorFrom(resp)
	}
	return nil
}

// WaitReachable pings the control plane until it answers 200, for at most
// maxWait: a server started a moment ago (`musetalk up &`) is not yet
// listening. onRetry (when not nil) is called with the error of each
// failed ping that will be retried. It returns nil once the server
// answers, ctx's error when ctx ends, and otherwise the last ping's error,
// wrapped with how long it waited. Answers that waiting cannot change
// (a 4xx) end it at once.
func (c *Client) WaitReachable(ctx context.Context, maxWait time.Duration, onRetry func(error)) error {
	start := time.Now()
	delay := 100 * time.Millisecond
	for {
		err := c.Ping(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		left := maxWait - time.Since(start)
		if !isTransient(err) || left <= 0 {
			if maxWait > 0 {
				return fmt.Errorf("the control plane at %s did not answer within %s: %w", c.base, maxWait.Round(time.Second), err)
			}
			return fmt.Errorf("the control plane at %s: %w", c.base, err)
		}
		if onRetry != nil {
			onRetry(err)
		}
		t := time.NewTimer(min(delay, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		delay = min(delay*2, 2*time.Second)
	}
}

// Get returns the job with its attempt history.
func (c *Client) Get(ctx context.Context, id string) (protocol.JobView, error) {
	var job protocol.JobView
	if err := checkID(id); err != nil {
		return job, err
	}
	req, err := c.newRequest(ctx, http.MethodGet, protocol.Path(protocol.GetJobRoute, id), nil)
	if err != nil {
		return job, err
	}
	if err := c.do(req, &job); err != nil {
		return job, fmt.Errorf("reading job %s: %w", id, err)
	}
	return job, nil
}

// Workers returns the worker registry: each worker's state, job and
// cached avatars.
func (c *Client) Workers(ctx context.Context) ([]protocol.WorkerView, error) {
	req, err := c.newRequest(ctx, http.MethodGet, protocol.Path(protocol.ListWorkersRoute), nil)
	if err != nil {
		return nil, err
	}
	var list protocol.WorkerList
	if err := c.do(req, &list); err != nil {
		return nil, fmt.Errorf("listing workers: %w", err)
	}
	return list.Workers, nil
}

// Cancel cancels a queued or running job and returns it. Cancelling a
// cancelled job succeeds again; a finished one answers an *Error with code
// protocol.CodeConflict.
func (c *Client) Cancel(ctx context.Context, id string) (protocol.JobView, error) {
	var job protocol.JobView
	if err := checkID(id); err != nil {
		return job, err
	}
	req, err := c.newRequest(ctx, http.MethodPost, protocol.Path(protocol.CancelJobRoute, id), nil)
	if err != nil {
		return job, err
	}
	if err := c.do(req, &job); err != nil {
		return job, fmt.Errorf("cancelling job %s: %w", id, err)
	}
	return job, nil
}

// Wait polls the job until it reaches a final state or ctx is done, calling
// onUpdate (when not nil) with the first view and with every view whose
// state or progress differs from the last one. It returns the final view;
// the error is nil when the job succeeded, a *JobError when it failed or was
// cancelled, ctx's error when ctx ended first, and the last error when more
// than the allowed transient failures came in a row. Errors that cannot go
// away by waiting (401, 404, ...) end Wait at once.
func (c *Client) Wait(ctx context.Context, id string, onUpdate func(protocol.JobView)) (protocol.JobView, error) {
	var last protocol.JobView
	if err := checkID(id); err != nil {
		return last, err
	}
	delay := c.pollMin
	failures := 0
	seen := false
	for {
		job, err := c.Get(ctx, id)
		switch {
		case err == nil:
			failures = 0
			if !seen || changed(last, job) {
				delay = c.pollMin
				if onUpdate != nil {
					onUpdate(job)
				}
			} else {
				delay = min(delay+delay/2, c.pollMax)
			}
			last, seen = job, true
			if job.State.Final() {
				if job.State == protocol.JobSucceeded {
					return job, nil
				}
				return job, &JobError{ID: job.ID, State: job.State, Message: job.Error}
			}
		case ctx.Err() != nil:
			return last, ctx.Err()
		case isTransient(err):
			failures++
			if failures > c.maxPollErrors {
				return last, fmt.Errorf("waiting for job %s: giving up after %d failed polls: %w", id, failures, err)
			}
			delay = min(delay*2, c.pollMax)
		default:
			return last, err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return last, ctx.Err()
		case <-t.C:
		}
	}
}

// changed reports whether b shows something a watcher would want to see
// that a did not.
func changed(a, b protocol.JobView) bool {
	if a.State != b.State || a.Attempt != b.Attempt || a.Error != b.Error {
		return true
	}
	if (a.Progress == nil) != (b.Progress == nil) {
		return true
	}
	return a.Progress != nil && *a.Progress != *b.Progress
}

// isTransient reports whether err may go away by trying again: a failure to
// reach the server, or a 5xx or 429 answer.
func isTransient(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.transient()
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

// Download writes the succeeded job's result to w and returns its size. A
// job that has not succeeded answers an *Error with code
// protocol.CodeNotReady. A result cut off on the way is an error.
func (c *Client) Download(ctx context.Context, id string, w io.Writer) (int64, error) {
	if err := checkID(id); err != nil {
		return 0, err
	}
	req, err := c.newRequest(ctx, http.MethodGet, protocol.Path(protocol.JobResultRoute, id), nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("downloading the result of job %s: %w", id, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("downloading the result of job %s: %w", id, errorFrom(resp))
	}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("downloading the result of job %s: %w", id, err)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return n, fmt.Errorf("downloading the result of job %s: got %d of %d bytes", id, n, resp.ContentLength)
	}
	return n, nil
}

// DownloadFile writes the succeeded job's result to path. The file appears
// whole or not at all: the result goes to a temporary file beside path,
// which is renamed over path once complete.
func (c *Client) DownloadFile(ctx context.Context, id, path string) (int64, error) {
	dir := filepath.Dir(path)
	tmp, err := outfile.CreateTemp(dir, "."+filepath.Base(path)+".part-*")
	if err != nil {
		return 0, fmt.Errorf("making a file for the result: %w", err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	n, err := c.Download(ctx, id, tmp)
	if err != nil {
		return n, err
	}
	if err := tmp.Sync(); err != nil {
		return n, fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return n, fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return n, fmt.Errorf("moving the result to %s: %w", path, err)
	}
	done = true
	return n, nil
}

// BaseURL is the control plane's URL the client was made with.
func (c *Client) BaseURL() string { return c.base.String() }

// JobURL is the address of the job's JSON view, for people to look at.
func (c *Client) JobURL(id string) string {
	return c.base.JoinPath(protocol.Path(protocol.GetJobRoute, id)).String()
}

// checkID refuses ids that could not name a job, before they reach a URL.
func checkID(id string) error {
	if !protocol.ValidID(id) {
		return fmt.Errorf("job id %q: not a valid id (1-128 of A-Z a-z 0-9 . _ : -)", id)
	}
	return nil
}

// newRequest builds a request of the route path under the base URL, with
// the bearer key.
func (c *Client) newRequest(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base.JoinPath(path).String(), body)
	if err != nil {
		return nil, fmt.Errorf("building the request: %w", err)
	}
	if c.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.apiKey)
	}
	req.Header.Set("Accept", "application/json")
	return req, nil
}

// do sends req and decodes a 2xx JSON answer into out, or returns the
// error answer as an *Error.
func (c *Client) do(req *http.Request, out any) error {
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return errorFrom(resp)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("reading the answer (HTTP %d): %w", resp.StatusCode, err)
	}
	return nil
}

// errorFrom reads an error answer: the protocol's error body when there is
// one, else the start of whatever the body says.
func errorFrom(resp *http.Response) *Error {
	e := &Error{Status: resp.StatusCode}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var body protocol.ErrorBody
	if json.Unmarshal(data, &body) == nil && body.Error.Message != "" {
		e.Code, e.Message = body.Error.Code, body.Error.Message
		return e
	}
	msg := strings.TrimSpace(string(data))
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	e.Message = msg
	return e
}

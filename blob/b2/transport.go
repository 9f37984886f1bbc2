package b2

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// op is the retry budget of one Store call. Every HTTP request made for
// the call carries it in its context; each transient failure spends one
// unit, and when the budget is gone the call's context is cancelled with
// ErrRetriesExhausted as the cause, which ends every loop working for it.
type op struct {
	max    int
	cancel context.CancelCauseFunc // nil for requests made outside a call

	mu       sync.Mutex
	failures int
}

type opKey struct{}

func opFrom(ctx context.Context) *op {
	o, _ := ctx.Value(opKey{}).(*op)
	return o
}

// fail records a transient failure. It returns the number of failures so
// far, and false once the budget is spent (the call is then cancelled).
func (o *op) fail(desc string) (int, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.failures++
	if o.failures > o.max {
		if o.cancel != nil {
			o.cancel(fmt.Errorf("%w (%d transient failures); last: %s", ErrRetriesExhausted, o.failures, desc))
		}
		return o.failures, false
	}
	return o.failures, true
}

// transport carries every request (blazer's base package makes one per
// API call and retries nothing). It retries requests that can be replayed
// (API calls, downloads) on transient failures with capped, jittered
// exponential backoff; for uploads, whose bodies cannot be replayed, it
// waits the backoff and hands the failure back (the caller gets a new
// upload URL, as B2 asks). Every transient failure, and every failed
// upload, is charged to the call's budget.
//
// It also renews expired account tokens: base keeps the token inside its
// account object, which other goroutines read, so instead of replacing
// that object the transport re-authorizes once (single flight), sends the
// fresh token wherever a request carries the one base holds, and replays
// the request.
type transport struct {
	next          http.RoundTripper
	authURL       string
	keyID, appKey string
	baseDelay     time.Duration
	maxDelay      time.Duration
	maxRetries    int

	sem chan struct{} // one re-authorization at a time

	mu      sync.Mutex
	heldTok string // the account token base holds
	curTok  string // the token sent in its place
}

func newTransport(cfg Config, next http.RoundTripper, endpoint string) *transport {
	return &transport{
		next:       next,
		authURL:    endpoint + "/b2api/v3/b2_authorize_account",
		keyID:      cfg.KeyID,
		appKey:     cfg.AppKey,
		baseDelay:  cfg.RetryBackoff,
		maxDelay:   cfg.MaxBackoff,
		maxRetries: cfg.MaxRetries,
		sem:        make(chan struct{}, 1),
	}
}

// token returns the account token to put on requests we build ourselves.
func (t *transport) token() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.heldTok
}

// delay is the wait before retry number n (from 1), at least retryAfter
// but never more than maxDelay.
func (t *transport) delay(n int, retryAfter time.Duration) time.Duration {
	d := t.maxDelay
	if n < 30 {
		if e := t.baseDelay << (n - 1); e > 0 && e < d {
			d = e
		}
	}
	d = d/2 + rand.N(d/2+1)
	if retryAfter > d {
		d = min(retryAfter, t.maxDelay)
	}
	return d
}

func transientStatus(code int) bool {
	return code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500
}

func isUpload(method string) bool {
	return method == "b2_upload_file" || method == "b2_upload_part"
}

// RoundTrip implements http.RoundTripper.
func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	o := opFrom(ctx)
	if o == nil {
		o = &op{max: t.maxRetries}
	}
	method := req.Header.Get("X-Blazer-Method")
	if method == "" {
		method = req.Method + " " + req.URL.Path
	}
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		out, sent, err := t.prepare(req, attempt)
		if err != nil {
			return nil, err
		}
		resp, err := t.next.RoundTrip(out)
		var desc string
		var retryAfter time.Duration
		switch {
		case err != nil:
			if cerr := ctx.Err(); cerr != nil {
				return nil, cerr // base recognises only the bare context errors
			}
			desc = fmt.Sprintf("%s: %v", method, err)
		case method == "b2_authorize_account" && resp.StatusCode == http.StatusOK:
			if err := t.capture(resp); err != nil {
				return nil, err
			}
			return resp, nil
		case resp.StatusCode == http.StatusUnauthorized && method != "b2_authorize_account":
			code := peekCode(resp)
			expired := code == "expired_auth_token" || code == "bad_auth_token" || (code == "" && req.Method == http.MethodHead)
			if sent == "" || !expired || !replayable {
				// Upload tokens: the caller gets a new upload URL; charge
				// it so that loop is bounded too.
				if isUpload(method) {
					o.fail(fmt.Sprintf("%s: 401 %s", method, code))
				}
				return resp, nil
			}
			if _, ok := o.fail(method + ": account token expired"); !ok {
				return resp, nil
			}
			if rerr := t.reauth(ctx, o, sent); rerr != nil {
				return resp, nil // the caller reports the 401 (or the context error)
			}
			discard(resp)
			continue
		case transientStatus(resp.StatusCode):
			desc = fmt.Sprintf("%s: HTTP %d %s", method, resp.StatusCode, peekCode(resp))
			if s, perr := strconv.Atoi(resp.Header.Get("Retry-After")); perr == nil && s > 0 {
				retryAfter = time.Duration(s) * time.Second
			}
		default:
			if isUpload(method) && resp.StatusCode != http.StatusOK {
				o.fail(fmt.Sprintf("%s: HTTP %d", method, resp.StatusCode)) // may be retried with a new URL
			}
			return resp, nil
		}
		// A transient failure.
		n, ok := o.fail(desc)
		if !ok {
			if resp != nil {
				return resp, nil
			}
			if o.cancel != nil {
				return nil, ctx.Err()
			}
			return nil, err
		}
		if !replayable {
			// Hand it back; the caller gets a new upload URL and resends,
			// but not at once.
			if serr := sleepCtx(ctx, t.delay(n, retryAfter)); serr != nil {
				discard(resp)
				return nil, serr
			}
			return resp, err
		}
		discard(resp)
		if serr := sleepCtx(ctx, t.delay(n, retryAfter)); serr != nil {
			return nil, serr
		}
	}
}

// prepare copies req for an attempt: a fresh body for a replay, and the
// current account token in place of the one base holds.
func (t *transport) prepare(req *http.Request, attempt int) (*http.Request, string, error) {
	out := req.Clone(req.Context())
	if attempt > 0 && req.GetBody != nil {
		body, err := req.GetBody()
		if err != nil {
			return nil, "", fmt.Errorf("replaying request body: %w", err)
		}
		out.Body = body
	}
	var sent string
	if tok := req.Header.Get("Authorization"); tok != "" {
		t.mu.Lock()
		if tok == t.heldTok {
			sent = t.curTok
		}
		t.mu.Unlock()
		if sent != "" {
			out.Header.Set("Authorization", sent)
		}
	}
	return out, sent, nil
}

// capture records the account token of the authorization New made.
func (t *transport) capture(resp *http.Response) error {
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("reading authorization response: %w", err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	var a struct {
		Token string `json:"authorizationToken"`
	}
	if err := json.Unmarshal(body, &a); err != nil || a.Token == "" {
		return fmt.Errorf("authorization response has no token (%d bytes)", len(body))
	}
	t.mu.Lock()
	t.heldTok, t.curTok = a.Token, a.Token
	t.mu.Unlock()
	return nil
}

// reauth replaces the account token used, unless another request already
// did.
func (t *transport) reauth(ctx context.Context, o *op, used string) error {
	select {
	case t.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-t.sem }()
	t.mu.Lock()
	cur := t.curTok
	t.mu.Unlock()
	if cur != used {
		return nil
	}
	for {
		tok, transient, err := t.authorize(ctx)
		if err == nil {
			t.mu.Lock()
			t.curTok = tok
			t.mu.Unlock()
			return nil
		}
		if !transient {
			return err
		}
		n, ok := o.fail("re-authorizing: " + err.Error())
		if !ok {
			return err
		}
		if serr := sleepCtx(ctx, t.delay(n, 0)); serr != nil {
			return serr
		}
	}
}

// authorize calls b2_authorize_account and returns the new account token.
func (t *transport) authorize(ctx context.Context) (tok string, transient bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.authURL, nil)
	if err != nil {
		return "", false, err
	}
	req.SetBasicAuth(t.keyID, t.appKey)
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		if ctx.Err() != nil {
			return "", false, ctx.Err()
		}
		return "", true, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		code := peekCode(resp)
		if transientStatus(resp.StatusCode) {
			return "", true, fmt.Errorf("b2_authorize_account: HTTP %d %s", resp.StatusCode, code)
		}
		if resp.StatusCode == http.StatusUnauthorized {
			return "", false, fmt.Errorf("%w: re-authorizing key id %q: HTTP 401 %s", ErrUnauthorized, t.keyID, code)
		}
		return "", false, fmt.Errorf("re-authorizing key id %q: HTTP %d %s", t.keyID, resp.StatusCode, code)
	}
	var a struct {
		Token string `json:"authorizationToken"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&a); err != nil || a.Token == "" {
		return "", true, fmt.Errorf("re-authorizing key id %q: response has no token", t.keyID)
	}
	return a.Token, false, nil
}

// peekCode returns the "code" of a B2 error body, leaving the body
// readable.
func peekCode(resp *http.Response) string {
	if resp.Body == nil {
		return ""
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(b), resp.Body), resp.Body}
	var e struct {
		Code string `json:"code"`
	}
	json.Unmarshal(b, &e)
	return e.Code
}

func discard(resp *http.Response) {
	if resp != nil && resp.Body != nil {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	}
}

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

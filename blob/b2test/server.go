// Package b2test is an in-memory server for the part of the Backblaze B2
// native API (v1 to v4 paths, v3 shapes) that github.com/Backblaze/blazer
// and blob/b2 use, with a programmable fault plan for tests.
//
// It checks the authorization token on every call (account tokens for API
// calls and downloads, upload tokens bound to their upload URL), the SHA1 of
// every upload and part (hex, "hex_digits_at_end", "do_not_verify"), part
// sizes against MinPartSize, large_file_sha1 when given, and that a large
// file has at least two parts.
//
// Besides Go methods (Inject, ExpireTokens, Calls, ...), a running server
// has an admin API for tests that drive it as a separate process:
//
//	POST   /_b2test/faults         body: Fault as JSON; adds it
//	DELETE /_b2test/faults         removes all faults
//	POST   /_b2test/expire-tokens  expires every token issued so far
//	GET    /_b2test/calls          {"b2_upload_file": 3, ...}
package b2test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"time"
)

// Config sets up a Server. Zero values take the defaults noted.
type Config struct {
	KeyID   string   // application key id; default "b2test-key-id"
	AppKey  string   // application key; default: random
	Buckets []string // buckets created at start; default {"b2test-bucket"}
	// MinPartSize is the absoluteMinimumPartSize: every part of a large
	// file but the last must be at least this big. Default 5_000_000, as B2.
	MinPartSize int64
	// RecommendedPartSize is reported by b2_authorize_account; default 100_000_000.
	RecommendedPartSize int64
	// Logger, if set, gets one debug line per request.
	Logger *slog.Logger
}

// Server is an in-memory B2. It is an http.Handler; NewServer and
// ListenAndServe also listen.
type Server struct {
	// URL is the base URL clients authorize against (the blob/b2 Endpoint),
	// set by NewServer and ListenAndServe.
	URL string
	// KeyID, AppKey and Bucket (the first bucket) are what clients use.
	KeyID, AppKey, Bucket string

	cfg       Config
	accountID string
	hs        *httptest.Server

	mu       sync.Mutex
	buckets  map[string]*bucket // by name
	files    map[string]*file   // every version and unfinished large file, by id
	tokens   map[string]*token
	calls    map[string]int
	faults   []*faultState
	seq      int64
	lastTime int64
}

type bucket struct {
	id, name, typ string
	revision      int
}

type file struct {
	id, name, bucketID, contentType string
	action                          string // "upload", "hide" or "start"
	sha1                            string // hex, or "none" for large files
	info                            map[string]string
	data                            []byte
	ts                              int64
	parts                           map[int]*part // unfinished large files
}

type part struct {
	sha1 string
	data []byte
	ts   int64
}

type token struct {
	kind    string // "account", "upload" or "part"
	target  string // bucket id (upload) or file id (part)
	path    string // the upload URL path the token is bound to
	expired bool
	inUse   bool
}

// New returns a Server that is not listening; serve it with any http.Server.
func New(cfg Config) *Server {
	if cfg.KeyID == "" {
		cfg.KeyID = "b2test-key-id"
	}
	if cfg.AppKey == "" {
		cfg.AppKey = "K" + rand.Text()
	}
	if len(cfg.Buckets) == 0 {
		cfg.Buckets = []string{"b2test-bucket"}
	}
	if cfg.MinPartSize <= 0 {
		cfg.MinPartSize = 5_000_000
	}
	if cfg.RecommendedPartSize <= 0 {
		cfg.RecommendedPartSize = 100_000_000
	}
	s := &Server{
		KeyID:     cfg.KeyID,
		AppKey:    cfg.AppKey,
		Bucket:    cfg.Buckets[0],
		cfg:       cfg,
		accountID: "acct" + strings.ToLower(rand.Text()[:12]),
		buckets:   map[string]*bucket{},
		files:     map[string]*file{},
		tokens:    map[string]*token{},
		calls:     map[string]int{},
	}
	for _, name := range cfg.Buckets {
		s.CreateBucket(name)
	}
	return s
}

// NewServer starts a Server on a loopback port; Close stops it.
func NewServer(cfg Config) *Server {
	s := New(cfg)
	s.hs = httptest.NewServer(s)
	s.URL = s.hs.URL
	return s
}

// Close stops a server started by NewServer.
func (s *Server) Close() {
	if s.hs != nil {
		s.hs.Close()
	}
}

// ListenAndServe serves a new Server on addr (such as "127.0.0.1:0") until
// ctx is done. ready, if not nil, is called with the listening server
// (its URL, KeyID, AppKey and Bucket set) before requests are served.
func ListenAndServe(ctx context.Context, addr string, cfg Config, ready func(*Server)) error {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("b2test: listening on %s: %w", addr, err)
	}
	s := New(cfg)
	s.URL = "http://" + ln.Addr().String()
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	if ready != nil {
		ready(s)
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("b2test: serving on %s: %w", addr, err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := hs.Shutdown(sctx); err != nil {
			hs.Close()
		}
		<-errc
		return nil
	}
}

// CreateBucket adds a private bucket if none has that name.
func (s *Server) CreateBucket(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.createBucketLocked(name, "allPrivate")
}

func (s *Server) createBucketLocked(name, typ string) *bucket {
	if b, ok := s.buckets[name]; ok {
		return b
	}
	s.seq++
	b := &bucket{id: fmt.Sprintf("bkt%020d", s.seq), name: name, typ: typ, revision: 1}
	s.buckets[name] = b
	return b
}

// ExpireTokens expires every account, upload and part token issued so far:
// the next call using one gets 401 expired_auth_token.
func (s *Server) ExpireTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.tokens {
		t.expired = true
	}
}

// Calls returns how many requests for op (such as "b2_upload_part") the
// server has received, faulted ones included.
func (s *Server) Calls(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[op]
}

// AllCalls returns the request count of every operation seen.
func (s *Server) AllCalls() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]int, len(s.calls))
	for k, v := range s.calls {
		m[k] = v
	}
	return m
}

// ResetCalls zeroes the request counts.
func (s *Server) ResetCalls() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.calls)
}

// Object returns a copy of the current version of name in bucketName, if
// there is one and it is not hidden.
func (s *Server) Object(bucketName, name string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.currentLocked(bucketName, name)
	if f == nil {
		return nil, false
	}
	return slices.Clone(f.data), true
}

// Versions returns how many versions (uploads and hide markers) of name
// bucketName holds.
func (s *Server) Versions(bucketName, name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	if b := s.buckets[bucketName]; b != nil {
		for _, f := range s.files {
			if f.bucketID == b.id && f.name == name && f.action != "start" {
				n++
			}
		}
	}
	return n
}

// Unfinished returns the names of the large files started and neither
// finished nor cancelled in bucketName.
func (s *Server) Unfinished(bucketName string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var names []string
	if b := s.buckets[bucketName]; b != nil {
		for _, f := range s.files {
			if f.bucketID == b.id && f.action == "start" {
				names = append(names, f.name)
			}
		}
	}
	slices.Sort(names)
	return names
}

// PutObject stores data as a new version of name, as an upload from some
// other client would; info may be nil.
func (s *Server) PutObject(bucketName, name string, data []byte, info map[string]string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.buckets[bucketName]
	if b == nil {
		return fmt.Errorf("b2test: no bucket %q", bucketName)
	}
	s.addFileLocked(&file{
		name: name, bucketID: b.id, contentType: "application/octet-stream",
		action: "upload", sha1: sha1Hex(data), info: cloneInfo(info), data: slices.Clone(data),
	})
	return nil
}

// currentLocked returns the newest version of name if it is an upload.
func (s *Server) currentLocked(bucketName, name string) *file {
	b := s.buckets[bucketName]
	if b == nil {
		return nil
	}
	var cur *file
	for _, f := range s.files {
		if f.bucketID != b.id || f.name != name || f.action == "start" {
			continue
		}
		if cur == nil || f.ts > cur.ts {
			cur = f
		}
	}
	if cur == nil || cur.action != "upload" {
		return nil
	}
	return cur
}

func (s *Server) addFileLocked(f *file) {
	s.seq++
	f.id = fmt.Sprintf("4_z%s_f%016d", f.bucketID, s.seq)
	f.ts = s.nowLocked()
	s.files[f.id] = f
}

// nowLocked is a millisecond clock that never repeats, so versions of a
// name are strictly ordered.
func (s *Server) nowLocked() int64 {
	t := time.Now().UnixMilli()
	if t <= s.lastTime {
		t = s.lastTime + 1
	}
	s.lastTime = t
	return t
}

func (s *Server) newTokenLocked(kind, target, path string) string {
	tok := kind[:1] + "tok_" + rand.Text()
	s.tokens[tok] = &token{kind: kind, target: target, path: path}
	return tok
}

// apiError is a B2 error response.
type apiError struct {
	status     int
	code, msg  string
	retryAfter int
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s: %s", e.status, e.code, e.msg) }

func errf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

func writeError(w http.ResponseWriter, r *http.Request, e *apiError) {
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(e.retryAfter))
	}
	if r.Method == http.MethodHead {
		w.WriteHeader(e.status)
		return
	}
	writeJSON(w, e.status, map[string]any{"status": e.status, "code": e.code, "message": e.msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	w.Header().Set("Content-Length", fmt.Sprint(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

// ServeHTTP routes a B2 API, upload, download or admin request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/_b2test/") {
		s.admin(w, r)
		return
	}
	op, rest := route(r.URL.Path)
	s.mu.Lock()
	s.calls[op]++
	f := s.matchFault(op)
	s.mu.Unlock()
	if s.cfg.Logger != nil {
		s.cfg.Logger.Debug("b2test request", "op", op, "method", r.Method, "fault", f != nil)
	}
	realW := w
	if f != nil {
		if f.ExpireTokens {
			s.ExpireTokens()
		}
		if f.BytesPerSecond > 0 && r.Body != nil {
			r.Body = struct {
				*throttledReader
				closer
			}{&throttledReader{ctx: r.Context(), r: r.Body, bps: f.BytesPerSecond}, closer{r.Body}}
		}
		if f.Delay > 0 {
			// Read the body first: only then does the server notice a
			// client that gives up (and cancel r.Context()).
			if r.Body != nil && r.Body != http.NoBody {
				body, err := io.ReadAll(r.Body)
				if err != nil {
					return
				}
				r.Body = io.NopCloser(bytes.NewReader(body))
			}
			if err := sleepCtx(r.Context(), f.Delay); err != nil {
				return
			}
		}
		if f.Drop {
			drop(w)
			return
		}
		if f.Status != 0 {
			drain(r)
			code := f.Code
			if code == "" {
				code = codeForStatus(f.Status)
			}
			writeError(w, r, &apiError{status: f.Status, code: code, msg: "injected fault", retryAfter: f.RetryAfter})
			return
		}
		if f.DropResponse {
			w = &blackhole{h: http.Header{}}
			defer drop(realW)
		}
	}
	var err *apiError
	switch op {
	case "b2_authorize_account":
		err = s.authorize(w, r, rest)
	case "b2_download_file_by_name", "b2_download_file_by_id":
		err = s.download(w, r, op, f)
	case "b2_upload_file":
		err = s.uploadFile(w, r, rest)
	case "b2_upload_part":
		err = s.uploadPart(w, r, rest)
	default:
		if !isAPIOp(op) {
			err = errf(http.StatusNotFound, "not_found", "unknown operation %q", op)
			break
		}
		if r.Method != http.MethodPost {
			err = errf(http.StatusMethodNotAllowed, "method_not_allowed", "%s takes POST", op)
			break
		}
		if err = s.checkAccount(r); err != nil {
			break
		}
		var resp any
		resp, err = s.api(op, r)
		if err == nil {
			writeJSON(w, http.StatusOK, resp)
		}
	}
	if err != nil {
		drain(r) // so an uploading client reads the error, not a broken pipe
		writeError(w, r, err)
	}
}

// route splits a path into the B2 operation and what follows it.
func route(p string) (op, rest string) {
	if after, ok := strings.CutPrefix(p, "/file/"); ok {
		return "b2_download_file_by_name", after
	}
	after, ok := strings.CutPrefix(p, "/b2api/")
	if !ok {
		return "unknown", p
	}
	ver, after, _ := strings.Cut(after, "/")
	if len(ver) != 2 || ver[0] != 'v' || ver[1] < '1' || ver[1] > '4' {
		return "unknown", p
	}
	op, rest, _ = strings.Cut(after, "/")
	if op == "b2_authorize_account" {
		rest = ver
	}
	return op, rest
}

type closer struct{ c interface{ Close() error } }

// blackhole is a ResponseWriter that sends nothing.
type blackhole struct{ h http.Header }

func (b *blackhole) Header() http.Header         { return b.h }
func (b *blackhole) Write(p []byte) (int, error) { return len(p), nil }
func (b *blackhole) WriteHeader(int)             {}

func (c closer) Close() error { return c.c.Close() }

func drain(r *http.Request) {
	if r.Body != nil {
		buf := make([]byte, 32<<10)
		for {
			if _, err := r.Body.Read(buf); err != nil {
				return
			}
		}
	}
}

// drop closes the connection without answering.
func drop(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	conn.Close()
}

func (s *Server) admin(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/_b2test/faults" && r.Method == http.MethodPost:
		var f Fault
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&f); err != nil {
			writeError(w, r, errf(http.StatusBadRequest, "bad_request", "fault JSON: %v", err))
			return
		}
		if f.Op == "" {
			writeError(w, r, errf(http.StatusBadRequest, "bad_request", "fault needs an op (or \"*\")"))
			return
		}
		s.Inject(f)
		writeJSON(w, http.StatusOK, map[string]any{})
	case r.URL.Path == "/_b2test/faults" && r.Method == http.MethodDelete:
		s.ClearFaults()
		writeJSON(w, http.StatusOK, map[string]any{})
	case r.URL.Path == "/_b2test/expire-tokens" && r.Method == http.MethodPost:
		s.ExpireTokens()
		writeJSON(w, http.StatusOK, map[string]any{})
	case r.URL.Path == "/_b2test/calls" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, s.AllCalls())
	default:
		writeError(w, r, errf(http.StatusNotFound, "not_found", "no admin endpoint %s %s", r.Method, r.URL.Path))
	}
}

// checkAccount checks the account token of an API call or download.
func (s *Server) checkAccount(r *http.Request) *apiError {
	tok := r.Header.Get("Authorization")
	if tok == "" {
		tok = r.URL.Query().Get("Authorization")
	}
	if tok == "" {
		return errf(http.StatusUnauthorized, "bad_auth_token", "missing Authorization header")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tokens[tok]
	switch {
	case t == nil || t.kind != "account":
		return errf(http.StatusUnauthorized, "bad_auth_token", "invalid authorization token")
	case t.expired:
		return errf(http.StatusUnauthorized, "expired_auth_token", "Authorization token has expired")
	}
	return nil
}

// checkUploadToken checks and claims (inUse) the token of an upload to
// path; release it with the returned func.
func (s *Server) checkUploadToken(r *http.Request, kind string) (func(), *apiError) {
	tok := r.Header.Get("Authorization")
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tokens[tok]
	switch {
	case tok == "" || t == nil || t.kind != kind || t.path != r.URL.Path:
		return nil, errf(http.StatusUnauthorized, "bad_auth_token", "invalid upload authorization token for this URL")
	case t.expired:
		return nil, errf(http.StatusUnauthorized, "expired_auth_token", "Authorization token has expired")
	case t.inUse:
		return nil, errf(http.StatusBadRequest, "bad_request", "more than one upload using auth token")
	}
	t.inUse = true
	return func() {
		s.mu.Lock()
		t.inUse = false
		s.mu.Unlock()
	}, nil
}

func decodeJSON(r *http.Request, v any) *apiError {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20))
	if err := dec.Decode(v); err != nil {
		return errf(http.StatusBadRequest, "bad_request", "request body is not valid JSON: %v", err)
	}
	return nil
}

// validName applies B2's file name rules.
func validName(name string) *apiError {
	switch {
	case name == "":
		return errf(http.StatusBadRequest, "bad_request", "file name is empty")
	case len(name) > 1024:
		return errf(http.StatusBadRequest, "bad_request", "file name longer than 1024 bytes")
	case strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") || strings.Contains(name, "//"):
		return errf(http.StatusBadRequest, "bad_request", "file names must not start or end with '/' or contain '//': %q", name)
	}
	for _, c := range []byte(name) {
		if c < 32 || c == 127 {
			return errf(http.StatusBadRequest, "bad_request", "file name has a control character: %q", name)
		}
	}
	return nil
}

func cloneInfo(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

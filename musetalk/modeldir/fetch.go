package modeldir

import (
	"cmp"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/avatargen/musetalk/musetalk/model/weights"
)

// DefaultEndpoint is the Hugging Face hub [Fetch] uses unless told
// otherwise.
const DefaultEndpoint = "https://huggingface.co"

// FetchOptions configures [Fetch]. The zero value fetches what MuseTalk
// v1.5 needs from huggingface.co (or $HF_ENDPOINT).
type FetchOptions struct {
	// Versions selects the UNets to fetch ([V15] when empty).
	Versions []string
	// Endpoint is the Hugging Face hub to download from; "" means
	// $HF_ENDPOINT, else [DefaultEndpoint]. Files published elsewhere
	// (S3FD) come from their own URL.
	Endpoint string
	// S3FDURL, when set, is where S3FD's checkpoint is downloaded from
	// instead of its official address ([DefaultS3FDURL]), which no hub
	// mirror serves. The file is checked against its pinned sha256 and
	// size all the same.
	S3FDURL string
	// Client makes the requests; nil means a plain http.Client. Fetch
	// follows redirects itself (to read the hub's headers on the way), so
	// the client's CheckRedirect is not used.
	Client *http.Client
	// Progress, when set, is told about every file: once when it is found
	// present or starts, repeatedly while bytes arrive, once when done. It
	// is called from Fetch's goroutine.
	Progress func(FetchProgress)
	// Files replaces the file list (default: [Files](Versions...)), e.g.
	// for a mirror with other URLs.
	Files []File
	// Attempts is how many times one file is tried when a retry can help
	// (a dropped connection, a timeout, a 408, 429 or 5xx answer); each
	// retry resumes where the last stopped. Default 4.
	Attempts int
	// RetryDelay is the pause before the first retry, doubled before each
	// further one. Default 1 s.
	RetryDelay time.Duration
	// StallTimeout ends an attempt that receives nothing for this long
	// (no answer, or a body that stops flowing); the next attempt resumes.
	// Default 60 s.
	StallTimeout time.Duration
}

// FetchPhase says where a file is in [Fetch].
type FetchPhase string

// The phases [FetchOptions.Progress] reports.
const (
	// FetchPresent: the file (or its safetensors form) is already there
	// and is left alone.
	FetchPresent FetchPhase = "present"
	// FetchStart: the file is missing and is about to be requested from
	// URL (Total is its pinned size, or -1).
	FetchStart FetchPhase = "start"
	// FetchDownload: bytes are arriving (or a download starts, Done = the
	// bytes already in the .part file).
	FetchDownload FetchPhase = "download"
	// FetchVerify: the download is complete and its checksum is being
	// computed.
	FetchVerify FetchPhase = "verify"
	// FetchDone: the file is verified and in place.
	FetchDone FetchPhase = "done"
	// FetchRetry: attempt number Attempt failed with Err, which another
	// attempt may fix; it follows after a pause.
	FetchRetry FetchPhase = "retry"
	// FetchFailed: the file was not fetched; Err says why. Files skipped
	// because their host could not be reached are not reported (see
	// [UnreachableError]).
	FetchFailed FetchPhase = "failed"
)

// FetchProgress is one progress report of [Fetch].
type FetchProgress struct {
	// File is the file's slash path in the directory.
	File  string
	Phase FetchPhase
	// Done and Total count the file's bytes; Total is -1 while unknown.
	Done, Total int64
	// Verified names the check a FetchDone file passed: "sha256" (pinned
	// or declared by the hub), "git-sha1" (a small file's git blob id, as
	// the hub declares it), or "" when no checksum was known.
	Verified string
	// URL is where a FetchStart file is requested.
	URL string
	// Attempt is the number of the attempt that failed (FetchRetry).
	Attempt int
	// Err is the failure of FetchRetry and FetchFailed.
	Err error
}

// HTTPError is an unexpected HTTP answer.
type HTTPError struct {
	URL        string
	StatusCode int
	Status     string
}

func (e *HTTPError) Error() string { return fmt.Sprintf("GET %s: %s", e.URL, e.Status) }

// Temporary reports whether a retry may succeed (408, 429 and 5xx).
func (e *HTTPError) Temporary() bool {
	return e.StatusCode == http.StatusRequestTimeout || e.StatusCode == http.StatusTooManyRequests || e.StatusCode >= 500
}

// ChecksumError is a downloaded file whose digest is not the expected one.
// The bad download has been deleted.
type ChecksumError struct {
	// File is the file's slash path in the directory; URL where it came
	// from.
	File, URL string
	// Algorithm is "sha256", "git-sha1" or "size"; Want is the expected
	// hex digest (or, for a pinned prefix, its start) or byte count, Got
	// the actual one.
	Algorithm, Want, Got string
}

func (e *ChecksumError) Error() string {
	return fmt.Sprintf("%s from %s: %s mismatch: want %s, got %s (the download was deleted)", e.File, e.URL, e.Algorithm, e.Want, e.Got)
}

// UnreachableError is a host [Fetch] got no answer from before it had
// answered any request: its name does not resolve, it refuses the
// connection, there is no route to it, its TLS certificate is not
// accepted, or the connection failed every attempt. Fetch then tries no
// other file from that host; Skipped lists them.
type UnreachableError struct {
	// Host is the host (and port, if given) of the URL, File the file
	// whose download met the failure, Err the failure.
	Host, File string
	Err        error
	// Skipped are the files from Host that were not tried afterwards.
	Skipped []string
}

func (e *UnreachableError) Error() string {
	s := fmt.Sprintf("fetching %s: cannot reach %s: %v", e.File, e.Host, e.Err)
	if n := len(e.Skipped); n > 0 {
		s += fmt.Sprintf("; not tried: the %d other file(s) from %s (%s)", n, e.Host, strings.Join(e.Skipped, ", "))
	}
	return s
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// Fetch downloads into dir every file of opts' versions that is missing
// (in neither its official nor its safetensors form); a file present at its
// final name was verified before it was put there, so it is skipped.
//
// Each file is written to "<name>.part" and resumed from there with an HTTP
// Range request, by a retry or by a later Fetch (a server that ignores the
// Range starts it over). A finished download is checked against the
// pinned sha256 of its [File] and against the digest the hub declares (the
// X-Linked-Etag of a Git LFS file, which is its sha256; the ETag of a
// small file, which is its git blob id); a mismatch deletes it and is a
// *[ChecksumError]. Only a verified file is renamed to its final name.
//
// A file is tried again ([FetchOptions.Attempts]) only after a failure a
// retry may fix: a dropped connection, a timeout, a 408, 429 or 5xx
// answer. Other failures end the file at once: a name that does not
// resolve, a refused connection to a host that has not answered yet, no
// route to the host, a TLS or certificate error, any other 4xx answer, an
// invalid URL, a local file error, a checksum mismatch. A host that could
// not be reached at all is not asked for further files: they are skipped
// and listed once in its *[UnreachableError].
//
// Fetch goes on with the other files after one fails and returns every
// failure joined; it stops at once when ctx is done (the .part files stay
// for a resume) and returns its cause. A .part file with no bytes is
// removed. Two Fetches must not work on one directory at the same time.
func Fetch(ctx context.Context, dir string, opts FetchOptions) error {
	ft, err := newFetcher(dir, opts)
	if err != nil {
		return err
	}
	files := opts.Files
	if files == nil {
		if files, err = Files(opts.Versions...); err != nil {
			return err
		}
	}
	var errs []error
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		if ft.s3fdURL != "" && f.Kind == weights.KindS3FD && f.Repo == "" {
			f.URL = ft.s3fdURL
		}
		err := ft.fetchFile(ctx, f)
		var skipped *skipError
		switch {
		case err == nil || errors.As(err, &skipped):
		case ctx.Err() != nil:
			return err
		default:
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

type fetcher struct {
	dir      Dir
	endpoint string
	s3fdURL  string
	client   http.Client // a copy that does not follow redirects
	progress func(FetchProgress)
	attempts int
	delay    time.Duration
	stall    time.Duration
	hosts    map[string]*hostState // by URL host
}

// hostState is what one Fetch has learnt about a host.
type hostState struct {
	answered bool              // it sent an HTTP answer
	down     *UnreachableError // it could not be reached: ask it nothing more
}

func (ft *fetcher) host(h string) *hostState {
	st := ft.hosts[h]
	if st == nil {
		st = &hostState{}
		ft.hosts[h] = st
	}
	return st
}

func newFetcher(dir string, opts FetchOptions) (*fetcher, error) {
	endpoint := opts.Endpoint
	if endpoint == "" {
		endpoint = os.Getenv("HF_ENDPOINT")
	}
	if endpoint == "" {
		endpoint = DefaultEndpoint
	}
	if _, err := httpURL(endpoint); err != nil {
		return nil, fmt.Errorf("hub endpoint %q is not an http(s) URL", endpoint)
	}
	if opts.S3FDURL != "" {
		if _, err := httpURL(opts.S3FDURL); err != nil {
			return nil, fmt.Errorf("S3FD URL %q is not an http(s) URL", opts.S3FDURL)
		}
	}
	ft := &fetcher{
		dir:      Dir(dir),
		endpoint: strings.TrimRight(endpoint, "/"),
		s3fdURL:  opts.S3FDURL,
		progress: opts.Progress,
		attempts: opts.Attempts,
		delay:    opts.RetryDelay,
		stall:    cmp.Or(opts.StallTimeout, 60*time.Second),
		hosts:    map[string]*hostState{},
	}
	if opts.Client != nil {
		ft.client = *opts.Client
	}
	ft.client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if ft.progress == nil {
		ft.progress = func(FetchProgress) {}
	}
	if ft.attempts <= 0 {
		ft.attempts = 4
	}
	if ft.delay <= 0 {
		ft.delay = time.Second
	}
	return ft, nil
}

// httpURL parses s and checks it is an absolute http(s) URL with a host.
func httpURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q is not an absolute http(s) URL", s)
	}
	return u, nil
}

// DownloadURL returns where f is downloaded from with the given hub
// endpoint: its resolve URL on the hub's main revision, or its own URL.
func (f File) DownloadURL(endpoint string) string {
	if f.Repo == "" {
		return f.URL
	}
	var segs []string
	for _, s := range strings.Split(f.RepoPath, "/") {
		segs = append(segs, url.PathEscape(s))
	}
	return strings.TrimRight(endpoint, "/") + "/" + f.Repo + "/resolve/main/" + strings.Join(segs, "/")
}

// expected is what a download is checked against.
type expected struct {
	sha256  string // full digest or prefix, lower-case hex; "" if unknown
	gitSHA1 string // git blob id; "" if unknown
	size    int64  // -1 if unknown
}

func (ft *fetcher) fetchFile(ctx context.Context, f File) error {
	if _, err := ft.dir.Resolve(f); err == nil {
		ft.progress(FetchProgress{File: f.Path, Phase: FetchPresent, Done: -1, Total: -1})
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	final := ft.dir.Path(f)
	part := final + ".part"
	src := f.DownloadURL(ft.endpoint)
	if u, err := url.Parse(src); err == nil {
		if down := ft.host(u.Host).down; down != nil {
			down.Skipped = append(down.Skipped, f.Path)
			return &skipError{down}
		}
	}
	exp := expected{sha256: strings.ToLower(f.SHA256), size: -1}
	if f.Size > 0 {
		exp.size = f.Size
	}
	ft.progress(FetchProgress{File: f.Path, Phase: FetchStart, URL: src, Done: -1, Total: exp.size})
	err := ft.downloadRetrying(ctx, f, src, part, &exp)
	verified := ""
	if err == nil {
		verified, err = ft.verify(f, src, part, exp)
	}
	if err == nil {
		if err = os.Rename(part, final); err != nil {
			err = fmt.Errorf("fetching %s: %w", f.Path, err)
		}
	}
	if err != nil {
		if st, serr := os.Stat(part); serr == nil && st.Size() == 0 {
			os.Remove(part) // nothing to resume
		}
		if ctx.Err() == nil {
			ft.progress(FetchProgress{File: f.Path, Phase: FetchFailed, Done: -1, Total: exp.size, Err: err})
		}
		return err
	}
	st, err := os.Stat(final)
	if err != nil {
		return fmt.Errorf("fetching %s: %w", f.Path, err)
	}
	ft.progress(FetchProgress{File: f.Path, Phase: FetchDone, Done: st.Size(), Total: st.Size(), Verified: verified})
	return nil
}

// downloadRetrying downloads f into part, retrying while a retry may
// help. A host that gave no answer to any attempt, and none before, is
// marked down and is an *UnreachableError.
func (ft *fetcher) downloadRetrying(ctx context.Context, f File, src, part string, exp *expected) error {
	var err error
	delay := ft.delay
	for attempt := 1; ; attempt++ {
		err = ft.download(ctx, f, src, part, exp)
		if err == nil || ctx.Err() != nil || !ft.retryable(err) || attempt == ft.attempts {
			break
		}
		ft.progress(FetchProgress{File: f.Path, Phase: FetchRetry, Done: -1, Total: exp.size, Attempt: attempt, Err: err})
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		delay *= 2
	}
	var skipped *skipError
	var na *noAnswerError
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("fetching %s: %w", f.Path, context.Cause(ctx))
	case errors.As(err, &skipped):
		skipped.down.Skipped = append(skipped.down.Skipped, f.Path)
		return err
	case errors.As(err, &na) && !ft.host(na.host).answered:
		down := &UnreachableError{Host: na.host, File: f.Path, Err: na.err}
		ft.host(na.host).down = down
		return down
	}
	return fmt.Errorf("fetching %s: %w", f.Path, err)
}

// errStalled ends an attempt that received nothing for the stall timeout;
// another attempt may do better.
var errStalled = errors.New("the connection stalled")

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(b []byte) (int, error) { return f(b) }

// noAnswerError is a request to host that got no HTTP answer: the name
// did not resolve, the connection or its TLS handshake failed, or it broke
// before the answer's header.
type noAnswerError struct {
	host string
	err  error
}

func (e *noAnswerError) Error() string { return e.err.Error() }
func (e *noAnswerError) Unwrap() error { return e.err }

// skipError is a file not requested from a host that is down.
type skipError struct{ down *UnreachableError }

func (e *skipError) Error() string {
	return fmt.Sprintf("not tried: %s could not be reached", e.down.Host)
}

// permanentError is a failure no retry can fix (an invalid URL).
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// retryable reports whether another attempt may fix err.
func (ft *fetcher) retryable(err error) bool {
	var (
		he   *HTTPError
		ce   *ChecksumError
		pe   *fs.PathError
		perm *permanentError
		skip *skipError
		na   *noAnswerError
	)
	switch {
	case errors.As(err, &he):
		return he.Temporary()
	case errors.As(err, &ce), errors.As(err, &pe), errors.As(err, &perm), errors.As(err, &skip):
		return false
	case errors.As(err, &na):
		return ft.connectRetryable(na)
	}
	return true // a dropped connection, a short answer, a bad resume
}

// connectRetryable reports whether a request that got no answer may get
// one when sent again.
func (ft *fetcher) connectRetryable(na *noAnswerError) bool {
	var dns *net.DNSError
	if errors.As(na.err, &dns) {
		return !dns.IsNotFound && (dns.IsTemporary || dns.IsTimeout)
	}
	if tlsFailure(na.err) || errors.Is(na.err, syscall.ENETUNREACH) || errors.Is(na.err, syscall.EHOSTUNREACH) {
		return false
	}
	if errors.Is(na.err, syscall.ECONNREFUSED) {
		return ft.host(na.host).answered // a server that answered before may be restarting
	}
	return true
}

// tlsFailure reports whether err is a failed TLS handshake or a rejected
// certificate, which the same request meets again.
func tlsFailure(err error) bool {
	var (
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		record   tls.RecordHeaderError
		alert    tls.AlertError
	)
	return errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &hostname) ||
		errors.As(err, &invalid) || errors.As(err, &record) || errors.As(err, &alert) ||
		errors.Is(err, http.ErrSchemeMismatch)
}

// download runs one attempt: it appends to part from where it ends (or
// starts over) until the server's answer is complete. The .part file is
// created only once a server answers with the content.
func (ft *fetcher) download(ctx context.Context, f File, src, part string, exp *expected) (err error) {
	// A connection that stops delivering would hang the download forever:
	// every byte received pushes the stall deadline back.
	parent := ctx
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	stall := time.AfterFunc(ft.stall, func() { cancel(errStalled) })
	defer stall.Stop()
	defer func() {
		if err != nil && parent.Err() == nil && context.Cause(ctx) == errStalled {
			err = fmt.Errorf("GET %s: nothing received for %s: %w", src, ft.stall, errStalled)
		}
	}()
	var have int64
	if st, err := os.Stat(part); err == nil {
		have = st.Size()
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	resp, hub, err := ft.get(ctx, src, have, f.Repo != "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if hub.sha256 != "" || hub.gitSHA1 != "" {
		if exp.sha256 != "" && hub.sha256 != "" && !strings.HasPrefix(hub.sha256, exp.sha256) && !strings.HasPrefix(exp.sha256, hub.sha256) {
			os.Remove(part)
			return &ChecksumError{File: f.Path, URL: src, Algorithm: "sha256", Want: exp.sha256, Got: hub.sha256 + " (declared by the server)"}
		}
		if len(hub.sha256) > len(exp.sha256) {
			exp.sha256 = hub.sha256
		}
		if hub.gitSHA1 != "" {
			exp.gitSHA1 = hub.gitSHA1
		}
	}
	if hub.size >= 0 && exp.size < 0 {
		exp.size = hub.size
	}
	switch resp.StatusCode {
	case http.StatusOK:
		have = 0 // the whole file: a server that ignored the Range starts over
		if err := exp.offered(f, src, resp.ContentLength); err != nil {
			os.Remove(part)
			return err
		}
	case http.StatusPartialContent:
		start, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != have {
			os.Remove(part)
			return fmt.Errorf("GET %s: asked for bytes from %d, got Content-Range %q", src, have, resp.Header.Get("Content-Range"))
		}
		if err := exp.offered(f, src, total); err != nil {
			os.Remove(part)
			return err
		}
	case http.StatusRequestedRangeNotSatisfiable:
		_, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if ok && total == have && (exp.size < 0 || exp.size == have) {
			exp.size = total
			return nil // the .part file was already complete
		}
		os.Remove(part)
		return fmt.Errorf("GET %s: the server cannot resume at byte %d; starting over", src, have)
	default:
		return &HTTPError{URL: src, StatusCode: resp.StatusCode, Status: resp.Status}
	}
	if err := os.MkdirAll(filepath.Dir(part), 0o755); err != nil {
		return err
	}
	flag := os.O_WRONLY | os.O_CREATE
	if have == 0 {
		flag |= os.O_TRUNC
	}
	fh, err := os.OpenFile(part, flag, 0o644)
	if err != nil {
		return err
	}
	defer fh.Close()
	if _, err := fh.Seek(have, io.SeekStart); err != nil {
		return err
	}
	ft.progress(FetchProgress{File: f.Path, Phase: FetchDownload, Done: have, Total: exp.size})
	w := &progressWriter{w: fh, done: have, report: func(done int64) {
		ft.progress(FetchProgress{File: f.Path, Phase: FetchDownload, Done: done, Total: exp.size})
	}}
	body := readerFunc(func(b []byte) (int, error) {
		n, err := resp.Body.Read(b)
		if n > 0 {
			stall.Reset(ft.stall)
		}
		return n, err
	})
	_, copyErr := io.CopyBuffer(w, body, make([]byte, 256<<10))
	w.flush()
	if err := fh.Sync(); copyErr == nil {
		copyErr = err
	}
	if copyErr != nil {
		return fmt.Errorf("GET %s: after %d bytes: %w", src, w.done, copyErr)
	}
	switch {
	case exp.size >= 0 && w.done < exp.size:
		return fmt.Errorf("GET %s: the answer ended after %d of %d bytes", src, w.done, exp.size)
	case exp.size >= 0 && w.done > exp.size:
		if err := fh.Truncate(0); err != nil {
			return err
		}
		return fmt.Errorf("GET %s: got %d bytes, more than the declared %d; starting over", src, w.done, exp.size)
	}
	return nil
}

// offered checks the size a server offers (−1: not said) against the
// expected one, or adopts it when none is expected. A different size is a
// *ChecksumError: the server has another file.
func (e *expected) offered(f File, src string, size int64) error {
	switch {
	case size < 0:
	case e.size < 0:
		e.size = size
	case size != e.size:
		return &ChecksumError{File: f.Path, URL: src, Algorithm: "size", Want: strconv.FormatInt(e.size, 10), Got: strconv.FormatInt(size, 10)}
	}
	return nil
}

// hubInfo is what the hub declares about a file on the way to it.
type hubInfo struct {
	sha256  string
	gitSHA1 string
	size    int64
}

// get sends a GET (with a Range from `from` when from > 0) and follows
// redirects itself, collecting the hub's declarations: the first
// X-Linked-Etag (a Git LFS file's sha256) and X-Linked-Size of any hop and,
// when the hub itself answers with the content, its ETag (a git blob id,
// or a sha256). Only hub files (fromHub) have their headers read.
func (ft *fetcher) get(ctx context.Context, src string, from int64, fromHub bool) (*http.Response, hubInfo, error) {
	info := hubInfo{size: -1}
	target := src
	for hop := 0; hop < 10; hop++ {
		u, err := httpURL(target)
		if err != nil {
			return nil, info, &permanentError{fmt.Errorf("GET %s: %w", target, err)}
		}
		if down := ft.host(u.Host).down; down != nil {
			return nil, info, &skipError{down}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		if err != nil {
			return nil, info, &permanentError{fmt.Errorf("GET %s: %w", target, err)}
		}
		if from > 0 {
			req.Header.Set("Range", "bytes="+strconv.FormatInt(from, 10)+"-")
		}
		req.Header.Set("User-Agent", "musetalk-weights-fetch/1")
		resp, err := ft.client.Do(req)
		if err != nil {
			return nil, info, &noAnswerError{host: u.Host, err: err}
		}
		ft.host(u.Host).answered = true
		if fromHub {
			if d := etagDigest(resp.Header.Get("X-Linked-Etag")); len(d) == 64 && info.sha256 == "" {
				info.sha256 = d
				if n, err := strconv.ParseInt(resp.Header.Get("X-Linked-Size"), 10, 64); err == nil && n >= 0 {
					info.size = n
				}
			}
		}
		switch resp.StatusCode {
		case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		default:
			if fromHub && info.sha256 == "" && hop == 0 {
				switch d := etagDigest(resp.Header.Get("ETag")); len(d) {
				case 40:
					info.gitSHA1 = d
				case 64:
					info.sha256 = d
				}
			}
			return resp, info, nil
		}
		loc, err := resp.Location()
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if err != nil {
			return nil, info, &permanentError{fmt.Errorf("GET %s: %s without a usable Location: %w", target, resp.Status, err)}
		}
		target = loc.String()
	}
	return nil, info, fmt.Errorf("GET %s: too many redirects", src)
}

// etagDigest returns an ETag's value as lower-case hex if it is one (weak
// prefix and quotes removed), else "".
func etagDigest(etag string) string {
	e := strings.Trim(strings.TrimPrefix(strings.TrimSpace(etag), "W/"), `"`)
	if _, err := hex.DecodeString(e); err != nil || e == "" {
		return ""
	}
	return strings.ToLower(e)
}

// parseContentRange reads "bytes START-END/TOTAL" or "bytes */TOTAL"
// (start −1); ok is false for anything else or an unknown total.
func parseContentRange(s string) (start, total int64, ok bool) {
	rest, found := strings.CutPrefix(s, "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, false
	}
	total, err := strconv.ParseInt(tot, 10, 64)
	if err != nil || total < 0 {
		return 0, 0, false
	}
	if rng == "*" {
		return -1, total, true
	}
	first, _, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err = strconv.ParseInt(first, 10, 64)
	if err != nil || start < 0 {
		return 0, 0, false
	}
	return start, total, true
}

// verify hashes the finished .part file and compares it with what is
// expected; on a mismatch it deletes the file.
func (ft *fetcher) verify(f File, src, part string, exp expected) (string, error) {
	fh, err := os.Open(part)
	if err != nil {
		return "", fmt.Errorf("verifying %s: %w", f.Path, err)
	}
	st, err := fh.Stat()
	if err != nil {
		fh.Close()
		return "", fmt.Errorf("verifying %s: %w", f.Path, err)
	}
	ft.progress(FetchProgress{File: f.Path, Phase: FetchVerify, Done: st.Size(), Total: st.Size()})
	s256, s1 := sha256.New(), sha1.New()
	fmt.Fprintf(s1, "blob %d\x00", st.Size())
	_, err = io.Copy(io.MultiWriter(s256, s1), fh)
	fh.Close()
	if err != nil {
		return "", fmt.Errorf("verifying %s: %w", f.Path, err)
	}
	fail := func(algo, want string, h hash.Hash) (string, error) {
		os.Remove(part)
		return "", &ChecksumError{File: f.Path, URL: src, Algorithm: algo, Want: want, Got: hex.EncodeToString(h.Sum(nil))}
	}
	verified := ""
	if exp.sha256 != "" {
		if !strings.HasPrefix(hex.EncodeToString(s256.Sum(nil)), exp.sha256) {
			return fail("sha256", exp.sha256, s256)
		}
		verified = "sha256"
	}
	if exp.gitSHA1 != "" {
		if hex.EncodeToString(s1.Sum(nil)) != exp.gitSHA1 {
			return fail("git-sha1", exp.gitSHA1, s1)
		}
		if verified == "" {
			verified = "git-sha1"
		}
	}
	return verified, nil
}

// progressWriter counts bytes written and reports every progressStep.
type progressWriter struct {
	w        io.Writer
	done     int64
	reported int64
	report   func(done int64)
}

const progressStep = 1 << 20

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.done += int64(n)
	if p.done-p.reported >= progressStep {
		p.flush()
	}
	return n, err
}

func (p *progressWriter) flush() {
	if p.done != p.reported {
		p.reported = p.done
		p.report(p.done)
	}
}

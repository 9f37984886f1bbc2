package modeldir

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
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
	// (a dropped connection, a 5xx or 429 answer); each retry resumes where
	// the last stopped. Default 4.
	Attempts int
	// RetryDelay is the pause before the first retry, doubled before each
	// further one. Default 1 s.
	RetryDelay time.Duration
}

// FetchPhase says where a file is in [Fetch].
type FetchPhase string

// The phases [FetchOptions.Progress] reports.
const (
	// FetchPresent: the file (or its safetensors form) is already there
	// and is left alone.
	FetchPresent FetchPhase = "present"
	// FetchDownload: bytes are arriving (or a download starts, Done = the
	// bytes already in the .part file).
	FetchDownload FetchPhase = "download"
	// FetchVerify: the download is complete and its checksum is being
	// computed.
	FetchVerify FetchPhase = "verify"
	// FetchDone: the file is verified and in place.
	FetchDone FetchPhase = "done"
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
// Fetch goes on with the other files after one fails and returns every
// failure joined; it stops at once when ctx is done (the .part files stay
// for a resume) and returns its cause. Two Fetches must not work on one
// directory at the same time.
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
		if err := ft.fetchFile(ctx, f); err != nil {
			if ctx.Err() != nil {
				return err
			}
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

type fetcher struct {
	dir      Dir
	endpoint string
	client   http.Client // a copy that does not follow redirects
	progress func(FetchProgress)
	attempts int
	delay    time.Duration
}

func newFetcher(dir string, opts FetchOptions) (*fetcher, error) {
	endpoint := opts.Endpoint
	if endpoint == "" {
		endpoint = os.Getenv("HF_ENDPOINT")
	}
	if endpoint == "" {
		endpoint = DefaultEndpoint
	}
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("hub endpoint %q is not an http(s) URL", endpoint)
	}
	ft := &fetcher{
		dir:      Dir(dir),
		endpoint: strings.TrimRight(endpoint, "/"),
		progress: opts.Progress,
		attempts: opts.Attempts,
		delay:    opts.RetryDelay,
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
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return fmt.Errorf("fetching %s: %w", f.Path, err)
	}
	src := f.DownloadURL(ft.endpoint)
	exp := expected{sha256: strings.ToLower(f.SHA256), size: -1}
	if f.Size > 0 {
		exp.size = f.Size
	}
	var err error
	delay := ft.delay
	for attempt := 1; ; attempt++ {
		err = ft.download(ctx, f, src, part, &exp)
		if err == nil || ctx.Err() != nil || !retryable(err) || attempt == ft.attempts {
			break
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		delay *= 2
	}
	if ctx.Err() != nil {
		return fmt.Errorf("fetching %s: %w", f.Path, context.Cause(ctx))
	}
	if err != nil {
		return fmt.Errorf("fetching %s: %w", f.Path, err)
	}
	verified, err := ft.verify(f, src, part, exp)
	if err != nil {
		return err
	}
	if err := os.Rename(part, final); err != nil {
		return fmt.Errorf("fetching %s: %w", f.Path, err)
	}
	st, err := os.Stat(final)
	if err != nil {
		return fmt.Errorf("fetching %s: %w", f.Path, err)
	}
	ft.progress(FetchProgress{File: f.Path, Phase: FetchDone, Done: st.Size(), Total: st.Size(), Verified: verified})
	return nil
}

// retryable reports whether another attempt may fix err.
func retryable(err error) bool {
	var he *HTTPError
	if errors.As(err, &he) {
		return he.Temporary()
	}
	var ce *ChecksumError
	return !errors.As(err, &ce)
}

// download runs one attempt: it appends to part from where it ends (or
// starts over) until the server's answer is complete.
func (ft *fetcher) download(ctx context.Context, f File, src, part string, exp *expected) error {
	fh, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return err
	}
	have := st.Size()
	resp, hub, err := ft.get(ctx, src, have, f.Repo != "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if hub.sha256 != "" || hub.gitSHA1 != "" {
		if exp.sha256 != "" && hub.sha256 != "" && !strings.HasPrefix(hub.sha256, exp.sha256) && !strings.HasPrefix(exp.sha256, hub.sha256) {
			fh.Close()
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
	restart := func() error {
		have = 0
		return fh.Truncate(0)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		if have > 0 { // the server ignored the Range: start over
			if err := restart(); err != nil {
				return err
			}
		}
		if err := exp.offered(f, src, resp.ContentLength); err != nil {
			fh.Close()
			os.Remove(part)
			return err
		}
	case http.StatusPartialContent:
		start, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != have {
			restart()
			return fmt.Errorf("GET %s: asked for bytes from %d, got Content-Range %q", src, have, resp.Header.Get("Content-Range"))
		}
		if err := exp.offered(f, src, total); err != nil {
			fh.Close()
			os.Remove(part)
			return err
		}
	case http.StatusRequestedRangeNotSatisfiable:
		_, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if ok && total == have && (exp.size < 0 || exp.size == have) {
			exp.size = total
			return nil // the .part file was already complete
		}
		restart()
		return fmt.Errorf("GET %s: the server cannot resume at byte %d; starting over", src, have)
	default:
		return &HTTPError{URL: src, StatusCode: resp.StatusCode, Status: resp.Status}
	}
	if _, err := fh.Seek(have, io.SeekStart); err != nil {
		return err
	}
	ft.progress(FetchProgress{File: f.Path, Phase: FetchDownload, Done: have, Total: exp.size})
	w := &progressWriter{w: fh, done: have, report: func(done int64) {
		ft.progress(FetchProgress{File: f.Path, Phase: FetchDownload, Done: done, Total: exp.size})
	}}
	_, copyErr := io.CopyBuffer(w, resp.Body, make([]byte, 256<<10))
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
		restart()
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
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		if err != nil {
			return nil, info, fmt.Errorf("GET %s: %w", target, err)
		}
		if from > 0 {
			req.Header.Set("Range", "bytes="+strconv.FormatInt(from, 10)+"-")
		}
		req.Header.Set("User-Agent", "musetalk-weights-fetch/1")
		resp, err := ft.client.Do(req)
		if err != nil {
			return nil, info, err
		}
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
			return nil, info, fmt.Errorf("GET %s: %s without a usable Location: %w", target, resp.Status, err)
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

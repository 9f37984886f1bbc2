// Package b2 is a blob.Store on Backblaze B2, built on the wire layer of
// github.com/Backblaze/blazer (package base: one HTTP request per call),
// with retries, re-authorization and upload orchestration of its own.
//
// Put: objects up to Config.PartSize are one b2_upload_file; bigger ones use
// the large-file API, Config.ConcurrentUploads parts in flight, read in
// place from a seekable input (any other input is first spooled to memory
// or a temporary file). A failed or cancelled Put stores nothing and
// cancels its unfinished large file. Stat is one b2_list_file_names call.
// Get is a b2_download_file_by_name stream, resumed after a dropped
// connection with b2_download_file_by_id ranges (so one version is read),
// and verified: it ends in an error, never io.EOF, unless the length and
// SHA1 match what B2 recorded. Delete removes every version of the key, so
// no older version resurfaces.
//
// Retries: every call has a budget of Config.MaxRetries transient failures
// (5xx, 408, 429, network errors, response timeouts, cut-off downloads,
// expired tokens), retried with capped exponential backoff and jitter;
// after that the call fails with ErrRetriesExhausted. Expired account
// tokens are renewed once for all concurrent calls. Context cancellation
// ends a call at once.
//
// Why not blazer's high-level package b2 (all seen with blob/b2test): its
// retry loops run until the context ends; its re-authorization overwrites
// shared state while other goroutines read it (a data race); its Writer
// stores the first chunk as the whole object when starting a large file
// fails and Close is called, deadlocks when a part fails for good while
// the next chunk waits (sendChunk holds emux.RLock that setErr needs),
// leaks its upload goroutines on failure, and panics in
// WithCancelOnError after a failed small upload; its Reader fetches chunks
// of one download by name, so they can come from different versions.
//
// Overwriting a key leaves the old version stored (hidden) in B2; give the
// bucket lifecycle rules that delete old versions (B2's "keep only the
// last version") and cancel unfinished large files after a day.
//
// Do not run with B2_LOG_LEVEL=2 or more: blazer then logs B2's responses,
// and its redaction misses compact JSON, so tokens would reach the log.
package b2

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/Backblaze/blazer/base"

	"github.com/avatargen/musetalk/blob"
)

var (
	// ErrUnauthorized means B2 rejected the key id or application key, or
	// the key may not do what was asked.
	ErrUnauthorized = errors.New("b2: not authorized")
	// ErrNoBucket means the bucket does not exist or the key cannot see it.
	ErrNoBucket = errors.New("b2: bucket not found")
	// ErrRetriesExhausted means a call met more transient failures than
	// Config.MaxRetries allows.
	ErrRetriesExhausted = errors.New("b2: gave up after repeated transient failures")
	// ErrCorrupt means downloaded data did not match the length or SHA1 B2
	// recorded for the object.
	ErrCorrupt = errors.New("b2: downloaded data does not match the stored object")
	// ErrChanged means the object was replaced or deleted while a download
	// was being resumed.
	ErrChanged = errors.New("b2: object changed during download")
)

// Config configures New. KeyID, AppKey and Bucket are required; zero values
// elsewhere take the defaults noted.
type Config struct {
	KeyID  string // application key id
	AppKey string // application key; never logged or put in errors
	Bucket string // bucket name
	// Endpoint overrides the B2 authorization API base URL (blazer's
	// default is B2's own); callers conventionally fill it from the
	// B2_ENDPOINT environment variable, tests with a b2test server's URL.
	Endpoint string

	// PartSize is the part size of large-file uploads, and the size above
	// which an object is uploaded as a large file. Default 100_000_000, B2's
	// recommendation; B2 requires at least 5_000_000 and at most 5_000_000_000.
	PartSize int64
	// ConcurrentUploads is how many parts of one large file are uploaded at
	// once. Default 4.
	ConcurrentUploads int

	// MaxRetries is how many transient failures one call tolerates in all.
	// Default 10.
	MaxRetries int
	// RetryBackoff is the first wait before a retry, doubled for each
	// further failure up to MaxBackoff, with jitter. Defaults 500ms and 20s.
	// A server's Retry-After is honoured up to MaxBackoff.
	RetryBackoff time.Duration
	MaxBackoff   time.Duration
	// ResponseHeaderTimeout limits the wait for response headers after a
	// request is sent; a timeout counts as a transient failure. Default 90s.
	// Not used when Transport is set.
	ResponseHeaderTimeout time.Duration
	// CleanupTimeout bounds cancelling the unfinished large file of a failed
	// Put. Default 30s.
	CleanupTimeout time.Duration
	// SpoolDir holds temporary copies of non-seekable Put inputs bigger than
	// 4 MiB. Default os.TempDir().
	SpoolDir string
	// Transport, if set, carries the HTTP requests (for tests).
	Transport http.RoundTripper
}

// String describes c without the application key.
func (c Config) String() string {
	return fmt.Sprintf("b2.Config{KeyID:%q AppKey:[redacted] Bucket:%q Endpoint:%q PartSize:%d ConcurrentUploads:%d MaxRetries:%d}",
		c.KeyID, c.Bucket, c.Endpoint, c.PartSize, c.ConcurrentUploads, c.MaxRetries)
}

// GoString is String, so %#v does not print the application key either.
func (c Config) GoString() string { return c.String() }

// LogValue keeps the application key out of slog output.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(slog.String("key_id", c.KeyID), slog.String("bucket", c.Bucket),
		slog.String("endpoint", c.Endpoint), slog.Int64("part_size", c.PartSize))
}

const maxPartSize = 5_000_000_000

func (c Config) withDefaults() (Config, error) {
	switch {
	case c.KeyID == "":
		return c, errors.New("b2: Config.KeyID (application key id) is empty")
	case c.AppKey == "":
		return c, fmt.Errorf("b2: Config.AppKey (application key for key id %q) is empty", c.KeyID)
	case c.Bucket == "":
		return c, errors.New("b2: Config.Bucket is empty")
	case c.PartSize < 0 || c.PartSize > maxPartSize:
		return c, fmt.Errorf("b2: Config.PartSize %d is outside 1 to %d", c.PartSize, maxPartSize)
	case c.ConcurrentUploads < 0 || c.MaxRetries < 0:
		return c, errors.New("b2: Config.ConcurrentUploads and Config.MaxRetries must not be negative")
	}
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return c, fmt.Errorf("b2: Config.Endpoint %q is not an http(s) URL", c.Endpoint)
		}
		c.Endpoint = strings.TrimRight(c.Endpoint, "/")
	}
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	if c.PartSize == 0 {
		c.PartSize = 100_000_000
	}
	if c.ConcurrentUploads == 0 {
		c.ConcurrentUploads = 4
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = 10
	}
	def(&c.RetryBackoff, 500*time.Millisecond)
	def(&c.MaxBackoff, 20*time.Second)
	def(&c.ResponseHeaderTimeout, 90*time.Second)
	def(&c.CleanupTimeout, 30*time.Second)
	if c.MaxBackoff < c.RetryBackoff {
		c.MaxBackoff = c.RetryBackoff
	}
	return c, nil
}

// B2 is a blob.Store on one B2 bucket. It is safe for concurrent use.
type B2 struct {
	cfg         Config
	tr          *transport
	hc          *http.Client
	ownedHTTP   *http.Transport // closed by Close; nil when Config.Transport was given
	bucket      *base.Bucket
	downloadURL string
	urls        chan *base.URL // idle upload URLs, each used by one upload at a time
}

var _ blob.Store = (*B2)(nil)

// New authorizes with B2 and opens the bucket. Its errors say which step
// failed: ErrUnauthorized (bad key id or key), ErrNoBucket, or
// ErrRetriesExhausted (B2 unreachable or failing).
func New(ctx context.Context, cfg Config) (*B2, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	endpoint := cfg.Endpoint
	if endpoint == "" {
		endpoint = base.APIBase
	}
	b := &B2{cfg: cfg, urls: make(chan *base.URL, 16)}
	next := cfg.Transport
	if next == nil {
		ht := http.DefaultTransport.(*http.Transport).Clone()
		ht.ResponseHeaderTimeout = cfg.ResponseHeaderTimeout
		b.ownedHTTP, next = ht, ht
	}
	b.tr = newTransport(cfg, next, endpoint)
	b.hc = &http.Client{
		Transport:     b.tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}

	what := fmt.Sprintf("authorizing key id %q at %s", cfg.KeyID, endpoint)
	opCtx, _, done := b.begin(ctx)
	defer done()
	acct, err := base.AuthorizeAccount(opCtx, cfg.KeyID, cfg.AppKey,
		base.Transport(b.tr), base.SetAPIBase(endpoint), base.UserAgent("musetalk-blob"))
	if err != nil {
		b.Close()
		if code, msg := base.Code(err); code == http.StatusUnauthorized || code == http.StatusForbidden {
			return nil, fmt.Errorf("%w: B2 at %s rejected key id %q or its application key (HTTP %d: %s)", ErrUnauthorized, endpoint, cfg.KeyID, code, msg)
		}
		if ctx.Err() == nil && errors.Is(context.Cause(opCtx), ErrRetriesExhausted) {
			return nil, fmt.Errorf("b2: cannot reach B2 at %s to authorize key id %q: %w", endpoint, cfg.KeyID, context.Cause(opCtx))
		}
		return nil, wrapErr(ctx, opCtx, what, err)
	}
	what = fmt.Sprintf("opening bucket %q with key id %q", cfg.Bucket, cfg.KeyID)
	buckets, err := acct.ListBuckets(opCtx, cfg.Bucket)
	if err != nil {
		b.Close()
		if code, msg := base.Code(err); code == http.StatusUnauthorized || code == http.StatusForbidden {
			return nil, fmt.Errorf("%w: key id %q may not list bucket %q (HTTP %d: %s)", ErrUnauthorized, cfg.KeyID, cfg.Bucket, code, msg)
		}
		return nil, wrapErr(ctx, opCtx, what, err)
	}
	for _, bk := range buckets {
		if bk.Name == cfg.Bucket {
			b.bucket = bk
		}
	}
	if b.bucket == nil {
		b.Close()
		return nil, fmt.Errorf("%w: bucket %q does not exist or key id %q may not see it", ErrNoBucket, cfg.Bucket, cfg.KeyID)
	}
	b.downloadURL = strings.TrimRight(b.bucket.BaseURL(), "/")
	return b, nil
}

// Close releases idle connections. The B2 must not be used afterwards.
func (b *B2) Close() error {
	if b.ownedHTTP != nil {
		b.ownedHTTP.CloseIdleConnections()
	}
	return nil
}

// begin starts a call: a context carrying its retry budget, cancelled with
// ErrRetriesExhausted as cause when the budget is spent, and the func that
// ends it.
func (b *B2) begin(ctx context.Context) (context.Context, *op, context.CancelFunc) {
	opCtx, cancel := context.WithCancelCause(ctx)
	o := &op{max: b.cfg.MaxRetries, cancel: cancel}
	return context.WithValue(opCtx, opKey{}, o), o, func() { cancel(nil) }
}

// wrapErr turns the error of a call (what) into the one callers get: the
// caller's context error, else the budget's, else err.
func wrapErr(parent, opCtx context.Context, what string, err error) error {
	if err == nil {
		return nil
	}
	if perr := parent.Err(); perr != nil {
		return fmt.Errorf("b2: %s: %w", what, perr)
	}
	if opCtx.Err() != nil {
		if cause := context.Cause(opCtx); cause != nil && !errors.Is(cause, context.Canceled) {
			return fmt.Errorf("b2: %s: %w", what, cause)
		}
	}
	if code, msg := base.Code(err); code == http.StatusUnauthorized || code == http.StatusForbidden {
		return fmt.Errorf("b2: %s: %w (%v: %s)", what, ErrUnauthorized, err, msg)
	}
	return fmt.Errorf("b2: %s: %w", what, err)
}

// Stat describes the current version of key (one b2_list_file_names call).
func (b *B2) Stat(ctx context.Context, key string) (blob.Info, error) {
	if err := blob.ValidateKey(key); err != nil {
		return blob.Info{}, err
	}
	what := fmt.Sprintf("stat %q", key)
	opCtx, _, done := b.begin(ctx)
	defer done()
	f, err := b.lookup(opCtx, key)
	if err != nil {
		return blob.Info{}, wrapErr(ctx, opCtx, what, err)
	}
	return blob.Info{Key: key, Size: f.Size, Modified: f.Timestamp, SHA1: recordedSHA1(f)}, nil
}

// recordedSHA1 is the SHA-1 B2 recorded for f, or "": contentSha1 for
// simple uploads, the large_file_sha1 file info (which Put sets) for large
// files, whose contentSha1 is "none". A SHA-1 B2 marks "unverified:" was
// given by the uploader and not checked by B2, so it is not used.
func recordedSHA1(f *base.File) string {
	if f.Info == nil {
		return ""
	}
	sha := strings.ToLower(f.Info.SHA1)
	if sha == "none" || sha == "" {
		for k, v := range f.Info.Info {
			if strings.EqualFold(k, "large_file_sha1") {
				sha = strings.ToLower(v)
			}
		}
	}
	if !blob.ValidSHA1(sha) {
		return ""
	}
	return sha
}

// lookup returns the current version of key, or blob.ErrNotFound.
func (b *B2) lookup(ctx context.Context, key string) (*base.File, error) {
	files, _, err := b.bucket.ListFileNames(ctx, 1, key, key, "")
	if err != nil {
		return nil, err
	}
	if len(files) == 0 || files[0].Name != key || files[0].Status != "upload" {
		return nil, blob.ErrNotFound
	}
	return files[0], nil
}

// Delete removes every version of key (and any hide marker); a missing key
// is not an error. An unfinished large file of key (a Put in progress) is
// left alone.
func (b *B2) Delete(ctx context.Context, key string) error {
	if err := blob.ValidateKey(key); err != nil {
		return err
	}
	what := fmt.Sprintf("delete %q", key)
	opCtx, _, done := b.begin(ctx)
	defer done()
	startID := ""
	for {
		files, nextName, nextID, err := b.bucket.ListFileVersions(opCtx, 100, key, startID, key, "")
		if err != nil {
			return wrapErr(ctx, opCtx, what, err)
		}
		for _, f := range files {
			if f.Name != key {
				return nil // versions are listed by name; the rest are longer names
			}
			if f.Status == "start" {
				continue
			}
			if err := f.DeleteFileVersion(opCtx); err != nil && !gone(err) {
				return wrapErr(ctx, opCtx, what, err)
			}
		}
		if nextName != key || nextID == "" {
			return nil
		}
		startID = nextID
	}
}

// gone reports whether a delete failed only because the version was
// already gone (deleted concurrently).
func gone(err error) bool {
	code, msgCode, _ := base.MsgCode(err)
	return code == http.StatusNotFound || msgCode == "file_not_present"
}

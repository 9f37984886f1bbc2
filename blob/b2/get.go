package b2

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/avatargen/musetalk/blob"
)

// Get opens the current version of key as a stream. The stream ends with
// io.EOF only after the length and SHA1 recorded by B2 (large_file_sha1
// for large files; without one, the length alone) have been checked;
// otherwise with an error wrapping ErrCorrupt. A dropped connection is
// resumed from where it broke, on the same version (ErrChanged if that
// version is gone). Closing the stream ends the call.
//
// blazer's own Reader is not used: it buffers whole chunks in memory,
// fetches chunks by name (so they can come from different versions),
// reports errors only at the first Read, and retries cut-off chunks until
// the context ends.
func (b *B2) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := blob.ValidateKey(key); err != nil {
		return nil, err
	}
	what := fmt.Sprintf("get %q", key)
	opCtx, o, done := b.begin(ctx)
	u := b.downloadURL + "/file/" + escapePath(b.cfg.Bucket) + "/" + escapeName(key)
	resp, err := b.fetch(opCtx, u, "b2_download_file_by_name", 0)
	if err != nil {
		done()
		return nil, wrapErr(ctx, opCtx, what, err)
	}
	d := &download{
		b: b, o: o, parent: ctx, ctx: opCtx, done: done, what: what,
		body: resp.Body, size: resp.ContentLength, h: sha1.New(),
		id:  resp.Header.Get("X-Bz-File-Id"),
		sha: resp.Header.Get("X-Bz-Content-Sha1"),
	}
	if d.sha == "none" || d.sha == "" {
		d.sha = resp.Header.Get("X-Bz-Info-large_file_sha1")
	}
	d.sha = strings.ToLower(d.sha)
	if _, err := hex.DecodeString(d.sha); err != nil || len(d.sha) != 40 {
		d.sha = "" // not recorded; the length is still checked
	}
	if d.size < 0 || d.id == "" {
		d.Close()
		return nil, fmt.Errorf("b2: %s: download response lacks Content-Length or X-Bz-File-Id", what)
	}
	return d, nil
}

// fetch GETs a download URL from offset, returning a 200 or 206 response.
func (b *B2) fetch(ctx context.Context, u, method string, offset int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", b.tr.token())
	req.Header.Set("X-Blazer-Method", method)
	if offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusPartialContent {
		return resp, nil
	}
	defer resp.Body.Close()
	var e struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&e)
	switch resp.StatusCode {
	case http.StatusNotFound:
		return nil, blob.ErrNotFound
	case http.StatusUnauthorized, http.StatusForbidden:
		return nil, fmt.Errorf("%w: %s: HTTP %d %s: %s", ErrUnauthorized, method, resp.StatusCode, e.Code, e.Message)
	}
	return nil, fmt.Errorf("%s: HTTP %d %s: %s", method, resp.StatusCode, e.Code, e.Message)
}

// download is the verified, resuming stream Get returns.
type download struct {
	b           *B2
	o           *op
	parent, ctx context.Context
	done        context.CancelFunc
	what        string

	body   io.ReadCloser
	id     string // the version being read
	sha    string // expected hex SHA1, or ""
	size   int64
	got    int64
	h      hash.Hash
	broken error // the body failed; resume before reading on
	err    error // sticky result
}

func (d *download) Read(p []byte) (int, error) {
	for {
		if d.err != nil {
			return 0, d.err
		}
		if d.broken != nil {
			if err := d.resume(); err != nil {
				d.err = err
				continue
			}
		}
		if d.got == d.size {
			d.err = d.finish()
			continue
		}
		if len(p) == 0 {
			return 0, nil
		}
		if rem := d.size - d.got; int64(len(p)) > rem {
			p = p[:rem]
		}
		n, err := d.body.Read(p)
		d.h.Write(p[:n])
		d.got += int64(n)
		if err != nil && !(err == io.EOF && d.got == d.size) {
			d.broken = err
		}
		if n > 0 {
			return n, nil
		}
	}
}

// finish checks what was read against what B2 recorded.
func (d *download) finish() error {
	if d.sha != "" {
		if got := hex.EncodeToString(d.h.Sum(nil)); got != d.sha {
			return fmt.Errorf("b2: %s: %w: SHA1 of the %d bytes read is %s, B2 recorded %s", d.what, ErrCorrupt, d.got, got, d.sha)
		}
	}
	return io.EOF
}

// resume continues a broken download of the same version where it broke.
func (d *download) resume() error {
	cause := d.broken
	d.broken = nil
	d.body.Close()
	if d.ctx.Err() != nil {
		return wrapErr(d.parent, d.ctx, d.what, cause)
	}
	n, ok := d.o.fail(fmt.Sprintf("download cut off after %d of %d bytes: %v", d.got, d.size, cause))
	if !ok {
		return wrapErr(d.parent, d.ctx, d.what, cause)
	}
	if err := sleepCtx(d.ctx, d.b.tr.delay(n, 0)); err != nil {
		return wrapErr(d.parent, d.ctx, d.what, err)
	}
	u := d.b.downloadURL + "/b2api/v3/b2_download_file_by_id?fileId=" + url.QueryEscape(d.id)
	resp, err := d.b.fetch(d.ctx, u, "b2_download_file_by_id", d.got)
	if err != nil {
		if errors.Is(err, blob.ErrNotFound) {
			return fmt.Errorf("b2: %s: %w: version %s was deleted after %d of %d bytes were read", d.what, ErrChanged, d.id, d.got, d.size)
		}
		return wrapErr(d.parent, d.ctx, d.what, fmt.Errorf("resuming after %d bytes: %w", d.got, err))
	}
	want := fmt.Sprintf("bytes %d-%d/%d", d.got, d.size-1, d.size)
	if resp.StatusCode != http.StatusPartialContent || resp.Header.Get("Content-Range") != want || resp.Header.Get("X-Bz-File-Id") != d.id {
		resp.Body.Close()
		return fmt.Errorf("b2: %s: %w: resuming version %s at byte %d got HTTP %d, Content-Range %q, file id %q",
			d.what, ErrChanged, d.id, d.got, resp.StatusCode, resp.Header.Get("Content-Range"), resp.Header.Get("X-Bz-File-Id"))
	}
	d.body = resp.Body
	return nil
}

// Close ends the download and its call.
func (d *download) Close() error {
	d.body.Close()
	d.done()
	return nil
}

// escapeName URL-encodes an object name for a download path as blazer
// does, keeping slashes.
func escapeName(name string) string {
	return strings.ReplaceAll(url.QueryEscape(name), "%2F", "/")
}

func escapePath(s string) string { return url.PathEscape(s) }

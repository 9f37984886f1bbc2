package b2

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/Backblaze/blazer/base"

	"github.com/avatargen/musetalk/blob"
)

// infoPutID is the file-info entry tagging each upload, so a Put whose
// final response was lost can tell whether its upload landed.
const infoPutID = "blob_put_id"

// memSpool is the most of a non-seekable input kept in memory.
const memSpool = 4 << 20

const contentType = "application/octet-stream"

// Put stores r under key. The upload is atomic in B2: the new version
// appears when b2_upload_file or b2_finish_large_file succeeds. A seekable
// input (io.ReadSeeker and io.ReaderAt, like *os.File) is read from its
// current offset to its end, again for retries; its offset afterwards is
// unspecified. Any other input is first copied to memory or a temporary
// file in Config.SpoolDir.
func (b *B2) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if err := blob.ValidateKey(key); err != nil {
		return err
	}
	what := fmt.Sprintf("put %q", key)
	if size < -1 {
		return fmt.Errorf("b2: %s: invalid size %d", what, size)
	}
	opCtx, _, done := b.begin(ctx)
	defer done()
	src, err := b.source(opCtx, r, size)
	if err != nil {
		return wrapErr(ctx, opCtx, what, err)
	}
	defer src.close()
	id := rand.Text()
	if src.size <= b.cfg.PartSize {
		err = b.putSmall(opCtx, key, src, id)
	} else {
		err = b.putLarge(opCtx, key, src, id)
	}
	if err == nil {
		return nil
	}
	// B2 may have stored the object and lost the answer (its docs describe
	// this for b2_finish_large_file).
	if ctx.Err() == nil && b.landed(opCtx, key, id) {
		return nil
	}
	return wrapErr(ctx, opCtx, what, err)
}

// putSmall stores src with b2_upload_file.
func (b *B2) putSmall(ctx context.Context, key string, src *source, id string) error {
	info := map[string]string{infoPutID: id}
	for {
		u, err := b.uploadURL(ctx)
		if err != nil {
			return err
		}
		body, n, sha := src.body(0, src.size)
		_, err = u.UploadFile(ctx, body, n, key, contentType, sha, info)
		if err == nil {
			b.idleURL(u)
			return nil
		}
		// The transport has counted (and spaced out) the failure; these
		// call for a new upload URL, which also bounds the loop.
		if a := base.Action(err); ctx.Err() != nil || (a != base.AttemptNewUpload && a != base.Retry) {
			return fmt.Errorf("uploading %d bytes: %w", src.size, err)
		}
	}
}

// uploadURL returns an idle upload URL or gets a new one.
func (b *B2) uploadURL(ctx context.Context) (*base.URL, error) {
	select {
	case u := <-b.urls:
		return u, nil
	default:
	}
	u, err := b.bucket.GetUploadURL(ctx)
	if err != nil {
		return nil, fmt.Errorf("getting an upload URL: %w", err)
	}
	return u, nil
}

func (b *B2) idleURL(u *base.URL) {
	select {
	case b.urls <- u:
	default:
	}
}

// putLarge stores src with the large-file API. On failure it cancels the
// large file, even when ctx is done, within Config.CleanupTimeout.
func (b *B2) putLarge(ctx context.Context, key string, src *source, id string) (err error) {
	if src.sha == "" {
		h := sha1.New()
		if _, err := io.Copy(h, io.NewSectionReader(src.ra, 0, src.size)); err != nil {
			return fmt.Errorf("reading input to hash it: %w", err)
		}
		src.sha = hex.EncodeToString(h.Sum(nil))
	}
	// large_file_sha1 is what Get verifies a large file against.
	info := map[string]string{infoPutID: id, "large_file_sha1": src.sha}
	lf, err := b.bucket.StartLargeFile(ctx, key, contentType, info)
	if err != nil {
		return fmt.Errorf("starting a large file: %w", err)
	}
	defer func() {
		if err != nil {
			// Harmless if the file was finished after all: B2 refuses.
			err = errors.Join(err, b.cancelLarge(ctx, key, lf))
		}
	}()

	partSize := b.cfg.PartSize
	if (src.size+partSize-1)/partSize > 10000 { // B2's most parts
		partSize = (src.size + 9999) / 10000
	}
	nparts := int((src.size + partSize - 1) / partSize)
	pctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	parts := make(chan int)
	var wg sync.WaitGroup
	for range min(b.cfg.ConcurrentUploads, nparts) {
		wg.Go(func() {
			var fc *base.FileChunk // this worker's upload part URL
			for n := range parts {
				off := int64(n-1) * partSize
				if err := b.uploadPart(pctx, lf, &fc, src, n, off, min(partSize, src.size-off)); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
feed:
	for n := 1; n <= nparts; n++ {
		select {
		case parts <- n:
		case <-pctx.Done():
			break feed
		}
	}
	close(parts)
	wg.Wait()
	if pctx.Err() != nil {
		return context.Cause(pctx)
	}
	if _, err := lf.FinishLargeFile(ctx); err != nil {
		return fmt.Errorf("finishing the large file of %d parts: %w", nparts, err)
	}
	return nil
}

// uploadPart uploads part n (size bytes at off), getting a new upload part
// URL into *fc when needed.
func (b *B2) uploadPart(ctx context.Context, lf *base.LargeFile, fc **base.FileChunk, src *source, n int, off, size int64) error {
	for {
		if *fc == nil {
			c, err := lf.GetUploadPartURL(ctx)
			if err != nil {
				return fmt.Errorf("getting an upload URL for part %d: %w", n, err)
			}
			*fc = c
		}
		body := &hexAtEnd{r: io.NewSectionReader(src.ra, off, size), h: sha1.New()}
		_, err := (*fc).UploadPart(ctx, body, "hex_digits_at_end", int(size)+40, n)
		if err == nil {
			return nil
		}
		if a := base.Action(err); ctx.Err() != nil || (a != base.AttemptNewUpload && a != base.Retry) {
			return fmt.Errorf("uploading part %d (%d bytes): %w", n, size, err)
		}
		*fc = nil // the transport has counted the failure
	}
}

// cancelLarge cancels an unfinished large file, even when ctx is done.
func (b *B2) cancelLarge(ctx context.Context, key string, lf *base.LargeFile) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.cfg.CleanupTimeout)
	defer cancel()
	what := fmt.Sprintf("cancelling the unfinished large file of a failed put of %q", key)
	cctx, _, done := b.begin(cctx)
	defer done()
	if err := lf.CancelLargeFile(cctx); err != nil {
		return wrapErr(context.Background(), cctx, what, err)
	}
	return nil
}

// landed reports whether the current version of key is the one uploaded
// with id. It runs even when ctx is done (the budget may be spent).
func (b *B2) landed(ctx context.Context, key, id string) bool {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.cfg.CleanupTimeout)
	defer cancel()
	cctx, _, done := b.begin(cctx)
	defer done()
	f, err := b.lookup(cctx, key)
	if err != nil || f.Info == nil {
		return false
	}
	for k, v := range f.Info.Info {
		if strings.EqualFold(k, infoPutID) && v == id {
			return true
		}
	}
	return false
}

// hexAtEnd is r followed by the hex SHA1 of r, for B2's
// "hex_digits_at_end" uploads.
type hexAtEnd struct {
	r    io.Reader
	h    hash.Hash
	tail []byte
	done bool
}

func (x *hexAtEnd) Read(p []byte) (int, error) {
	if !x.done {
		n, err := x.r.Read(p)
		x.h.Write(p[:n])
		if err != io.EOF {
			return n, err
		}
		x.done = true
		x.tail = []byte(hex.EncodeToString(x.h.Sum(nil)))
		if n > 0 {
			return n, nil
		}
	}
	if len(x.tail) == 0 {
		return 0, io.EOF
	}
	n := copy(p, x.tail)
	x.tail = x.tail[n:]
	return n, nil
}

// source is a Put input that can be read again: size bytes at ra.
type source struct {
	ra    io.ReaderAt
	size  int64
	sha   string // hex SHA1 when already known
	close func()
}

// body returns an upload body for size bytes at off: its length and the
// X-Bz-Content-Sha1 to send with it.
func (s *source) body(off, size int64) (io.Reader, int, string) {
	r := io.NewSectionReader(s.ra, off, size)
	if s.sha != "" && off == 0 && size == s.size {
		return r, int(size), s.sha
	}
	return &hexAtEnd{r: r, h: sha1.New()}, int(size) + 40, "hex_digits_at_end"
}

// source makes r re-readable: a seekable r in place, anything else
// copied to memory (up to memSpool bytes) or a temporary file.
func (b *B2) source(ctx context.Context, r io.Reader, size int64) (*source, error) {
	if rs, ok := r.(interface {
		io.ReaderAt
		io.Seeker
	}); ok {
		if cur, err := rs.Seek(0, io.SeekCurrent); err == nil {
			end, err := rs.Seek(0, io.SeekEnd)
			if err != nil {
				return nil, fmt.Errorf("finding the input's size: %w", err)
			}
			if n := end - cur; size >= 0 && n != size {
				return nil, fmt.Errorf("input has %d bytes, but the size given was %d", n, size)
			}
			return &source{ra: io.NewSectionReader(rs, cur, end-cur), size: end - cur, close: func() {}}, nil
		}
		// Not really seekable (a pipe); copy it.
	}
	h := sha1.New()
	in := ctxReader{ctx: ctx, r: r}
	var mem bytes.Buffer
	n, err := io.Copy(io.MultiWriter(&mem, h), io.LimitReader(in, memSpool+1))
	if err != nil {
		return nil, fmt.Errorf("reading input: %w", err)
	}
	if n <= memSpool {
		if size >= 0 && n != size {
			return nil, fmt.Errorf("input has %d bytes, but the size given was %d", n, size)
		}
		return &source{ra: bytes.NewReader(mem.Bytes()), size: n, sha: hex.EncodeToString(h.Sum(nil)), close: func() {}}, nil
	}
	f, err := os.CreateTemp(b.cfg.SpoolDir, "b2-put-*")
	if err != nil {
		return nil, fmt.Errorf("creating a spool file for the input: %w", err)
	}
	cleanup := func() {
		f.Close()
		os.Remove(f.Name())
	}
	if _, err := f.Write(mem.Bytes()); err != nil {
		cleanup()
		return nil, fmt.Errorf("spooling input to %s: %w", f.Name(), err)
	}
	m, err := io.Copy(io.MultiWriter(f, h), in)
	if err != nil {
		cleanup()
		return nil, fmt.Errorf("reading input (spooling to %s): %w", f.Name(), err)
	}
	if n += m; size >= 0 && n != size {
		cleanup()
		return nil, fmt.Errorf("input has %d bytes, but the size given was %d", n, size)
	}
	return &source{ra: f, size: n, sha: hex.EncodeToString(h.Sum(nil)), close: cleanup}, nil
}

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

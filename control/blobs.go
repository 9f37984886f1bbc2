package control

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/avatargen/musetalk/blob"
	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/protocol"
)

// validKey checks an object key from a request.
func validKey(key, what string) error {
	if err := blob.ValidateKey(key); err != nil {
		return badRequest("%s: %s", what, strings.TrimPrefix(err.Error(), "blob: "))
	}
	return nil
}

// streamObject answers with the object at key, or 404.
func (s *Server) streamObject(w http.ResponseWriter, r *http.Request, key, contentType string) error {
	ctx := r.Context()
	st, err := s.blob.Stat(ctx, key)
	if errors.Is(err, blob.ErrNotFound) {
		return notFound("object %q not found", key)
	}
	if err != nil {
		return fmt.Errorf("stat of object %s: %w", key, err)
	}
	rc, err := s.blob.Get(ctx, key)
	if errors.Is(err, blob.ErrNotFound) {
		return notFound("object %q not found", key)
	}
	if err != nil {
		return fmt.Errorf("opening object %s: %w", key, err)
	}
	defer rc.Close()
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.FormatInt(st.Size, 10))
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if !st.Modified.IsZero() {
		w.Header().Set("Last-Modified", st.Modified.UTC().Format(http.TimeFormat))
	}
	w.WriteHeader(http.StatusOK)
	cw := &clientWriter{w: w}
	n, err := io.Copy(cw, rc)
	switch {
	case err == nil:
	case ctx.Err() != nil || cw.err != nil:
		// The client hung up (finished with what it wanted, or cancelled):
		// the request's context ends, so the store's reader stops with
		// "context canceled", or the write to the gone connection fails.
		// Not a fault of the control plane.
		s.log.DebugContext(ctx, "object stream ended early: the client went away", "key", key,
			"sent", n, "size", st.Size, "error", err)
	default:
		// The status is sent; all that is left is to log and cut the body short.
		s.log.WarnContext(ctx, "streaming object failed", "key", key, "sent", n, "size", st.Size, "error", err)
	}
	return nil
}

// clientWriter remembers the error of a write to the client, so that a
// failed stream can tell the client's side from the store's.
type clientWriter struct {
	w   io.Writer
	err error
}

func (c *clientWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	if err != nil && c.err == nil {
		c.err = err
	}
	return n, err
}

// handleBlobGet lets a worker without its own object-store credentials
// download an object (its inputs) through the control plane.
func (s *Server) handleBlobGet(w http.ResponseWriter, r *http.Request) error {
	key := r.PathValue("key")
	if err := validKey(key, "key"); err != nil {
		return err
	}
	return s.streamObject(w, r, key, "application/octet-stream")
}

// parseOutputKey splits "outputs/<job>/<attempt>.mp4".
func parseOutputKey(key string) (jobID string, attempt int, ok bool) {
	rest, found := strings.CutPrefix(key, "outputs/")
	if !found {
		return "", 0, false
	}
	jobID, file, found := strings.Cut(rest, "/")
	num, found2 := strings.CutSuffix(file, ".mp4")
	if !found || !found2 || !protocol.ValidID(jobID) {
		return "", 0, false
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 1 || strconv.Itoa(n) != num {
		return "", 0, false
	}
	return jobID, n, true
}

// handleBlobPut lets a worker upload an attempt's output through the
// control plane. The upload is fenced like the attempt calls: the
// Musetalk-Attempt and Musetalk-Token headers must name the job's current
// running attempt and its token (409 stale_token otherwise), and the key
// must be that attempt's output key, so a worker whose lease was lost can
// never overwrite what the current attempt uploaded. At most
// MaxOutputBytes; the store's Put is atomic, so a cut-off upload leaves
// nothing behind.
//
// The check comes before the upload: an attempt that loses its lease while
// its upload streams still writes its own attempt-scoped key, which is
// never published (complete is fenced, and checks the object's SHA-1).
func (s *Server) handleBlobPut(w http.ResponseWriter, r *http.Request) error {
	key := r.PathValue("key")
	if err := validKey(key, "key"); err != nil {
		return err
	}
	jobID, attempt, ok := parseOutputKey(key)
	if !ok {
		return errorf(http.StatusForbidden, protocol.CodeBadRequest,
			"key: %q is not an output key; workers may only upload outputs/<job>/<attempt>.mp4", key)
	}
	ri := info(r.Context())
	ri.jobID, ri.attempt = jobID, attempt
	fenceAttempt, token, err := uploadFence(r)
	if err != nil {
		return err
	}
	if fenceAttempt != attempt {
		return badRequest("key: %q is not the output key of attempt %d (%s header); want %q",
			key, fenceAttempt, protocol.AttemptHeader, outputKey(jobID, fenceAttempt))
	}
	limit := s.cfg.MaxOutputBytes
	if r.ContentLength > limit {
		return tooLarge("body: %d bytes exceeds the output limit of %d bytes", r.ContentLength, limit)
	}
	ctx := r.Context()
	job, err := s.store.JobGet(ctx, jobID)
	if isNotFound(err) {
		return notFound("job %q not found", jobID)
	}
	if err != nil {
		return fmt.Errorf("reading job %s: %w", jobID, err)
	}
	switch {
	case job.State == protocol.JobSucceeded && job.OutputKey == key:
		return conflict("key: %q is the job's published output and cannot be replaced", key)
	case job.State != protocol.JobRunning || job.Attempt != attempt ||
		subtle.ConstantTimeCompare([]byte(job.Token), []byte(token)) != 1:
		return attemptError(store.ErrStaleAttempt, jobID, attempt)
	}
	body := &limitReader{r: http.MaxBytesReader(w, r.Body, limit)}
	size := r.ContentLength
	if size < 0 {
		size = -1
	}
	if err := s.blob.Put(ctx, key, body, size); err != nil {
		if body.over {
			return tooLarge("body: exceeds the output limit of %d bytes", limit)
		}
		return fmt.Errorf("storing output %s: %w", key, err)
	}
	writeJSON(w, http.StatusCreated, map[string]any{"key": key, "size": body.n})
	return nil
}

// uploadFence reads the attempt and token headers of an output upload.
func uploadFence(r *http.Request) (int, string, error) {
	a, token := r.Header.Get(protocol.AttemptHeader), r.Header.Get(protocol.TokenHeader)
	n, err := strconv.Atoi(a)
	switch {
	case a == "":
		return 0, "", badRequest("%s header: required, the attempt number from the assignment", protocol.AttemptHeader)
	case err != nil || n < 1:
		return 0, "", badRequest("%s header: %q is not a positive attempt number", protocol.AttemptHeader, a)
	case token == "":
		return 0, "", badRequest("%s header: required, the fencing token from the assignment", protocol.TokenHeader)
	case len(token) > 256:
		return 0, "", badRequest("%s header: longer than 256 bytes", protocol.TokenHeader)
	}
	return n, token, nil
}

// limitReader counts what passes and remembers whether the
// http.MaxBytesReader below it hit its limit (stores may wrap errors in
// ways that lose the type).
type limitReader struct {
	r    io.Reader
	n    int64
	over bool
}

func (l *limitReader) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	l.n += int64(n)
	var mb *http.MaxBytesError
	if err != nil && errors.As(err, &mb) {
		l.over = true
	}
	return n, err
}

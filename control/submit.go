package control

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"path"
	"regexp"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/avatargen/musetalk/blob"
	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/protocol"
)

// Submission limits besides the configured upload sizes.
const (
	minPriority       = -100
	maxPriority       = 100
	maxFormField      = 64 << 10
	maxIdempotencyKey = 256
	avatarIDHexLen    = 32 // hex digits of SHA-256 kept as a default avatar id
)

// extPattern is what a file name's extension may be in an input key.
var extPattern = regexp.MustCompile(`^\.[a-z0-9]{1,10}$`)

// submission is a validated request for a new job.
type submission struct {
	id             string
	priority       int
	workerType     protocol.WorkerType
	idempotencyKey string
	avatarKey      string
	audioKey       string
	avatarID       string
	params         protocol.JobParams
}

// newJobID returns a time-ordered unique job id (UUIDv7), which
// satisfies protocol.ValidID.
func newJobID() (string, error) {
	u, err := uuid.NewV7()
	if err != nil {
		return "", fmt.Errorf("making a job id: %w", err)
	}
	return u.String(), nil
}

func validatePriority(p int) error {
	if p < minPriority || p > maxPriority {
		return badRequest("priority: %d is outside %d..%d", p, minPriority, maxPriority)
	}
	return nil
}

func validateWorkerType(t protocol.WorkerType) error {
	if t != "" && !t.Valid() {
		return badRequest("worker_type: %q is not a known worker type; want main, transient or empty (any)", t)
	}
	return nil
}

func validateAvatarID(id string) error {
	if id != "" && !protocol.ValidID(id) {
		return badRequest("avatar_id: %q is not a valid id (1-128 of A-Z a-z 0-9 . _ : -)", id)
	}
	return nil
}

func validateIdempotencyKey(k string) error {
	if len(k) > maxIdempotencyKey {
		return badRequest("idempotency_key: longer than %d bytes", maxIdempotencyKey)
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] >= 0x7f {
			return badRequest("idempotency_key: only printable ASCII is allowed")
		}
	}
	return nil
}

func validateParams(p *protocol.JobParams) error {
	if err := p.Validate(); err != nil {
		return badRequest("%v", err)
	}
	return nil
}

// handleSubmit creates a job from a multipart upload or from a JSON
// request naming stored objects. A repeated idempotency key answers 200
// with the first job; a new job answers 201.
func (s *Server) handleSubmit(w http.ResponseWriter, r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	mt, params, err := mime.ParseMediaType(ct)
	switch {
	case ct == "":
		return errorf(http.StatusUnsupportedMediaType, protocol.CodeBadRequest,
			"Content-Type: missing; want multipart/form-data (files avatar and audio) or application/json")
	case err != nil:
		return errorf(http.StatusUnsupportedMediaType, protocol.CodeBadRequest, "Content-Type %q: %v", ct, err)
	case mt == "multipart/form-data":
		return s.submitMultipart(w, r, params["boundary"])
	case isJSONType(mt):
		return s.submitJSON(w, r)
	}
	return errorf(http.StatusUnsupportedMediaType, protocol.CodeBadRequest,
		"Content-Type %q: want multipart/form-data or application/json", mt)
}

// submitJSON creates a job over inputs already in the object store.
func (s *Server) submitJSON(w http.ResponseWriter, r *http.Request) error {
	var req protocol.SubmitRequest
	if err := decodeJSON(w, r, &req, 0); err != nil {
		return err
	}
	ctx := r.Context()
	sub := submission{
		priority: req.Priority, workerType: req.WorkerType, idempotencyKey: req.IdempotencyKey,
		avatarKey: req.AvatarKey, audioKey: req.AudioKey, avatarID: req.AvatarID, params: req.Params,
	}
	for _, c := range []struct{ name, key string }{{"avatar_key", req.AvatarKey}, {"audio_key", req.AudioKey}} {
		if c.key == "" {
			return badRequest("%s: required, the object key of an input already in the object store", c.name)
		}
		if err := validKey(c.key, c.name); err != nil {
			return err
		}
	}
	for _, check := range []error{
		validatePriority(sub.priority), validateWorkerType(sub.workerType), validateAvatarID(sub.avatarID),
		validateIdempotencyKey(sub.idempotencyKey), validateParams(&sub.params),
	} {
		if check != nil {
			return check
		}
	}
	for _, c := range []struct{ name, key string }{{"avatar_key", req.AvatarKey}, {"audio_key", req.AudioKey}} {
		st, err := s.blob.Stat(ctx, c.key)
		if errors.Is(err, blob.ErrNotFound) {
			return badRequest("%s: object %q is not in the object store", c.name, c.key)
		}
		if err != nil {
			return fmt.Errorf("stat of %s %s: %w", c.name, c.key, err)
		}
		if st.Size == 0 {
			return badRequest("%s: object %q is empty", c.name, c.key)
		}
	}
	if sub.avatarID == "" {
		sum := sha256.Sum256([]byte(req.AvatarKey))
		sub.avatarID = hex.EncodeToString(sum[:])[:avatarIDHexLen]
	}
	id, err := newJobID()
	if err != nil {
		return err
	}
	sub.id = id
	_, err = s.insertJob(ctx, w, &sub)
	return err
}

// insertJob stores the job and writes the answer. It reports whether the
// idempotency key named an existing job (which is then the answer).
func (s *Server) insertJob(ctx context.Context, w http.ResponseWriter, sub *submission) (existed bool, err error) {
	params, err := json.Marshal(sub.params)
	if err != nil {
		return false, fmt.Errorf("encoding params: %w", err)
	}
	info(ctx).jobID = sub.id
	job, existed, err := s.store.JobInsert(ctx, &store.JobInsertParams{
		ID: sub.id, Priority: sub.priority, WorkerType: sub.workerType, IdempotencyKey: sub.idempotencyKey,
		AvatarKey: sub.avatarKey, AudioKey: sub.audioKey, AvatarID: sub.avatarID, Params: params,
		TraceContext: traceContext(ctx), MaxInterruptions: s.cfg.MaxInterruptions, MaxFailures: s.cfg.MaxFailures,
		Now: s.now(),
	})
	if err != nil {
		return false, fmt.Errorf("inserting job: %w", err)
	}
	info(ctx).jobID = job.ID
	w.Header().Set("Location", protocol.Path(protocol.GetJobRoute, job.ID))
	if existed {
		writeJSON(w, http.StatusOK, jobView(job, nil))
		return true, nil
	}
	s.jobEvent(ctx, job, "job.submitted")
	s.log.InfoContext(ctx, "job submitted", "job_id", job.ID, "priority", job.Priority,
		"worker_type", job.WorkerType, "avatar_id", job.AvatarID)
	writeJSON(w, http.StatusCreated, jobView(job, nil))
	return false, nil
}

// fileReader passes an uploaded file through to the object store,
// counting it against its limit and hashing it on the way.
type fileReader struct {
	r       io.Reader
	limit   int64
	n       int64
	h       hash.Hash // nil: no hash
	over    bool      // the file passed its limit
	readErr error     // a read error from the request (not EOF, not the limit)
}

var errFileTooLarge = errors.New("file larger than its limit")

func (f *fileReader) Read(p []byte) (int, error) {
	if rem := f.limit + 1 - f.n; int64(len(p)) > rem {
		p = p[:rem]
	}
	n, err := f.r.Read(p)
	f.n += int64(n)
	if f.h != nil {
		f.h.Write(p[:n])
	}
	if f.n > f.limit {
		f.over = true
		return n, errFileTooLarge
	}
	if err != nil && !errors.Is(err, io.EOF) {
		f.readErr = err
	}
	return n, err
}

// fileExt returns the lower-cased extension of an uploaded file's name
// ("" when it has none), or an error naming the field.
func fileExt(field, filename string) (string, error) {
	ext := strings.ToLower(path.Ext(path.Base(strings.ReplaceAll(filename, `\`, "/"))))
	if ext == "" {
		return "", nil
	}
	if !extPattern.MatchString(ext) {
		return "", badRequest("%s: file name extension %q is not allowed (want a dot and 1-10 letters or digits)", field, ext)
	}
	return ext, nil
}

// submitMultipart streams the avatar and audio files into the object
// store under inputs/<job>/ and creates the job. Nothing is buffered
// whole; the limits are enforced while streaming and the stored files are
// removed again if the submission fails or repeats an idempotency key.
func (s *Server) submitMultipart(w http.ResponseWriter, r *http.Request, boundary string) error {
	if boundary == "" {
		return badRequest("Content-Type: multipart/form-data without a boundary")
	}
	limit := s.cfg.MaxUploadBytes
	if r.ContentLength > limit {
		return tooLarge("request body: %d bytes exceeds the upload limit of %d bytes", r.ContentLength, limit)
	}
	id, err := newJobID()
	if err != nil {
		return err
	}
	ctx := r.Context()
	info(ctx).jobID = id
	body := &limitReader{r: http.MaxBytesReader(w, r.Body, limit)}
	mr := multipart.NewReader(body, boundary)

	var stored []string
	keep := false
	defer func() {
		if keep {
			return
		}
		for _, key := range stored {
			if derr := s.blob.Delete(context.WithoutCancel(ctx), key); derr != nil {
				s.log.WarnContext(ctx, "removing the inputs of a failed submission", "key", key, "error", derr)
			}
		}
	}()

	sub := submission{id: id}
	var avatarSum []byte
	seen := map[string]bool{}
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if body.over {
				return tooLarge("request body: exceeds the upload limit of %d bytes", limit)
			}
			return badRequest("multipart body: malformed: %v", err)
		}
		name := part.FormName()
		if seen[name] {
			return badRequest("%s: given more than once", name)
		}
		seen[name] = true
		switch name {
		case "avatar", "audio":
			key, sum, err := s.storeInput(ctx, part, body, name, id)
			if err != nil {
				return err
			}
			stored = append(stored, key)
			if name == "avatar" {
				sub.avatarKey, avatarSum = key, sum
			} else {
				sub.audioKey = key
			}
		case "params", "priority", "idempotency_key", "worker_type", "avatar_id":
			v, err := io.ReadAll(io.LimitReader(part, maxFormField+1))
			if err != nil {
				if body.over {
					return tooLarge("request body: exceeds the upload limit of %d bytes", limit)
				}
				return badRequest("%s: reading the form field: %v", name, err)
			}
			if len(v) > maxFormField {
				return badRequest("%s: longer than %d bytes", name, maxFormField)
			}
			if err := sub.setField(name, string(v)); err != nil {
				return err
			}
		default:
			return badRequest("unknown form field %q; want avatar, audio, params, priority, idempotency_key, worker_type, avatar_id", name)
		}
		_ = part.Close()
	}
	if sub.avatarKey == "" {
		return badRequest("avatar: missing; send the avatar video or image as the file field \"avatar\"")
	}
	if sub.audioKey == "" {
		return badRequest("audio: missing; send the speech track as the file field \"audio\"")
	}
	if sub.avatarID == "" {
		sub.avatarID = hex.EncodeToString(avatarSum)[:avatarIDHexLen]
	}
	existed, err := s.insertJob(ctx, w, &sub)
	if err != nil {
		return err
	}
	keep = !existed // a repeat answers with the first job; our copies go
	return nil
}

// storeInput streams one file part to inputs/<job>/<field><ext> and
// returns the key and the SHA-256 of the content.
func (s *Server) storeInput(ctx context.Context, part *multipart.Part, body *limitReader, field, jobID string) (string, []byte, error) {
	ext, err := fileExt(field, part.FileName())
	if err != nil {
		return "", nil, err
	}
	key := "inputs/" + jobID + "/" + field + ext
	limit := s.cfg.MaxAvatarBytes
	if field == "audio" {
		limit = s.cfg.MaxAudioBytes
	}
	fr := &fileReader{r: part, limit: limit, h: sha256.New()}
	if err := s.blob.Put(ctx, key, fr, -1); err != nil {
		switch {
		case fr.over:
			return "", nil, tooLarge("%s: larger than the limit of %d bytes", field, limit)
		case body.over:
			return "", nil, tooLarge("request body: exceeds the upload limit of %d bytes", s.cfg.MaxUploadBytes)
		case fr.readErr != nil:
			return "", nil, badRequest("%s: reading the upload: %v", field, fr.readErr)
		}
		return "", nil, fmt.Errorf("storing %s: %w", key, err)
	}
	if fr.n == 0 {
		_ = s.blob.Delete(context.WithoutCancel(ctx), key)
		return "", nil, badRequest("%s: the file is empty", field)
	}
	return key, fr.h.Sum(nil), nil
}

// setField applies one validated form field of a multipart submission.
func (sub *submission) setField(name, v string) error {
	switch name {
	case "params":
		if strings.TrimSpace(v) == "" {
			return nil
		}
		if err := decodeJSONBytes([]byte(v), &sub.params, "params"); err != nil {
			return err
		}
		return validateParams(&sub.params)
	case "priority":
		if strings.TrimSpace(v) == "" {
			return nil
		}
		p, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return badRequest("priority: %q is not an integer", v)
		}
		sub.priority = p
		return validatePriority(p)
	case "idempotency_key":
		sub.idempotencyKey = v
		return validateIdempotencyKey(v)
	case "worker_type":
		sub.workerType = protocol.WorkerType(strings.TrimSpace(v))
		return validateWorkerType(sub.workerType)
	case "avatar_id":
		sub.avatarID = strings.TrimSpace(v)
		return validateAvatarID(sub.avatarID)
	}
	return badRequest("unknown form field %q", name)
}

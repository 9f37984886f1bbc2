package control

import (
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/protocol"
)

// jobView is the public face of a job; attempts may be nil (lists).
// Fencing tokens never appear.
func jobView(j *store.Job, attempts []*store.Attempt) protocol.JobView {
	v := protocol.JobView{
		ID: j.ID, State: j.State, Priority: j.Priority, WorkerType: j.WorkerType, IdempotencyKey: j.IdempotencyKey,
		Inputs:   protocol.Inputs{AvatarKey: j.AvatarKey, AudioKey: j.AudioKey},
		AvatarID: j.AvatarID, Attempt: j.Attempt, WorkerID: j.WorkerID, Progress: j.Progress,
		Interruptions: j.Interruptions, Failures: j.Failures, Error: j.Error, OutputKey: j.OutputKey,
		CreatedAt: j.CreatedAt, UpdatedAt: j.UpdatedAt, FinishedAt: j.FinishedAt, TraceContext: j.TraceContext,
		TraceID: traceID(j.TraceContext),
	}
	if len(j.Params) > 0 {
		// Params were validated and encoded by this package; a row that no
		// longer decodes shows zero params rather than failing the read.
		_ = json.Unmarshal(j.Params, &v.Params)
	}
	if j.State == protocol.JobRunning {
		v.LeaseExpiresAt = j.LeaseExpiresAt
	}
	if j.State == protocol.JobQueued && !j.RunAfter.IsZero() && j.RunAfter.After(j.UpdatedAt) {
		t := j.RunAfter
		v.RunAfter = &t
	}
	if j.State == protocol.JobSucceeded {
		v.ResultPath = protocol.Path(protocol.JobResultRoute, j.ID)
		v.ProgressFraction = 1
	} else if p := j.Progress; p != nil && p.FramesTotal > 0 {
		v.ProgressFraction = float64(p.FramesDone) / float64(p.FramesTotal)
	}
	for _, a := range attempts {
		v.Attempts = append(v.Attempts, protocol.AttemptView{
			Attempt: a.Number, WorkerID: a.WorkerID, Outcome: a.Outcome, Error: a.Error,
			StartedAt: a.StartedAt, EndedAt: a.EndedAt, OutputKey: a.OutputKey,
		})
	}
	return v
}

func workerView(w *store.Worker) protocol.WorkerView {
	return protocol.WorkerView{
		ID: w.ID, WorkerType: w.WorkerType, Provider: w.Provider, GPUClass: w.GPUClass, Status: w.Status,
		Version: w.Version, FirstSeen: w.FirstSeen, LastSeen: w.LastSeen, JobID: w.JobID, Attempt: w.Attempt,
		DrainRequest: w.DrainRequested, CachedAvatars: w.CachedAvatars, SelfCheck: w.SelfCheck,
	}
}

// encodeCursor makes the opaque ?cursor= value that continues a job list
// after j.
func encodeCursor(j *store.Job) string {
	raw := strconv.FormatInt(j.CreatedAt.UnixNano(), 10) + "|" + j.ID
	return base64.RawURLEncoding.EncodeToString([]byte(raw))
}

// decodeCursor reads a value made by encodeCursor.
func decodeCursor(s string) (*store.JobCursor, error) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, badRequest("cursor: %q is not a cursor this API returned", s)
	}
	ns, id, ok := strings.Cut(string(raw), "|")
	n, err := strconv.ParseInt(ns, 10, 64)
	if !ok || err != nil || !protocol.ValidID(id) {
		return nil, badRequest("cursor: %q is not a cursor this API returned", s)
	}
	return &store.JobCursor{CreatedAt: time.Unix(0, n).UTC(), ID: id}, nil
}

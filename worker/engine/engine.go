// Package engine is the seam between the worker daemon and the code that
// turns an avatar and a speech track into a video: the MuseTalk pipeline,
// or the preview engine that only muxes the inputs. Engines never talk to
// the control plane or the object store; the worker hands them local files.
package engine

import (
	"context"

	"github.com/avatargen/musetalk/protocol"
)

// Engine renders one job from local files. Implementations must be safe
// for one Run at a time; the worker never runs two jobs at once.
type Engine interface {
	// Name is the engine's name as jobs select it in protocol.JobParams.Engine
	// ("musetalk", "preview").
	Name() string
	// Check inspects the engine's prerequisites (tools, device, weights) at
	// start-up. A non-nil error means the engine cannot run jobs; the worker
	// reports it and does not claim.
	Check(ctx context.Context) (CheckResult, error)
	// Run renders job.OutputPath from job.AvatarPath and job.AudioPath,
	// calling progress as it goes (from any goroutine, never concurrently).
	// It returns promptly with ctx's error once ctx is done. Errors caused
	// by the job's inputs should be wrapped with Permanent.
	Run(ctx context.Context, job *Job, progress ProgressFunc) error
}

// CheckResult is what an engine found about itself.
type CheckResult struct {
	Device         string // "cpu", "cuda:0 NVIDIA GeForce RTX 3060", ...
	WeightsPresent bool   // true when the engine needs no weights
}

// AvatarCacher is implemented by engines that keep prepared avatars; the
// worker reports the list in heartbeats and claims so that the control
// plane can prefer jobs whose avatar is already prepared here.
type AvatarCacher interface {
	CachedAvatars() []string
}

// Job is one attempt of a job, with its inputs already on local disk.
type Job struct {
	ID         string
	Attempt    int
	AvatarID   string // cache identity of the avatar ("" when the job names none)
	AvatarPath string // a still image or a video
	AudioPath  string // the speech track
	OutputPath string // where Run writes the MP4
	WorkDir    string // scratch directory for this attempt, removed afterwards
	Params     protocol.JobParams
}

// ProgressFunc receives an engine's progress. FramesDone only grows within
// a stage.
type ProgressFunc func(protocol.Progress)

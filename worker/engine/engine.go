// Package engine is the seam between the worker daemon and the code that
// turns an avatar and a speech track into a video: the MuseTalk pipeline,
// or the preview engine that only muxes the inputs. Engines never talk to
// the control plane or the object store; the worker hands them local files.
package engine

import (
	"context"
	"time"

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
	// StageTime, when not nil, receives the time Run spent in each of the
	// engine's stages, once it has succeeded (the worker records it as a
	// metric). Stages are the engine's own (MuseTalk: load, prepare,
	// features, unet, vae_decode, blend, encode); where they overlap (the
	// networks run while earlier frames are blended and encoded) each is
	// that stage's busy time, and together they may exceed the run.
	StageTime func(stage string, d time.Duration)
}

// DeviceMemoryReporter is implemented by engines that can say how much
// device (GPU) memory they hold; the worker exports it as a metric.
type DeviceMemoryReporter interface {
	// DeviceMemory returns the bytes the engine's device allocator holds
	// for live tensors (inUse) and freed ones kept for reuse (pooled); ok
	// is false while the engine has no device memory to report (not
	// started yet, or running on the CPU).
	DeviceMemory() (inUse, pooled int64, ok bool)
}

// ProgressFunc receives an engine's progress. FramesDone only grows within
// a stage.
type ProgressFunc func(protocol.Progress)

package musetalk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/avatargen/musetalk/internal/outfile"
	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/protocol"
	"github.com/avatargen/musetalk/worker/engine"
)

// EngineName is the engine's name in protocol.JobParams.Engine.
const EngineName = "musetalk"

// EngineOptions configure [NewEngine].
type EngineOptions struct {
	// Options configure the engine's Renderer. Options.NewBackend suits a
	// worker: the device starts at the first Check or Run, not when the
	// engine is configured, and one that failed to start is tried again
	// at the next call.
	Options
	// Versions are the MuseTalk versions whose weights the start-up check
	// looks for; default [DefaultVersion]. Jobs may ask for any version
	// whose files are in the weight directory.
	Versions []string
}

// Engine is the worker's MuseTalk engine (worker/engine.Engine and
// engine.AvatarCacher). It makes its Renderer on the first Check or Run,
// and the Renderer loads each version's networks once, on first use (Check
// loads the first of Versions when its weights are present).
//
// A worker without weights must not take MuseTalk jobs: Check fails with a
// *[MissingWeightsError] naming the missing files and the `musetalk
// weights fetch` command, so the worker reports it in its self-check and
// claims nothing (an operator who wants the preview engine alone runs
// `--engine preview`). Should the weights vanish after the check, a job
// fails retryably, for a worker that has them.
//
// Errors from the job's inputs (*[InputError]) are permanent; other
// failures are left unclassified, which the worker retries.
type Engine struct {
	opts EngineOptions

	mu  sync.Mutex
	r   *Renderer
	ids map[string]string // avatar cache key → the job's avatar id
}

var (
	_ engine.Engine               = (*Engine)(nil)
	_ engine.AvatarCacher         = (*Engine)(nil)
	_ engine.DeviceMemoryReporter = (*Engine)(nil)
)

// DeviceMemory reports what the backend's allocator holds on the device
// when the backend reports it (kernels.DeviceMemoryReporter: the CUDA
// backend); ok is false on the CPU and before the backend has started.
// It never waits for a backend that is starting.
func (e *Engine) DeviceMemory() (inUse, pooled int64, ok bool) {
	if !e.mu.TryLock() { // the Renderer is being made (or the avatar ids saved)
		return 0, 0, false
	}
	r := e.r
	e.mu.Unlock()
	if r == nil {
		return 0, 0, false
	}
	m, ok := r.backend.(kernels.DeviceMemoryReporter)
	if !ok {
		return 0, 0, false
	}
	inUse, pooled = m.DeviceMemory()
	return inUse, pooled, true
}

// NewEngine returns the engine; it opens nothing until Check or Run.
func NewEngine(opts EngineOptions) *Engine {
	if len(opts.Versions) == 0 {
		opts.Versions = []string{DefaultVersion}
	}
	return &Engine{opts: opts, ids: map[string]string{}}
}

// Name returns "musetalk".
func (e *Engine) Name() string { return EngineName }

// renderer makes the Renderer once.
func (e *Engine) renderer(ctx context.Context) (*Renderer, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.r != nil {
		return e.r, nil
	}
	r, err := New(ctx, e.opts.Options)
	if err != nil {
		return nil, err
	}
	e.r = r
	e.loadIDsLocked()
	return r, nil
}

// avatarIDsFile, in the avatar cache's directory, maps cache keys to the
// control plane's avatar ids, so that a restarted worker reports the
// avatars it still holds (and is preferred for their jobs) at once.
const avatarIDsFile = "avatar-ids.json"

// loadIDsLocked reads avatarIDsFile; a missing or unreadable file only
// costs the preference until jobs name the avatars again.
func (e *Engine) loadIDsLocked() {
	data, err := os.ReadFile(filepath.Join(e.r.opts.CacheDir, avatarIDsFile))
	if err != nil {
		return
	}
	var ids map[string]string
	if err := json.Unmarshal(data, &ids); err != nil {
		e.r.log.Warn("musetalk engine: ignoring the avatar id file", "err", err)
		return
	}
	for k, id := range ids {
		if _, ours := e.ids[k]; !ours && protocol.ValidID(id) {
			e.ids[k] = id
		}
	}
}

// saveIDsLocked writes avatarIDsFile atomically. Processes sharing the
// cache directory (workers on one host, `render`) each keep their own map:
// the ids already on disk are merged in first, and each writes through its
// own temporary file, so none erases another's ids or reads a mixed file.
func (e *Engine) saveIDsLocked() {
	e.loadIDsLocked() // the other processes' ids; ours win where both exist
	data, err := json.Marshal(e.ids)
	if err == nil {
		err = outfile.WriteFile(filepath.Join(e.r.opts.CacheDir, avatarIDsFile), data)
	}
	if err != nil {
		e.r.log.Warn("musetalk engine: saving the avatar ids", "err", err)
	}
}

// Check reports the device ([Renderer.Device]: the backend's Name and
// precision, e.g. "cpu/avx2 (fp32)"; empty when the backend could not be
// started) and whether the weight directory
// holds every file of the configured versions, and loads the first
// version's networks. Missing weights (see [Engine]), a backend that does
// not start, a cache directory that cannot be opened and weights that
// cannot be loaded are errors.
func (e *Engine) Check(ctx context.Context) (engine.CheckResult, error) {
	var res engine.CheckResult
	r, err := e.renderer(ctx)
	if err != nil {
		return res, fmt.Errorf("musetalk engine: %w", err)
	}
	res.Device = r.Device()
	if err := r.CheckWeights(e.opts.Versions...); err != nil {
		return res, fmt.Errorf("musetalk engine: %w", err)
	}
	res.WeightsPresent = true
	if err := r.Load(ctx, e.opts.Versions[0]); err != nil {
		return res, fmt.Errorf("musetalk engine: %w", err)
	}
	return res, nil
}

// Run renders the job. Input failures are engine.Permanent, missing
// weights engine.Retryable; a cancelled ctx returns its cause.
func (e *Engine) Run(ctx context.Context, job *engine.Job, progress engine.ProgressFunc) error {
	r, err := e.renderer(ctx)
	if err != nil {
		return fmt.Errorf("musetalk engine: %w", err)
	}
	st := new(Stats)
	res, err := r.render(ctx, Request{AvatarPath: job.AvatarPath, AudioPath: job.AudioPath, OutPath: job.OutputPath, Params: job.Params, Stats: st}, progress)
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		if IsInputError(err) {
			return engine.Permanent(err)
		}
		var mw *MissingWeightsError
		if errors.As(err, &mw) {
			return engine.Retryable(err)
		}
		return err
	}
	if job.StageTime != nil {
		for _, s := range []struct {
			name string
			d    time.Duration
		}{
			{SpanLoad, st.Load}, {SpanPrepare, st.Prepare}, {SpanFeatures, st.Features}, {SpanUNet, st.UNet},
			{SpanVAEDecode, st.VAEDecode}, {SpanBlend, st.Blend}, {SpanEncode, st.Encode},
		} {
			if s.d > 0 || s.name != SpanLoad { // the networks load once per version
				job.StageTime(s.name, s.d)
			}
		}
	}
	if job.AvatarID != "" {
		e.mu.Lock()
		if e.ids[res.AvatarKey] != job.AvatarID {
			e.ids[res.AvatarKey] = job.AvatarID
			e.saveIDsLocked()
		}
		e.mu.Unlock()
	}
	return nil
}

// CachedAvatars lists the avatar ids of the jobs whose prepared avatars
// are still in the cache, most recently used first. The ids are the
// control plane's (engine.Job.AvatarID); the cache's own keys also cover
// the options and the weights. The mapping survives restarts in the cache
// directory.
func (e *Engine) CachedAvatars() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.r == nil {
		return nil
	}
	var out []string
	seen := map[string]bool{}
	live := map[string]bool{}
	for _, k := range e.r.CachedAvatars() {
		live[k] = true
		if id, ok := e.ids[k]; ok && !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	forgot := false
	for k := range e.ids { // forget evicted entries
		if !live[k] {
			delete(e.ids, k)
			forgot = true
		}
	}
	if forgot {
		e.saveIDsLocked()
	}
	return out
}

// Close releases the Renderer's networks and the backend it made (see
// [Options.Backend]).
func (e *Engine) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.r == nil {
		return nil
	}
	err := e.r.Close()
	e.r = nil
	return err
}

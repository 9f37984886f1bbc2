package musetalk

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/media"
	"github.com/avatargen/musetalk/musetalk/avatar"
	"github.com/avatargen/musetalk/musetalk/face"
	"github.com/avatargen/musetalk/musetalk/modeldir"
	"github.com/avatargen/musetalk/protocol"
)

// Defaults of [Options] and [protocol.JobParams] fields left zero.
const (
	DefaultVersion       = modeldir.V15
	DefaultBatchSize     = 20
	DefaultCRF           = 18
	DefaultCacheMaxBytes = 20 << 30
)

// Progress stages, in the order a render passes through them. FramesDone
// only grows within a stage.
const (
	StageLoad     = "load"     // loading the networks (0/0)
	StagePrepare  = "prepare"  // avatar frames prepared / avatar frames
	StageFeatures = "features" // audio features, in output frames covered
	StageGenerate = "generate" // output frames generated, blended and piped to the encoder
	StageEncode   = "encode"   // the encoder has finished the file (total/total)
)

// Options configure a [Renderer]. Zero values take defaults.
type Options struct {
	// WeightsDir is the weight directory (modeldir layout); default
	// modeldir.Default().
	WeightsDir string
	// Backend runs the networks and stays the caller's: the Renderer never
	// closes it. Exactly one of Backend and NewBackend must be set; the
	// package names no backend itself.
	Backend kernels.Backend
	// NewBackend makes the backend, once, in [New]; the Renderer owns what
	// it returns and closes it in Close. A failure fails New, so the
	// worker's engine, which makes its Renderer in its first Check or Run,
	// reports a device that cannot start and tries again on the next call.
	NewBackend func() (kernels.Backend, error)
	// CacheDir holds prepared avatars; default DefaultCacheDir().
	CacheDir string
	// CacheMaxBytes bounds the avatar cache; default DefaultCacheMaxBytes
	// (20 GiB).
	CacheMaxBytes int64
	// CRF is libx264's quality, 1..51; default DefaultCRF (18, MuseTalk's).
	CRF int
	// Preset is libx264's preset; default "medium".
	Preset string
	// FFmpeg runs ffmpeg and ffprobe; the zero value finds them on PATH.
	FFmpeg media.FFmpeg
	// Logger receives progress notes at debug level and load times at
	// info; default slog.Default().
	Logger *slog.Logger
}

// DefaultCacheDir returns the avatar cache's default place:
// $MUSETALK_AVATAR_CACHE, else $XDG_CACHE_HOME/musetalk/avatars, else
// ~/.cache/musetalk/avatars (the system's temporary directory stands in
// for a missing home).
func DefaultCacheDir() string {
	if d := os.Getenv("MUSETALK_AVATAR_CACHE"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "musetalk", "avatars")
	}
	if h, err := os.UserHomeDir(); err == nil && h != "" {
		return filepath.Join(h, ".cache", "musetalk", "avatars")
	}
	return filepath.Join(os.TempDir(), "musetalk", "avatars")
}

// Renderer runs the MuseTalk pipeline: it holds the backend, the networks
// of each version used so far (loaded on first use, once) and the avatar
// cache. It is safe for concurrent use, but renders share the backend,
// so they run one at a time.
type Renderer struct {
	opts       Options
	weights    modeldir.Dir
	backend    kernels.Backend
	ownBackend bool
	cache      *avatar.Cache
	log        *slog.Logger

	renderMu sync.Mutex // one render at a time
	mu       sync.Mutex // guards models
	models   map[string]*loaded
}

// loaded is one version's networks and what is built on them.
type loaded struct {
	m         *modeldir.Models
	net       *modelNet
	logMel    *media.LogMel
	detector  *face.Detector
	landmarks dwposeLandmarks
	parser    *face.Parser
}

func (l *loaded) close() {
	l.net.close()
	l.m.Close()
}

// New opens the avatar cache and takes or makes the backend (see
// [Options.Backend]). It loads no network: that happens on the first
// render of each version, or in Load.
func New(ctx context.Context, opts Options) (*Renderer, error) {
	opts.WeightsDir = cmp.Or(opts.WeightsDir, modeldir.Default())
	opts.CacheDir = cmp.Or(opts.CacheDir, DefaultCacheDir())
	if opts.CacheMaxBytes <= 0 {
		opts.CacheMaxBytes = DefaultCacheMaxBytes
	}
	opts.CRF = cmp.Or(opts.CRF, DefaultCRF)
	if opts.CRF < 1 || opts.CRF > 51 {
		return nil, fmt.Errorf("musetalk: CRF %d is outside 1..51", opts.CRF)
	}
	if (opts.Backend == nil) == (opts.NewBackend == nil) {
		return nil, errors.New("musetalk: set exactly one of Options.Backend and Options.NewBackend")
	}
	r := &Renderer{opts: opts, weights: modeldir.Dir(opts.WeightsDir), log: cmp.Or(opts.Logger, slog.Default()),
		models: map[string]*loaded{}}
	cache, err := avatar.OpenCache(opts.CacheDir, opts.CacheMaxBytes, avatar.WithLogger(r.log))
	if err != nil {
		return nil, fmt.Errorf("musetalk: opening the avatar cache: %w", err)
	}
	r.cache = cache
	if opts.Backend != nil {
		r.backend = opts.Backend
		return r, nil
	}
	b, err := opts.NewBackend()
	if err != nil {
		return nil, fmt.Errorf("musetalk: starting the backend: %w", err)
	}
	if b == nil {
		return nil, errors.New("musetalk: starting the backend: Options.NewBackend returned no backend")
	}
	r.backend, r.ownBackend = b, true
	return r, nil
}

// Device names the backend the networks run on and the precision it
// stores tensors at ([kernels.PrecisionOf]): its Name and the precision in
// parentheses, e.g. "cpu/avx2 (fp32)" or "cuda/NVIDIA L4 (fp16)".
func (r *Renderer) Device() string {
	return fmt.Sprintf("%s (%s)", r.backend.Name(), kernels.PrecisionOf(r.backend))
}

// WeightsDir returns the weight directory in use.
func (r *Renderer) WeightsDir() string { return string(r.weights) }

// CheckWeights reports whether the weight directory holds every file the
// versions need (none means DefaultVersion): nil or a
// *[MissingWeightsError]. It only looks for the files.
func (r *Renderer) CheckWeights(versions ...string) error {
	if len(versions) == 0 {
		versions = []string{DefaultVersion}
	}
	if err := r.weights.Check(versions...); err != nil {
		return r.weightsError(versions, err)
	}
	return nil
}

func (r *Renderer) weightsError(versions []string, err error) error {
	var me *modeldir.MissingError
	if errors.As(err, &me) {
		return &MissingWeightsError{Dir: string(r.weights), Versions: versions, Err: err}
	}
	return err
}

// CachedAvatars lists the avatar cache's keys, most recently used first.
func (r *Renderer) CachedAvatars() []string { return r.cache.Keys() }

// Load loads version's networks unless they are loaded already. Renders
// call it; calling it up front moves the cost out of the first render.
func (r *Renderer) Load(ctx context.Context, version string) error {
	_, err := r.load(ctx, version)
	return err
}

func (r *Renderer) load(ctx context.Context, version string) (*loaded, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if l := r.models[version]; l != nil {
		return l, nil
	}
	if err := modeldir.CheckVersion(version); err != nil {
		return nil, paramErrorf("version", "%v", err)
	}
	m, err := r.weights.Load(ctx, r.backend, version)
	if err != nil {
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		return nil, fmt.Errorf("loading the %s networks: %w", version, r.weightsError([]string{version}, err))
	}
	l, err := r.build(m)
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("weights in %s: %w", r.weights, err)
	}
	r.models[version] = l
	return l, nil
}

// build derives what renders need from freshly loaded networks.
func (r *Renderer) build(m *modeldir.Models) (*loaded, error) {
	wc := m.Whisper.Config()
	vc := m.VAE.Config()
	blocks := len(vc.BlockOutChannels)
	if blocks == 0 || avatar.CropSize%(1<<(blocks-1)) != 0 {
		return nil, fmt.Errorf("the VAE's %d blocks do not divide the %d-pixel face crop", blocks, avatar.CropSize)
	}
	tokens := 2 * (audioPadLeft + audioPadRight + 1) * wc.HiddenStates()
	net, err := newModelNet(r.backend, m.UNet, m.VAE, avatar.CropSize>>(blocks-1), tokens, wc.DModel)
	if err != nil {
		return nil, err
	}
	lmCfg := media.WhisperLogMelConfig()
	if raw, err := os.ReadFile(filepath.Join(string(r.weights), "whisper", "preprocessor_config.json")); err == nil {
		if lmCfg, err = media.ParseLogMelConfig(raw); err != nil {
			net.close()
			return nil, fmt.Errorf("whisper/preprocessor_config.json: %w", err)
		}
	}
	if lmCfg.NMels != wc.NumMelBins || lmCfg.MaxFrames() != wc.MelFrames() {
		net.close()
		return nil, fmt.Errorf("the log-mel front end (%d mels, %d frames) does not fit the Whisper encoder (%d mels, %d frames)",
			lmCfg.NMels, lmCfg.MaxFrames(), wc.NumMelBins, wc.MelFrames())
	}
	lm, err := media.NewLogMel(lmCfg)
	if err != nil {
		net.close()
		return nil, fmt.Errorf("whisper/preprocessor_config.json: %w", err)
	}
	return &loaded{m: m, net: net, logMel: lm, detector: face.NewDetector(m.S3FD, r.backend),
		landmarks: dwposeLandmarks{m.DWPose}, parser: face.NewParser(m.BiSeNet, r.backend)}, nil
}

// Close releases the networks and, when it came from
// [Options.NewBackend], the backend. Renders must have returned.
func (r *Renderer) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for v, l := range r.models {
		l.close()
		delete(r.models, v)
	}
	if r.ownBackend {
		return r.backend.Close()
	}
	return nil
}

// Request is one render.
type Request struct {
	// AvatarPath is a still image or a video with the face.
	AvatarPath string
	// AudioPath is the speech track (any file ffmpeg reads with an audio
	// stream).
	AudioPath string
	// OutPath is the MP4 to write. It appears only when the render
	// succeeds (written beside it under a temporary name, then renamed).
	OutPath string
	// Params are the job's parameters (version, batch size, fps, face box,
	// …); zero values take the defaults.
	Params protocol.JobParams
	// Stats, when non-nil, receives where the render's time went.
	Stats *Stats
}

// Stats are where one render's time went, for benchmarks and logs. The
// networks run on their own goroutine while earlier frames are blended and
// encoded, so UNet and VAEDecode overlap Blend and Encode: each is that
// stage's busy time, and together they may exceed Wall.
type Stats struct {
	Load      time.Duration // loading the version's networks (zero once loaded)
	Prepare   time.Duration // avatar preparation, or opening the cached one
	S3FD      time.Duration // the S3FD detector, part of Prepare
	DWPose    time.Duration // DWPose (face landmarks), part of Prepare
	Features  time.Duration // audio decode, log-mel and the Whisper encoder
	UNet      time.Duration // the UNet, all batches
	VAEDecode time.Duration // the VAE decoder, all batches
	Blend     time.Duration // uint8 faces resized back and blended
	Encode    time.Duration // waiting on ffmpeg: frame writes and the final flush
	Wall      time.Duration // the whole Render call

	AvatarFrames int  // frames of the avatar
	AvatarCached bool // the avatar came from the cache
	S3FDFrames   int  // avatar frames S3FD ran on
	DWPoseFrames int  // avatar frames DWPose ran on (those where S3FD found a face)
	Frames       int  // output frames
	FaceFrames   int  // output frames that went through the networks
}

// result describes a finished render.
type result struct {
	// AvatarKey is the prepared avatar's cache key; AvatarCached says it
	// was in the cache already.
	AvatarKey    string
	AvatarCached bool
	// Frames is the output's frame count; FPS its frame rate.
	Frames int
	FPS    *big.Rat
	// FaceFrames counts the avatar's source frames with a face.
	FaceFrames int
}

package musetalk

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/avatargen/musetalk/internal/outfile"
	"github.com/avatargen/musetalk/media"
	"github.com/avatargen/musetalk/musetalk/avatar"
	"github.com/avatargen/musetalk/protocol"
)

// Render makes req.OutPath: the avatar lip-synced to the speech. It
// validates the parameters and probes both inputs, loads the version's
// networks (once per Renderer), prepares the avatar (or takes it from the
// cache), computes the audio features, generates the frames batch by
// batch and pipes them to ffmpeg with the audio muxed in, so memory stays
// bounded whatever the length. See [FrameCount] for the number of frames.
//
// progress (may be nil) receives the stages in order (StageLoad,
// StagePrepare, StageFeatures, StageGenerate, StageEncode), FramesDone
// never decreasing within one. Errors caused by the inputs or parameters
// are *[InputError]s naming the input; missing weights are a
// *[MissingWeightsError]. When ctx is done Render stops within one
// network batch and returns ctx's cause. On any error no file is left at
// OutPath (a file already there is kept).
func (r *Renderer) Render(ctx context.Context, req Request, progress func(protocol.Progress)) error {
	start := time.Now()
	_, err := r.render(ctx, req, progress)
	if req.Stats != nil {
		req.Stats.Wall = time.Since(start)
	}
	return err
}

// plan is a render's checked request.
type plan struct {
	req     Request
	version string
	batch   int
	fps     *big.Rat // nil: the avatar's
	opt     avatar.Options
}

// checkRequest validates the parameters and probes the inputs.
func (r *Renderer) checkRequest(ctx context.Context, req Request) (*plan, error) {
	p := req.Params
	if err := p.Validate(); err != nil {
		return nil, &InputError{Input: "params", Err: err}
	}
	if p.Engine != "" && p.Engine != EngineName {
		return nil, paramErrorf("engine", "%q is not the MuseTalk engine", p.Engine)
	}
	if req.OutPath == "" {
		return nil, errors.New("musetalk: no output path")
	}
	pl := &plan{req: req, version: cmp.Or(p.Version, DefaultVersion), batch: cmp.Or(p.BatchSize, DefaultBatchSize)}
	if p.FPS != "" {
		fps, err := protocol.ParseFPS(p.FPS)
		if err != nil {
			return nil, paramError("fps", err)
		}
		pl.fps = fps
	}
	audioInfo, err := r.opts.FFmpeg.Probe(ctx, req.AudioPath)
	if err != nil {
		return nil, probeError(ctx, "audio", req.AudioPath, err)
	}
	if audioInfo.Audio == nil {
		return nil, inputErrorf("audio", "%s has no audio stream", filepath.Base(req.AudioPath))
	}
	avInfo, err := r.opts.FFmpeg.Probe(ctx, req.AvatarPath)
	if err != nil {
		return nil, probeError(ctx, "avatar", req.AvatarPath, err)
	}
	v := avInfo.Video
	if v == nil {
		return nil, inputErrorf("avatar", "%s has no image or video stream", filepath.Base(req.AvatarPath))
	}
	opt := avatar.DefaultOptions()
	opt.Version = pl.version
	opt.BBoxShift = p.BBoxShift
	opt.ExtraMargin = p.ExtraMargin
	opt.FaceDetector = p.FaceDetector
	if p.ParsingMode == "raw" {
		opt.ParsingMode = media.ParsingRaw
	}
	if p.FaceBox != nil {
		b := media.Box{p.FaceBox[0], p.FaceBox[1], p.FaceBox[2], p.FaceBox[3]}
		if b[2] > v.Width || b[3] > v.Height {
			return nil, paramErrorf("face_box", "%v does not fit the avatar's %dx%d frame", p.FaceBox, v.Width, v.Height)
		}
		opt.FaceBox = &b
	}
	if pl.fps != nil && !v.IsStill {
		// A video is resampled to the requested rate, so it moves at its
		// own speed; a still needs no resampling (and keeps one cache
		// entry whatever the rate).
		opt.FPS = pl.fps
	}
	if _, err := opt.Normalize(); err != nil {
		return nil, &InputError{Input: "params", Err: err}
	}
	pl.opt = opt
	return pl, nil
}

// probeError classifies a failure to probe or decode an input: the file's
// fault unless ffmpeg is missing or ctx ended.
func probeError(ctx context.Context, input, path string, err error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if errors.Is(err, media.ErrBinaryNotFound) {
		return fmt.Errorf("reading the %s: %w", input, err)
	}
	if errors.Is(err, os.ErrNotExist) {
		return inputErrorf(input, "%s does not exist", filepath.Base(path))
	}
	return &InputError{Input: input, Err: err}
}

func (r *Renderer) render(ctx context.Context, req Request, progress func(protocol.Progress)) (*result, error) {
	if progress == nil {
		progress = func(protocol.Progress) {}
	}
	pl, err := r.checkRequest(ctx, req)
	if err != nil {
		return nil, err
	}
	r.renderMu.Lock()
	defer r.renderMu.Unlock()

	st := req.Stats
	if st == nil {
		st = new(Stats)
	}
	mark := time.Now()
	lap := func(d *time.Duration) {
		now := time.Now()
		*d += now.Sub(mark)
		mark = now
	}
	progress(protocol.Progress{Stage: StageLoad})
	sctx, span := startSpan(ctx, SpanLoad, attribute.String("musetalk.version", pl.version))
	nets, err := r.load(sctx, pl.version)
	endSpan(span, err)
	if err != nil {
		return nil, err
	}
	lap(&st.Load)
	sctx, span = startSpan(ctx, SpanDecodeAudio)
	samples, err := r.opts.FFmpeg.DecodeAudio(sctx, req.AudioPath)
	if err != nil {
		err = probeError(ctx, "audio", req.AudioPath, err)
	} else if len(samples) == 0 {
		err = inputErrorf("audio", "%s holds no sound", filepath.Base(req.AudioPath))
	}
	endSpan(span, err)
	if err != nil {
		return nil, err
	}
	lap(&st.Features)

	key, err := avatar.Key(req.AvatarPath, pl.opt, nets.m.ID)
	if err != nil {
		return nil, avatarError(ctx, err)
	}
	progress(protocol.Progress{Stage: StagePrepare})
	prepDone := 0
	sctx, span = startSpan(ctx, SpanPrepare, attribute.String("musetalk.avatar.key", key))
	av, cached, err := r.cache.Get(sctx, key, req.AvatarPath, pl.opt, avatar.Networks{
		Backend: r.backend, VAE: nets.m.VAE, Parser: nets.parser, FFmpeg: &r.opts.FFmpeg, Logger: r.log,
		Detector:  timedDetector{nets.detector, &st.S3FD, &st.S3FDFrames},
		Landmarks: timedLandmarks{nets.landmarks, &st.DWPose, &st.DWPoseFrames},
	}, func(done, total int) {
		if done > prepDone {
			prepDone = done
			progress(protocol.Progress{Stage: StagePrepare, FramesDone: done, FramesTotal: max(total, done)})
		}
	})
	if err != nil {
		err = avatarError(ctx, err)
		endSpan(span, err)
		return nil, err
	}
	span.SetAttributes(attribute.Bool("musetalk.avatar.cached", cached), attribute.Int("musetalk.avatar.frames", len(av.Frames)))
	span.End()
	defer av.Close()
	if !cached {
		// Preparation's activations (VAE encoder, BiSeNet) have sizes
		// generation never asks for: let the memory go back.
		if p, ok := r.backend.(interface{ ReleasePool() }); ok {
			p.ReleasePool()
		}
	}
	lap(&st.Prepare)
	st.AvatarFrames, st.AvatarCached = len(av.Frames), cached
	if cached {
		progress(protocol.Progress{Stage: StagePrepare, FramesDone: len(av.Frames), FramesTotal: len(av.Frames)})
	}
	fps := pl.fps
	if fps == nil {
		fps = av.FPS
	}
	res := &result{AvatarKey: key, AvatarCached: cached, FPS: fps, FaceFrames: av.FaceFrames()}
	r.log.Debug("avatar ready", "key", key, "cached", cached, "frames", len(av.Frames), "face_frames", res.FaceFrames)
	if res.FaceFrames == 0 {
		// Frames without a face pass through, but a video with none at
		// all would come out unchanged: say so instead.
		if p := pl.req.Params.FaceBox; p != nil {
			return nil, paramErrorf("face_box", "%v covers one flat colour in every frame of the avatar: there is no face to animate there", p)
		}
		return nil, inputErrorf("avatar", "no face found in any of its %d frame(s); give a face box x1,y1,x2,y2 if the detector misses it", len(av.Frames))
	}

	total, err := FrameCount(len(samples), fps)
	if err != nil {
		return nil, err
	}
	progress(protocol.Progress{Stage: StageFeatures, FramesTotal: total})
	sctx, span = startSpan(ctx, SpanFeatures, attribute.Int("musetalk.frames", total))
	feats, err := computeFeatures(sctx, nets.m.Whisper, nets.logMel, samples, fps, func(done, segs int) {
		progress(protocol.Progress{Stage: StageFeatures, FramesDone: total * done / segs, FramesTotal: total})
	})
	samples = nil
	endSpan(span, err)
	if err != nil {
		return nil, err
	}
	res.Frames = feats.frames
	lap(&st.Features)
	st.Frames = feats.frames
	if err := r.generateVideo(ctx, pl, av, feats, nets, st, progress); err != nil {
		return nil, err
	}
	return res, nil
}

// avatarError classifies an avatar preparation failure.
func avatarError(ctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return context.Cause(ctx)
	case errors.Is(err, avatar.ErrInvalidOptions), errors.Is(err, media.ErrUnreadable), errors.Is(err, media.ErrNoVideo):
		return &InputError{Input: "avatar", Err: err}
	}
	return err
}

// generateVideo runs the frame loop into a temporary MP4 beside OutPath
// and renames it into place once ffmpeg has finished it.
func (r *Renderer) generateVideo(ctx context.Context, pl *plan, av *avatar.Avatar, feats *features, nets *loaded, st *Stats, progress func(protocol.Progress)) error {
	out := pl.req.OutPath
	tmp, err := outfile.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*.partial.mp4")
	if err != nil {
		return fmt.Errorf("creating the output: %w", err)
	}
	tmpPath := tmp.Name()
	tmp.Close()
	enc, err := r.opts.FFmpeg.NewEncoder(ctx, tmpPath, media.EncodeOptions{
		Width: av.W, Height: av.H, FPS: feats.fps, CRF: r.opts.CRF, Preset: r.opts.Preset,
		AudioPath: pl.req.AudioPath, Frames: feats.frames,
	})
	if err != nil {
		os.Remove(tmpPath)
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if errors.Is(err, media.ErrNoAudio) {
			return &InputError{Input: "audio", Err: err}
		}
		return fmt.Errorf("starting the encoder: %w", err)
	}
	src := make([]sourceFrame, len(av.Frames))
	for i, f := range av.Frames {
		src[i] = sourceFrame{hasFace: f.HasFace, face: f.Face, crop: f.Crop, latent: f.Latent, mask: f.Mask}
	}
	progress(protocol.Progress{Stage: StageGenerate, FramesTotal: feats.frames})
	gctx, span := startSpan(ctx, SpanGenerate, attribute.Int("musetalk.frames", feats.frames), attribute.Int("musetalk.batch_size", pl.batch))
	g := &generation{
		src: src, pixels: av.FrameBGR, audio: feats, net: nets.net, sink: enc,
		frames: feats.frames, batch: pl.batch, stats: st,
		progress: func(done int) {
			progress(protocol.Progress{Stage: StageGenerate, FramesDone: done, FramesTotal: feats.frames})
		},
	}
	err = g.run(gctx)
	span.SetAttributes(attribute.Int("musetalk.face_frames", st.FaceFrames),
		// Busy time of each stage over all batches (they overlap).
		attribute.Float64("musetalk.unet.seconds", st.UNet.Seconds()),
		attribute.Float64("musetalk.vae_decode.seconds", st.VAEDecode.Seconds()),
		attribute.Float64("musetalk.blend.seconds", st.Blend.Seconds()))
	endSpan(span, err)
	if err != nil {
		enc.Abort()
		os.Remove(tmpPath)
		return err
	}
	_, span = startSpan(ctx, SpanEncode)
	flush := time.Now()
	err = enc.Close()
	st.Encode += time.Since(flush)
	if err != nil {
		os.Remove(tmpPath)
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		} else {
			err = fmt.Errorf("encoding the video: %w", err)
		}
	} else if err = os.Rename(tmpPath, out); err != nil {
		os.Remove(tmpPath)
		err = fmt.Errorf("writing the output: %w", err)
	}
	// The encoder's busy time includes the frame writes during generate.
	span.SetAttributes(attribute.Float64("musetalk.encode.seconds", st.Encode.Seconds()))
	endSpan(span, err)
	if err != nil {
		return err
	}
	progress(protocol.Progress{Stage: StageEncode, FramesDone: feats.frames, FramesTotal: feats.frames})
	return nil
}

package musetalk

import (
	"context"
	"fmt"
	"math/big"

	"github.com/avatargen/musetalk/media"
	"github.com/avatargen/musetalk/musetalk/model"
)

// features are a speech track's Whisper hidden states and the placement of
// each video frame's window in them. The states of the whole track are
// kept (about 23 MB a minute for whisper-tiny); the per-frame prompts,
// 50×384 floats each, are cut per batch by prompts.
type features struct {
	stacked []float32 // [encoder frames, states, dim]
	states  int       // hidden states per encoder frame
	dim     int       // d_model
	win     audioWindows
	frames  int      // video frames
	fps     *big.Rat // video frame rate
}

// tokens returns the prompt length per video frame (50 for whisper-tiny:
// 10 encoder frames × 5 hidden states).
func (ft *features) tokens() int { return ft.win.window * ft.states }

// prompts writes the audio prompts of video frames frames[0..] into dst
// ([len(frames), tokens, dim] row-major), flattened time-major as MuseTalk
// does: token t·states+s is encoder frame t's hidden state s.
func (ft *features) prompts(dst []float32, frames []int) {
	row := ft.states * ft.dim
	per := ft.win.window * row
	for i, f := range frames {
		ft.win.fill(dst[i*per:(i+1)*per], ft.stacked, row, f)
	}
}

// computeFeatures runs Whisper's front end and encoder over samples
// (16 kHz mono): one log-mel per 30 s segment, each through the encoder,
// the hidden states stacked and concatenated (MuseTalk's
// get_audio_feature and get_whisper_chunk). progress is called after each
// segment with segments done and the total. It stops between segments
// when ctx is done.
func computeFeatures(ctx context.Context, enc *model.WhisperEncoder, lm *media.LogMel, samples []float32, fps *big.Rat, progress func(done, total int)) (*features, error) {
	frames, err := FrameCount(len(samples), fps)
	if err != nil {
		return nil, err
	}
	if frames == 0 {
		return nil, inputErrorf("audio", "the speech track is empty (no samples)")
	}
	cfg := enc.Config()
	ft := &features{states: cfg.HiddenStates(), dim: cfg.DModel, frames: frames, fps: fps}
	segs := lm.Segments(samples)
	per := cfg.MaxSourcePositions * ft.states * ft.dim
	ft.stacked = make([]float32, 0, len(segs)*per)
	for i, seg := range segs {
		if err := ctx.Err(); err != nil {
			return nil, context.Cause(ctx)
		}
		st, err := enc.StackedHiddenStates([][]float32{seg})
		if err != nil {
			return nil, fmt.Errorf("audio features: segment %d: %w", i, err)
		}
		ft.stacked = append(ft.stacked, st...)
		segs[i] = nil // the mel is no longer needed
		if progress != nil {
			progress(i+1, len(segs))
		}
	}
	ft.win, err = newAudioWindows(len(samples), fps, len(ft.stacked)/(ft.states*ft.dim))
	if err != nil {
		return nil, err
	}
	return ft, nil
}

// promptLen returns the length of one frame's prompt (tokens·dim).
func (ft *features) promptLen() int { return ft.tokens() * ft.dim }

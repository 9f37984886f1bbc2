package model

import (
	"fmt"
	"math"
)

// Rates of MuseTalk's audio path: the feature extractor's input rate and the
// encoder's frame rate (one Whisper position per 20 ms).
const (
	AudioSampleRate = 16000
	AudioFrameRate  = 50
)

// AudioChunkParams configures [AudioPrompts] like the arguments of MuseTalk's
// AudioProcessor.get_whisper_chunk.
type AudioChunkParams struct {
	// FPS is the video frame rate. MuseTalk truncates a fractional rate
	// with int() (29.97 → 29) before chunking; pass the truncated value.
	FPS int
	// PadLeft and PadRight are audio_padding_length_left/right (2 and 2 in
	// MuseTalk): video frames of audio context on each side.
	PadLeft, PadRight int
}

// DefaultAudioChunkParams returns MuseTalk's defaults: 25 fps, 2 frames of
// context on each side.
func DefaultAudioChunkParams() AudioChunkParams {
	return AudioChunkParams{FPS: 25, PadLeft: 2, PadRight: 2}
}

// Window returns the number of encoder frames per video frame,
// 2·(PadLeft+PadRight+1) (10 by default).
func (p AudioChunkParams) Window() int { return 2 * (p.PadLeft + p.PadRight + 1) }

// NumFrames returns the number of video frames MuseTalk makes for an audio
// track of numSamples samples at 16 kHz: floor(numSamples/16000·fps).
func (p AudioChunkParams) NumFrames(numSamples int) int {
	return int(math.Floor(float64(numSamples) / AudioSampleRate * float64(p.FPS)))
}

// AudioPrompts cuts stacked Whisper hidden states into one window per video
// frame, as MuseTalk v1.5's AudioProcessor.get_whisper_chunk does:
//
//   - stacked is [frames, states, dim] (see
//     [WhisperEncoder.StackedHiddenStates]); numSamples is the length of the
//     16 kHz waveform it came from (before the 30 s segment padding).
//   - The states are trimmed to actual = floor(numSamples/16000·50) frames,
//     then zero-padded with ceil(50/fps)·PadLeft frames on the left and
//     ceil(50/fps)·3·PadRight on the right (each at most actual frames, as
//     torch.zeros_like of a slice gives).
//   - Video frame f takes the padded frames [a, a+Window()) with
//     a = floor(f·50/fps), flattened time-major ('b c h w -> b (c h) w').
//
// It returns [NumFrames(numSamples), Window()·states, dim] row-major and the
// number of frames. Where MuseTalk would exit because a window runs past the
// padded features, or would have no frame at all, it returns an error.
func AudioPrompts(stacked []float32, frames, states, dim, numSamples int, p AudioChunkParams) ([]float32, int, error) {
	switch {
	case p.FPS <= 0:
		return nil, 0, fmt.Errorf("audio chunks: fps %d, want > 0", p.FPS)
	case p.PadLeft < 0 || p.PadRight < 0:
		return nil, 0, fmt.Errorf("audio chunks: padding %d/%d, want >= 0", p.PadLeft, p.PadRight)
	case frames < 0 || states <= 0 || dim <= 0 || len(stacked) != frames*states*dim:
		return nil, 0, fmt.Errorf("audio chunks: %d values for [%d %d %d] hidden states", len(stacked), frames, states, dim)
	case numSamples < 0:
		return nil, 0, fmt.Errorf("audio chunks: %d samples", numSamples)
	}
	mult := float64(AudioFrameRate) / float64(p.FPS)
	numFrames := p.NumFrames(numSamples)
	actual := min(int(math.Floor(float64(numSamples)/AudioSampleRate*AudioFrameRate)), frames)
	padNums := int(math.Ceil(mult))
	padL := min(padNums*p.PadLeft, actual)
	padR := min(padNums*3*p.PadRight, actual)
	total := padL + actual + padR
	win := p.Window()
	if numFrames <= 0 {
		return nil, 0, fmt.Errorf("audio chunks: %d samples make no video frame at %d fps", numSamples, p.FPS)
	}
	row := states * dim // one encoder frame
	out := make([]float32, numFrames*win*row)
	for f := range numFrames {
		a := int(math.Floor(float64(f) * mult))
		if a+win > total {
			return nil, 0, fmt.Errorf("audio chunks: frame %d needs padded encoder frames [%d, %d), only %d exist",
				f, a, a+win, total)
		}
		dst := out[f*win*row : (f+1)*win*row]
		for c := range win {
			src := a + c - padL // index into the unpadded states
			if src < 0 || src >= actual {
				continue // zero padding; out is zeroed
			}
			copy(dst[c*row:(c+1)*row], stacked[src*row:(src+1)*row])
		}
	}
	return out, numFrames, nil
}

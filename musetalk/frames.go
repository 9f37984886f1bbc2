package musetalk

import (
	"errors"
	"fmt"
	"math/big"
)

// Audio rates of MuseTalk's feature path: the waveform's sample rate and
// Whisper's encoder frame rate (one position per 20 ms).
const (
	sampleRate       = 16000
	encoderFrameRate = 50
)

// FrameCount returns the number of video frames rendered for numSamples
// samples of 16 kHz audio at fps frames a second:
//
//	ceil(numSamples · fps / 16000)
//
// computed exactly on the rational fps (30000/1001 stays 30000/1001). Every
// stretch of the speech lies under some frame, and the video is never
// longer than the audio by a whole frame. MuseTalk instead makes
// floor(seconds · int(fps)) frames and its realtime script then drops the
// last one; where the audio is a whole number of frames long all three
// agree except for that dropped frame. An empty track makes no frame.
func FrameCount(numSamples int, fps *big.Rat) (int, error) {
	if fps == nil || fps.Sign() <= 0 {
		return 0, errors.New("frame count: the frame rate must be positive")
	}
	if numSamples < 0 {
		return 0, fmt.Errorf("frame count: %d samples", numSamples)
	}
	num := new(big.Int).Mul(big.NewInt(int64(numSamples)), fps.Num())
	den := new(big.Int).Mul(big.NewInt(sampleRate), fps.Denom())
	q, r := new(big.Int).QuoRem(num, den, new(big.Int))
	if r.Sign() > 0 {
		q.Add(q, big.NewInt(1))
	}
	if !q.IsInt64() || q.Int64() > 1<<31 {
		return 0, fmt.Errorf("frame count: %d samples at %s fps is too many frames", numSamples, fps.RatString())
	}
	return int(q.Int64()), nil
}

// cycleIndex maps output frame i to the source frame MuseTalk's ping-pong
// cycle shows: the n source frames forwards, then backwards, repeated
// (frames + reversed(frames)), so the loop point never jumps. n must be
// positive.
func cycleIndex(i, n int) int {
	r := i % (2 * n)
	if r < n {
		return r
	}
	return 2*n - 1 - r
}

// audioWindows places each video frame's window of Whisper encoder frames,
// as MuseTalk's get_whisper_chunk does but on the exact rational frame
// rate instead of int(fps):
//
//   - the encoder states are trimmed to actual = floor(samples·50/16000)
//     frames and padded on the left with padL = min(ceil(50/fps)·PadLeft,
//     actual) zero frames;
//   - video frame f reads the padded frames [a, a+Window) with
//     a = floor(f·50/fps), that is unpadded frames [a−padL, a−padL+Window);
//     positions past either end read zeros (MuseTalk pads the right end with
//     3·ceil(50/fps)·PadRight zero frames, which covers every frame it
//     makes; reading zeros there covers the frames it does not).
//
// For an integer fps the windows are MuseTalk's exactly.
type audioWindows struct {
	num, den int64 // fps = num/den
	actual   int   // encoder frames kept
	padL     int   // zero frames before the first encoder frame
	window   int   // encoder frames per video frame
}

// Audio context of MuseTalk's default (audio_padding_length_left/right): two
// video frames each side, so a window of 2·(2+2+1) = 10 encoder frames.
const (
	audioPadLeft  = 2
	audioPadRight = 2
)

func newAudioWindows(numSamples int, fps *big.Rat, encoderFrames int) (audioWindows, error) {
	if fps == nil || fps.Sign() <= 0 || !fps.Num().IsInt64() || !fps.Denom().IsInt64() {
		return audioWindows{}, errors.New("audio windows: the frame rate must be a positive fraction of 64-bit integers")
	}
	w := audioWindows{num: fps.Num().Int64(), den: fps.Denom().Int64(), window: 2 * (audioPadLeft + audioPadRight + 1)}
	w.actual = min(numSamples*encoderFrameRate/sampleRate, encoderFrames)
	// ceil(50/fps) = ceil(50·den/num)
	perFrame := int((encoderFrameRate*w.den + w.num - 1) / w.num)
	w.padL = min(perFrame*audioPadLeft, w.actual)
	return w, nil
}

// start returns the first unpadded encoder frame of video frame f's window
// (negative while the window reaches into the left padding).
func (w audioWindows) start(f int) int {
	// floor(f·50·den/num); f·50·den stays far below 2^63 for any real video.
	return int(int64(f)*encoderFrameRate*w.den/w.num) - w.padL
}

// fill writes video frame f's window into dst ([window, row] row-major)
// from stacked ([frames, row]): the window's encoder frames in time order,
// zeros outside [0, actual).
func (w audioWindows) fill(dst, stacked []float32, row, f int) {
	s := w.start(f)
	for c := range w.window {
		d := dst[c*row : (c+1)*row]
		src := s + c
		if src < 0 || src >= w.actual {
			clear(d)
			continue
		}
		copy(d, stacked[src*row:(src+1)*row])
	}
}

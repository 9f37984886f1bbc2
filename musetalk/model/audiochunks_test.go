package model_test

import (
	"strings"
	"testing"

	"github.com/avatargen/musetalk/musetalk/model"
)

// stackedIndex returns hidden states whose every value is 1 + its encoder
// frame index, so a window shows which frames it took (0 = padding).
func stackedIndex(frames, states, dim int) []float32 {
	out := make([]float32, frames*states*dim)
	for i := range out {
		out[i] = float32(i/(states*dim) + 1)
	}
	return out
}

func TestAudioPromptsWindows(t *testing.T) {
	t.Parallel()
	const states, dim = 3, 2
	for _, tc := range []struct {
		name       string
		samples    int
		p          model.AudioChunkParams
		wantFrames int
		// first encoder frame (unpadded, may be negative) of frame f's
		// window: a(f) − left padding
		start func(f int) int
	}{
		// 25 fps: pad 2·2 = 4, window [2f−4, 2f+6).
		{"25fps", 32123, model.DefaultAudioChunkParams(), 50, func(f int) int { return 2*f - 4 }},
		// 20 fps: multiplier 2.5, pad ceil(2.5)·2 = 6, a = floor(2.5f).
		{"20fps", 48000, model.AudioChunkParams{FPS: 20, PadLeft: 2, PadRight: 2}, 60, func(f int) int { return f*5/2 - 6 }},
		// 29 fps (29.97 truncated): multiplier 50/29, pad 2·2 = 4.
		{"29fps", 16000, model.AudioChunkParams{FPS: 29, PadLeft: 2, PadRight: 2}, 29, func(f int) int { return f*50/29 - 4 }},
		// Asymmetric context: window 2·(1+3+1) = 10, pad 2.
		{"pad1_3", 20000, model.AudioChunkParams{FPS: 25, PadLeft: 1, PadRight: 3}, 31, func(f int) int { return 2*f - 2 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			frames := 1500 * ((tc.samples + 479999) / 480000)
			actual := tc.samples * 50 / 16000
			out, n, err := model.AudioPrompts(stackedIndex(frames, states, dim), frames, states, dim, tc.samples, tc.p)
			if err != nil {
				t.Fatal(err)
			}
			if n != tc.wantFrames {
				t.Fatalf("%d frames, want %d", n, tc.wantFrames)
			}
			win := tc.p.Window()
			if len(out) != n*win*states*dim {
				t.Fatalf("%d values, want %d", len(out), n*win*states*dim)
			}
			for f := range n {
				for c := range win {
					src := tc.start(f) + c
					want := float32(0)
					if src >= 0 && src < actual {
						want = float32(src + 1)
					}
					for h := range states {
						for d := range dim {
							if got := out[((f*win+c)*states+h)*dim+d]; got != want {
								t.Fatalf("frame %d token %d: %g, want %g", f, c*states+h, got, want)
							}
						}
					}
				}
			}
		})
	}
}

func TestAudioPromptsErrors(t *testing.T) {
	t.Parallel()
	st := stackedIndex(1500, 1, 1)
	for _, tc := range []struct {
		name    string
		samples int
		p       model.AudioChunkParams
		want    string
	}{
		{"no frame", 100, model.DefaultAudioChunkParams(), "no video frame"},
		// 0.0625 s: 3 encoder frames, padded to 9 < window 10.
		{"too short", 1000, model.DefaultAudioChunkParams(), "frame 0"},
		{"fps", 16000, model.AudioChunkParams{FPS: 0}, "fps"},
	} {
		if _, _, err := model.AudioPrompts(st, 1500, 1, 1, tc.samples, tc.p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one mentioning %q", tc.name, err, tc.want)
		}
	}
	if _, _, err := model.AudioPrompts(st[:10], 1500, 1, 1, 16000, model.DefaultAudioChunkParams()); err == nil {
		t.Error("wrong stacked length: no error")
	}
}

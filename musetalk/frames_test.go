package musetalk

import (
	"math"
	"math/big"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/avatargen/musetalk/musetalk/model"
)

func rat(t *testing.T, s string) *big.Rat {
	t.Helper()
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		t.Fatalf("bad rational %q", s)
	}
	return r
}

func TestFrameCount(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		samples int
		fps     string
		want    int
	}{
		{0, "25", 0},
		{1, "25", 1},                    // any sound makes a frame
		{16000, "25", 25},               // exactly one second
		{16001, "25", 26},               // a sample more needs one more frame
		{640, "25", 1},                  // exactly one frame (40 ms)
		{641, "25", 2},                  //
		{16000 * 10, "30000/1001", 300}, // 299.7 frames in 10 s: ceil
		{16000 * 1001, "30000/1001", 30000},
		{16000*1001 - 1, "30000/1001", 30000},
		{16000*1001 + 1, "30000/1001", 30001},
		{48000, "24000/1001", 72}, // 71.93
		{8000, "12.5", 7},         // 6.25
		{16000 * 3600, "60", 216000},
	} {
		got, err := FrameCount(tc.samples, rat(t, tc.fps))
		if err != nil {
			t.Fatalf("FrameCount(%d, %s): %v", tc.samples, tc.fps, err)
		}
		if got != tc.want {
			t.Errorf("FrameCount(%d, %s) = %d, want %d", tc.samples, tc.fps, got, tc.want)
		}
	}
	for _, fps := range []*big.Rat{nil, big.NewRat(0, 1), big.NewRat(-25, 1)} {
		if _, err := FrameCount(100, fps); err == nil {
			t.Errorf("FrameCount(100, %v): no error", fps)
		}
	}
	if _, err := FrameCount(-1, big.NewRat(25, 1)); err == nil {
		t.Error("FrameCount(-1, 25): no error")
	}
}

// TestFrameCountCoversAudio checks the contract on random lengths and
// rates: the video covers the audio and is shorter than audio + 1 frame.
func TestFrameCountCoversAudio(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	rates := []*big.Rat{big.NewRat(25, 1), big.NewRat(30000, 1001), big.NewRat(24000, 1001), big.NewRat(60, 1), big.NewRat(15, 2), big.NewRat(1000, 1)}
	for range 2000 {
		n := rng.IntN(16000 * 120)
		fps := rates[rng.IntN(len(rates))]
		got, err := FrameCount(n, fps)
		if err != nil {
			t.Fatal(err)
		}
		audio := new(big.Rat).SetFrac64(int64(n), 16000)
		video := new(big.Rat).Quo(big.NewRat(int64(got), 1), fps)
		oneMore := new(big.Rat).Quo(big.NewRat(int64(got-1), 1), fps)
		if video.Cmp(audio) < 0 || (got > 0 && oneMore.Cmp(audio) >= 0) {
			t.Fatalf("%d samples at %s fps: %d frames (%s s of video for %s s of audio)",
				n, fps.RatString(), got, video.FloatString(4), audio.FloatString(4))
		}
	}
}

func TestCycleIndex(t *testing.T) {
	t.Parallel()
	var got []int
	for i := range 14 {
		got = append(got, cycleIndex(i, 3))
	}
	want := []int{0, 1, 2, 2, 1, 0, 0, 1, 2, 2, 1, 0, 0, 1}
	if !slices.Equal(got, want) {
		t.Errorf("cycle of 3 frames: %v, want %v", got, want)
	}
	for i := range 5 {
		if k := cycleIndex(i, 1); k != 0 {
			t.Errorf("cycleIndex(%d, 1) = %d, want 0", i, k)
		}
	}
}

// TestAudioWindowsMatchMuseTalk compares the rational-rate windows with
// model.AudioPrompts (MuseTalk's get_whisper_chunk on an integer fps) on
// every frame MuseTalk makes.
func TestAudioWindowsMatchMuseTalk(t *testing.T) {
	t.Parallel()
	const states, dim = 3, 4
	row := states * dim
	for _, tc := range []struct{ samples, fps int }{
		{16000 * 2, 25}, {16000*2 + 123, 25}, {12345, 20}, {16000 * 3, 30}, {30000, 24}, {7000, 40}, {20000, 10}, {3000, 25}, {2000, 25},
	} {
		frames := tc.samples*50/16000 + 3 // the encoder's output is longer (segment padding)
		stacked := make([]float32, frames*row)
		for i := range stacked {
			stacked[i] = float32(i + 1)
		}
		p := model.DefaultAudioChunkParams()
		p.FPS = tc.fps
		want, n, err := model.AudioPrompts(stacked, frames, states, dim, tc.samples, p)
		if err != nil {
			t.Fatalf("%+v: AudioPrompts: %v", tc, err)
		}
		fps := big.NewRat(int64(tc.fps), 1)
		w, err := newAudioWindows(tc.samples, fps, frames)
		if err != nil {
			t.Fatal(err)
		}
		ft := &features{stacked: stacked, states: states, dim: dim, win: w}
		all, _ := FrameCount(tc.samples, fps)
		if all < n {
			t.Fatalf("%+v: %d frames, MuseTalk makes %d", tc, all, n)
		}
		idx := make([]int, all)
		for i := range idx {
			idx[i] = i
		}
		got := make([]float32, all*ft.promptLen())
		ft.prompts(got, idx)
		if !slices.Equal(got[:len(want)], want) {
			t.Errorf("%+v: windows differ from MuseTalk's", tc)
		}
		// Frames past MuseTalk's count read real states or zeros, never
		// anything else.
		for _, v := range got[len(want):] {
			if v != 0 && (v < 1 || v > float32(len(stacked)) || v != float32(math.Trunc(float64(v)))) {
				t.Fatalf("%+v: stray value %v past MuseTalk's frames", tc, v)
			}
		}
	}
}

// TestAudioWindowsRational checks window placement on an NTSC rate: frame
// f starts at encoder frame floor(f·50·1001/30000) − padL.
func TestAudioWindowsRational(t *testing.T) {
	t.Parallel()
	w, err := newAudioWindows(16000*10, big.NewRat(30000, 1001), 500)
	if err != nil {
		t.Fatal(err)
	}
	if w.padL != 4 || w.window != 10 || w.actual != 500 {
		t.Fatalf("windows %+v: want padL 4 (ceil(50/29.97)·2), window 10, actual 500", w)
	}
	for _, f := range []int{0, 1, 2, 3, 299, 1000} {
		want := int(math.Floor(float64(f)*50*1001/30000)) - 4
		if got := w.start(f); got != want {
			t.Errorf("start(%d) = %d, want %d", f, got, want)
		}
	}
}

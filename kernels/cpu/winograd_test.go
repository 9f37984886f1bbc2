package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/avatargen/musetalk/kernels"
)

// refConv3x3 is a 3×3, stride 1, padding 1 convolution in float64. It
// returns the outputs and, per output, the sum of |terms| (the scale of
// float32 rounding error).
func refConv3x3(x, w, bias []float32, n, c, h, wi, co int) (out, mag []float64) {
	out = make([]float64, n*co*h*wi)
	mag = make([]float64, len(out))
	for img := range n {
		for o := range co {
			for y := range h {
				for xx := range wi {
					var s, m float64
					if bias != nil {
						s, m = float64(bias[o]), math.Abs(float64(bias[o]))
					}
					for ci := range c {
						for ky := range 3 {
							iy := y + ky - 1
							if iy < 0 || iy >= h {
								continue
							}
							for kx := range 3 {
								ix := xx + kx - 1
								if ix < 0 || ix >= wi {
									continue
								}
								t := float64(x[((img*c+ci)*h+iy)*wi+ix]) * float64(w[((o*c+ci)*3+ky)*3+kx])
								s += t
								m += math.Abs(t)
							}
						}
					}
					i := ((img*co+o)*h+y)*wi + xx
					out[i], mag[i] = s, m
				}
			}
		}
	}
	return out, mag
}

func randFloats(rng *rand.Rand, n int, scale float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64() * scale)
	}
	return v
}

// winoCase is one Winograd convolution; block is the V+M budget passed
// to convWinograd (small values force many blocks, including blocks that
// span images).
type winoCase struct {
	n, c, h, w, co int
	block          int
}

func winoCases() []winoCase {
	return []winoCase{
		{1, 1, 1, 1, 1, winoBlockFloats},
		{1, 3, 2, 3, 5, winoBlockFloats},
		{2, 7, 5, 7, 13, winoBlockFloats},
		{1, 16, 8, 8, 16, winoBlockFloats},
		{3, 17, 9, 13, 29, 1},                // one tile row per block
		{2, 24, 16, 20, 40, 36 * 72 * 5 * 3}, // three tile rows per block, across images
		{1, 33, 31, 34, 12, winoBlockFloats}, // groups of 16 tiles across tile rows
		{2, 400, 6, 10, 25, winoBlockFloats}, // two k blocks (Cin > kc)
		{1, 20, 12, 72, 36, winoBlockFloats}, // 18 tiles per row: parts of 16 and 2
	}
}

// TestWinogradMatchesReference runs the Winograd convolution directly on
// every ISA (the portable transforms on the Go and AVX2 paths, the
// AVX-512 ones there) and thread count, with and without bias, and checks
// every output against float64 within 1e-5 of its sum of |terms| (the
// error of F(4×4, 3×3) in float32 is a few times that of the direct
// convolution) and that nothing outside dst is written.
func TestWinogradMatchesReference(t *testing.T) {
	type prepared struct {
		winoCase
		x, wt, bias []float32
		want, mag   []float64
	}
	var cases []prepared
	for i, tc := range winoCases() {
		rng := rand.New(rand.NewPCG(uint64(i), 7))
		p := prepared{winoCase: tc}
		p.x = randFloats(rng, tc.n*tc.c*tc.h*tc.w, 1)
		p.wt = randFloats(rng, tc.co*tc.c*9, 1/math.Sqrt(float64(9*tc.c)))
		if i%2 == 0 {
			p.bias = randFloats(rng, tc.co, 0.5)
		}
		p.want, p.mag = refConv3x3(p.x, p.wt, p.bias, tc.n, tc.c, tc.h, tc.w, tc.co)
		cases = append(cases, p)
	}
	for _, isa := range []ISA{ISAGo, ISAAVX2, ISAAVX512} {
		for _, threads := range []int{1, 2} {
			t.Run(fmt.Sprintf("%v/t%d", isa, threads), func(t *testing.T) {
				if !isa.Available() {
					t.Skipf("%v not available", isa)
				}
				b := newBackend(t, Options{ISA: isa, Threads: threads})
				for _, tc := range cases {
					got := make([]float32, len(tc.want)+2)
					got[0], got[len(got)-1] = 7, 7
					b.convWinograd(got[1:len(got)-1], tc.x, tc.wt, tc.bias, tc.n, tc.c, tc.h, tc.w, tc.co, tc.block)
					if got[0] != 7 || got[len(got)-1] != 7 {
						t.Fatalf("%+v: wrote outside dst", tc.winoCase)
					}
					for i, v := range tc.want {
						if d := math.Abs(float64(got[i+1]) - v); !(d <= 1e-5*tc.mag[i]+1e-6) {
							t.Fatalf("%+v: element %d: got %g want %g (|d| %g, sum|terms| %g)",
								tc.winoCase, i, got[i+1], v, d, tc.mag[i])
						}
					}
				}
			})
		}
	}
}

// TestWinogradWeightCache checks that a registered weight's transformed
// copy is built once and reused, and that Conv2D picks the Winograd path
// for a large 3×3 convolution on AVX-512 and agrees with the direct path.
func TestWinogradWeightCache(t *testing.T) {
	if !ISAAVX512.Available() {
		t.Skip("AVX-512 not available")
	}
	b := newBackend(t, Options{ISA: ISAAVX512, Threads: 2})
	const n, c, h, w, co = 2, 64, 24, 24, 96
	if !b.winoWins(n, c, h, w, co) {
		t.Fatalf("winoWins(%d, %d, %d, %d, %d) = false, want Winograd", n, c, h, w, co)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	x := kernels.FromSlice(randFloats(rng, n*c*h*w, 1), n, c, h, w)
	wd := randFloats(rng, co*c*9, 1/math.Sqrt(9*c))
	bias := kernels.FromSlice(randFloats(rng, co, 0.5), co)
	wt := b.Weight(wd, co, c, 3, 3)
	p := kernels.Conv2DPad(1, 1)
	want, mag := refConv3x3(x.Data(), wd, bias.Data(), n, c, h, w, co)
	for range 2 {
		got := kernels.New(n, co, h, w)
		b.Conv2D(got, x, wt, bias, p)
		for i, v := range want {
			if d := math.Abs(float64(got.Data()[i]) - v); !(d <= 1e-5*mag[i]) {
				t.Fatalf("element %d: got %g want %g", i, got.Data()[i], v)
			}
		}
	}
	reg := b.lookupWeight(wd)
	if reg == nil || reg.panelsW == nil || reg.rowsW != co {
		t.Fatal("the Winograd panels of a registered weight were not cached")
	}
	if reg.panelsA != nil {
		t.Error("the direct path's panels were built: Conv2D did not take the Winograd path")
	}
}

// TestWinogradChoice checks the cost model's obvious cases.
func TestWinogradChoice(t *testing.T) {
	if !ISAAVX512.Available() {
		t.Skip("AVX-512 not available")
	}
	b := newBackend(t, Options{ISA: ISAAVX512, Threads: 1})
	for _, tc := range []struct {
		n, c, h, w, co int
		want           bool
	}{
		{1, 128, 256, 256, 128, true},
		{1, 512, 32, 32, 512, true},
		{1, 3, 64, 64, 128, false},   // too few input channels
		{1, 1280, 4, 4, 1280, false}, // one tile padded to a 32-wide sliver
	} {
		if got := b.winoWins(tc.n, tc.c, tc.h, tc.w, tc.co); got != tc.want {
			t.Errorf("winoWins(%+v) = %v, want %v", tc, got, tc.want)
		}
	}
	g := newBackend(t, Options{ISA: ISAGo, Threads: 1})
	if g.winoWins(1, 128, 256, 256, 128) {
		t.Error("the portable path chose Winograd (its transforms are scalar)")
	}
}

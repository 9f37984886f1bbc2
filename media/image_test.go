package media

import (
	"math/rand/v2"
	"slices"
	"testing"
)

func TestGaussianKernel8(t *testing.T) {
	for k := 1; k <= 31; k += 2 {
		sum := 0
		g := GaussianKernel8(k)
		for i, v := range g {
			if v < 0 || v != g[k-1-i] {
				t.Fatalf("ksize %d: kernel %v not symmetric and non-negative", k, g)
			}
			sum += v
		}
		if sum != 256 {
			t.Errorf("ksize %d: sum %d, want 256", k, sum)
		}
	}
}

func TestReflect101(t *testing.T) {
	for _, c := range [][3]int{{-1, 5, 1}, {-2, 5, 2}, {5, 5, 3}, {6, 5, 2}, {0, 1, 0}, {3, 5, 3}} {
		if got := reflect101(c[0], c[1]); got != c[2] {
			t.Errorf("reflect101(%d, %d) = %d, want %d", c[0], c[1], got, c[2])
		}
	}
}

func TestPasteMaskEnds(t *testing.T) {
	dst := NewImage8(2, 1, 3)
	for i := range dst.Pix {
		dst.Pix[i] = uint8(37 * i)
	}
	src := NewImage8(2, 1, 3)
	for i := range src.Pix {
		src.Pix[i] = uint8(250 - 41*i)
	}
	mask := &Image8{W: 2, H: 1, C: 1, Pix: []uint8{0, 255}}
	want := append(append([]uint8(nil), dst.Pix[:3]...), src.Pix[3:]...)
	dst.PasteMask(src, 0, 0, mask)
	for i := range want {
		if dst.Pix[i] != want[i] {
			t.Fatalf("got %v, want %v", dst.Pix, want)
		}
	}
}

func TestCropBox(t *testing.T) {
	cb, s := CropBox(Box{178, 56, 270, 182}, 1.5)
	if cb != (Box{130, 25, 318, 213}) || s != 94 {
		t.Errorf("CropBox = %v, %d", cb, s)
	}
	if k := BlurKSize(188, 0.1); k != 19 {
		t.Errorf("BlurKSize(188, 0.1) = %d, want 19", k)
	}
}

func TestResizeIdentity(t *testing.T) {
	m := NewImage8(7, 5, 3)
	for i := range m.Pix {
		m.Pix[i] = uint8(i * 13)
	}
	for name, got := range map[string]*Image8{
		"lanczos4": ResizeLanczos4(m, 7, 5),
		"linear":   ResizeLinear(m, 7, 5),
		"pil":      ResizePIL(m, 7, 5, PILBicubic),
	} {
		for i := range m.Pix {
			if got.Pix[i] != m.Pix[i] {
				t.Errorf("%s: same-size resize changed value %d: %d -> %d", name, i, m.Pix[i], got.Pix[i])
				break
			}
		}
	}
}

// naiveMorph is the definition of Morph: every kernel tap, every pixel.
func naiveMorph(m *Image8, kernel []uint8, kh, kw, ay, ax int, dilate bool) *Image8 {
	out := NewImage8(m.W, m.H, 1)
	for y := range m.H {
		for x := range m.W {
			v := 255
			if dilate {
				v = 0
			}
			for i := range kh {
				for j := range kw {
					sy, sx := y+i-ay, x+j-ax
					if kernel[i*kw+j] == 0 || sy < 0 || sy >= m.H || sx < 0 || sx >= m.W {
						continue
					}
					if p := int(m.Pix[sy*m.W+sx]); dilate {
						v = max(v, p)
					} else {
						v = min(v, p)
					}
				}
			}
			out.Pix[y*m.W+x] = uint8(v)
		}
	}
	return out
}

func TestMorphMatchesDefinition(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	type k struct {
		kernel         []uint8
		kh, kw, ay, ax int
	}
	kernels := []k{{JawKernel(), 33, 33, 16, 16}, {CheekKernel(), 3, 35, 1, 17}, {[]uint8{1}, 1, 1, 0, 0}}
	for range 6 {
		kh, kw := 1+rng.IntN(7), 1+rng.IntN(40)
		kern := make([]uint8, kh*kw)
		for i := range kern {
			if rng.IntN(3) > 0 {
				kern[i] = 1
			}
		}
		kernels = append(kernels, k{kern, kh, kw, rng.IntN(kh), rng.IntN(kw)})
	}
	for _, size := range [][2]int{{1, 1}, {5, 3}, {37, 29}, {64, 48}} {
		m := NewImage8(size[0], size[1], 1)
		for i := range m.Pix {
			m.Pix[i] = uint8(rng.IntN(4) * 85) // few levels: ties and plateaus
		}
		for ki, kk := range kernels {
			for _, dilate := range []bool{true, false} {
				got := Morph(m, kk.kernel, kk.kh, kk.kw, kk.ay, kk.ax, dilate)
				want := naiveMorph(m, kk.kernel, kk.kh, kk.kw, kk.ay, kk.ax, dilate)
				if !slices.Equal(got.Pix, want.Pix) {
					t.Fatalf("%dx%d kernel %d (%dx%d anchor %d,%d) dilate=%v: differs from the definition", size[0], size[1], ki, kk.kh, kk.kw, kk.ay, kk.ax, dilate)
				}
			}
		}
	}
}

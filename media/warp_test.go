package media

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/avatargen/musetalk/internal/golden"
)

// TestGoldenWarpAffine warps case k1's frame (cv2.imread's BGR) with the
// matrix cv2.getAffineTransform gave mmpose and compares with the stored
// cv2.warpAffine output bit for bit; the matrix must come out of
// GetAffineTransform identical too (from mmpose's three point pairs,
// rebuilt from the stored centre and scale by the model package's test).
func TestGoldenWarpAffine(t *testing.T) {
	c := golden.Load(t, "k_dwpose_model")
	s := c.Set(t)
	img := u8(t, s, "input.image_bgr_u8")
	m := s.Get(t, "ref.warp_matrix")
	var M Affine
	for i := range 2 {
		for j := range 3 {
			M[i][j] = m.Data[3*i+j]
		}
	}
	want := u8(t, s, "intermediate.warped_bgr_u8")
	got := WarpAffineLinear(img, M, want.W, want.H)
	exact(t, s, "intermediate.warped_bgr_u8", got)
}

// TestWarpAffineLinear checks the fixed-point warp's geometry: the
// identity and integer shifts copy pixels (zeros outside), a half-pixel
// shift averages neighbours with rounding half up, and a random
// transform stays within one grey level of an exact bilinear warp at
// source positions on the 1/32 pixel grid.
func TestWarpAffineLinear(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	src := NewImage8(13, 9, 3)
	for i := range src.Pix {
		src.Pix[i] = uint8(rng.IntN(256))
	}
	at := func(m *Image8, x, y, c int) int {
		if x < 0 || y < 0 || x >= m.W || y >= m.H {
			return 0
		}
		return int(m.Pix[(y*m.W+x)*m.C+c])
	}
	id := WarpAffineLinear(src, Affine{{1, 0, 0}, {0, 1, 0}}, 13, 9)
	for i := range src.Pix {
		if id.Pix[i] != src.Pix[i] {
			t.Fatalf("identity: value %d is %d, want %d", i, id.Pix[i], src.Pix[i])
		}
	}
	// dst(x, y) = src(x − 2, y + 1).
	sh := WarpAffineLinear(src, Affine{{1, 0, 2}, {0, 1, -1}}, 13, 9)
	for y := range 9 {
		for x := range 13 {
			for c := range 3 {
				if got, want := at(sh, x, y, c), at(src, x-2, y+1, c); got != want {
					t.Fatalf("shift: (%d,%d,%d) = %d, want %d", x, y, c, got, want)
				}
			}
		}
	}
	// dst(x, y) = src(x + 0.5, y): (a + b + 1) >> 1.
	half := WarpAffineLinear(src, Affine{{1, 0, -0.5}, {0, 1, 0}}, 12, 9)
	for y := range 9 {
		for x := range 12 {
			for c := range 3 {
				want := (at(src, x, y, c) + at(src, x+1, y, c) + 1) >> 1
				if got := at(half, x, y, c); got != want {
					t.Fatalf("half shift: (%d,%d,%d) = %d, want %d", x, y, c, got, want)
				}
			}
		}
	}
	// A scale and shift whose source positions fall on the 1/32 grid.
	M := Affine{{2, 0, 3}, {0, 4, -2}} // inverse: sx = (x−3)/2, sy = (y+2)/4
	out := WarpAffineLinear(src, M, 30, 40)
	for y := range 40 {
		for x := range 30 {
			fx, fy := float64(x-3)/2, float64(y+2)/4
			x0, y0 := int(math.Floor(fx)), int(math.Floor(fy))
			ax, ay := fx-float64(x0), fy-float64(y0)
			for c := range 3 {
				v := (1-ay)*((1-ax)*float64(at(src, x0, y0, c))+ax*float64(at(src, x0+1, y0, c))) +
					ay*((1-ax)*float64(at(src, x0, y0+1, c))+ax*float64(at(src, x0+1, y0+1, c)))
				if got := float64(at(out, x, y, c)); math.Abs(got-v) > 0.5+1e-9 {
					t.Fatalf("scale: (%d,%d,%d) = %g, exact bilinear %g", x, y, c, got, v)
				}
			}
		}
	}
}

// TestGetAffineTransform solves for a known matrix from three points.
func TestGetAffineTransform(t *testing.T) {
	src := [3][2]float32{{10, 20}, {10, -300}, {-310, -300}}
	want := Affine{{0.45, 0, 139.5}, {0, 0.45, 183}}
	var dst [3][2]float32
	for i, p := range src {
		for r := range 2 {
			dst[i][r] = float32(want[r][0]*float64(p[0]) + want[r][1]*float64(p[1]) + want[r][2])
		}
	}
	got, err := GetAffineTransform(src, dst)
	if err != nil {
		t.Fatal(err)
	}
	for r := range 2 {
		for c := range 3 {
			if math.Abs(got[r][c]-want[r][c]) > 1e-5 {
				t.Errorf("M[%d][%d] = %g, want %g", r, c, got[r][c], want[r][c])
			}
		}
	}
	if _, err := GetAffineTransform([3][2]float32{{0, 0}, {1, 1}, {2, 2}}, dst); err == nil {
		t.Error("collinear points: no error")
	}
}

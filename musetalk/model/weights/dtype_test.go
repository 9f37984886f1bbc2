package weights

import (
	"github.com/avatargen/musetalk/internal/half"
	"math"
	"testing"
)

func TestF16Exhaustive(t *testing.T) {
	t.Parallel()
	for h := range 1 << 16 {
		h := uint16(h)
		f := half.ToFloat32(h)
		exp, mant := h>>10&0x1f, h&0x3ff
		// Reference value from the definition of binary16.
		var want float64
		switch {
		case exp == 0x1f && mant != 0:
			if !math.IsNaN(float64(f)) {
				t.Fatalf("%#04x: %v, want NaN", h, f)
			}
			if back := half.FromFloat32(f); back != h {
				t.Fatalf("NaN %#04x round-trips to %#04x", h, back)
			}
			continue
		case exp == 0x1f:
			want = math.Inf(1)
		case exp == 0:
			want = float64(mant) * math.Pow(2, -24)
		default:
			want = (1 + float64(mant)/1024) * math.Pow(2, float64(exp)-15)
		}
		if h&0x8000 != 0 {
			want = -want
		}
		if float64(f) != want || math.Signbit(float64(f)) != (h&0x8000 != 0) {
			t.Fatalf("half.ToFloat32(%#04x) = %v, want %v", h, f, want)
		}
		if back := half.FromFloat32(f); back != h {
			t.Fatalf("half.FromFloat32(half.ToFloat32(%#04x)) = %#04x", h, back)
		}
		// Rounding: between h and the next larger magnitude, the midpoint
		// goes to the even one, anything off the midpoint to the nearer.
		if exp == 0x1f || h&0x7fff == 0x7bff {
			continue
		}
		next := half.ToFloat32(h + 1)
		mid := (float64(f) + float64(next)) / 2 // exact in float64, and in float32 here
		even := h
		if h&1 == 1 {
			even = h + 1
		}
		if got := half.FromFloat32(float32(mid)); got != even {
			t.Fatalf("midpoint of %#04x and %#04x rounds to %#04x, want %#04x", h, h+1, got, even)
		}
		above := math.Nextafter32(float32(mid), float32(next))
		below := math.Nextafter32(float32(mid), f)
		if got := half.FromFloat32(above); got != h+1 {
			t.Fatalf("just above the midpoint of %#04x: %#04x", h, got)
		}
		if got := half.FromFloat32(below); got != h {
			t.Fatalf("just below the midpoint of %#04x: %#04x", h, got)
		}
	}
	// Overflow: 65520 is the midpoint between 65504 and 2^16 and rounds up.
	for v, want := range map[float32]uint16{65504: 0x7bff, 65519.99: 0x7bff, 65520: 0x7c00, 1e10: 0x7c00, -1e10: 0xfc00, 1e-10: 0, -1e-10: 0x8000} {
		if got := half.FromFloat32(v); got != want {
			t.Errorf("half.FromFloat32(%v) = %#04x, want %#04x", v, got, want)
		}
	}
}

func TestBF16(t *testing.T) {
	t.Parallel()
	for v, want := range map[float32]uint16{
		1:                                0x3f80,
		-2.5:                             0xc020,
		math.Float32frombits(0x3f808000): 0x3f80, // tie, even stays
		math.Float32frombits(0x3f818000): 0x3f82, // tie, odd rounds up
		math.Float32frombits(0x3f808001): 0x3f81,
		float32(math.Inf(1)):             0x7f80,
		math.MaxFloat32:                  0x7f80,
	} {
		if got := f32ToBF16(v); got != want {
			t.Errorf("f32ToBF16(%v) = %#04x, want %#04x", v, got, want)
		}
	}
	if got := f32ToBF16(float32(math.NaN())); got&0x7f80 != 0x7f80 || got&0x7f == 0 {
		t.Errorf("f32ToBF16(NaN) = %#04x, not a NaN", got)
	}
}

func TestDecodeIntegers(t *testing.T) {
	t.Parallel()
	src := []byte{0xff, 0xfe, 0x01, 0x80}
	cases := []struct {
		dt   DType
		n    int
		ints []int64
	}{
		{U8, 4, []int64{255, 254, 1, 128}},
		{I8, 4, []int64{-1, -2, 1, -128}},
		{I16, 2, []int64{-257, -32767}},
		{U16, 2, []int64{65279, 32769}},
		{I32, 1, []int64{-2147352833}},
	}
	for _, c := range cases {
		got := make([]int64, c.n)
		if err := decodeInt64(got, src, c.dt); err != nil {
			t.Fatal(err)
		}
		f := make([]float32, c.n)
		if err := decodeFloat32(f, src, c.dt); err != nil {
			t.Fatal(err)
		}
		for i := range got {
			if got[i] != c.ints[i] || f[i] != float32(c.ints[i]) {
				t.Errorf("%s[%d] = %d / %v, want %d", c.dt, i, got[i], f[i], c.ints[i])
			}
		}
	}
	if err := decodeInt64(make([]int64, 1), make([]byte, 4), F32); err == nil {
		t.Error("decodeInt64 accepted F32")
	}
	if err := decodeFloat32(make([]float32, 1), make([]byte, 1), F8E4M3); err == nil {
		t.Error("decodeFloat32 accepted F8_E4M3")
	}
}

package half

import (
	"math"
	"testing"
)

// Every half value widens exactly and rounds back to itself.
func TestRoundTripAllPatterns(t *testing.T) {
	for i := range 1 << 16 {
		h := uint16(i)
		f := ToFloat32(h)
		if f != f {
			if got := FromFloat32(f); got&0x7c00 != 0x7c00 || got&0x3ff == 0 {
				t.Fatalf("NaN %#04x came back as %#04x", h, got)
			}
			continue
		}
		if got := FromFloat32(f); got != h {
			t.Fatalf("%#04x → %g → %#04x", h, f, got)
		}
	}
}

func TestRoundingEdges(t *testing.T) {
	for _, c := range []struct {
		f    float32
		want uint16
	}{
		{1, 0x3c00},
		{65504, 0x7bff},
		{65520, 0x7c00}, // halfway to the next binade rounds to even: Inf
		{65519, 0x7bff},
		{1 + 1.0/2048, 0x3c00}, // tie, to even
		{1 + 3.0/2048, 0x3c02}, // tie, to even (up)
		{float32(math.Ldexp(1, -24)), 0x0001},
		{float32(math.Ldexp(1, -25)), 0x0000}, // tie with zero, to even
		{-0.0, 0x0000},
	} {
		if got := FromFloat32(c.f); got != c.want && !(c.f == 0 && got == 0x8000) {
			t.Errorf("FromFloat32(%g) = %#04x, want %#04x", c.f, got, c.want)
		}
	}
	if got := Round(0.1); got != 0.0999755859375 {
		t.Errorf("Round(0.1) = %v", got)
	}
}

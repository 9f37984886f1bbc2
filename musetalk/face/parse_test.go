package face

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/kernels/cpu"
	"github.com/avatargen/musetalk/media"
	"github.com/avatargen/musetalk/musetalk/model"
)

// parseTestParser returns a Parser over BiSeNet with seeded random weights.
func parseTestParser(t *testing.T) *Parser {
	t.Helper()
	be, err := cpu.New(cpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	net, err := model.NewBiSeNet(be, model.RandomTensors(model.BiSeNetSpec(), 11))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(net.Close)
	return NewParser(net, be)
}

// parseTestImage returns a w×h RGB image with a smooth seeded pattern.
func parseTestImage(w, h int) *media.Image8 {
	m := media.NewImage8(w, h, 3)
	for y := range h {
		for x := range w {
			for c := range 3 {
				m.Pix[(y*w+x)*3+c] = uint8((x*7 + y*13 + c*50 + x*y) % 256)
			}
		}
	}
	return m
}

func TestArgmaxClassesTakesTheFirstMaximum(t *testing.T) {
	t.Parallel()
	// 3 classes over a 1×4 map; pixel 1 ties classes 1 and 2, pixel 3
	// ties all three.
	logits := []float32{
		5, 0, 1, 2, // class 0
		1, 4, 3, 2, // class 1
		2, 4, 7, 2, // class 2
	}
	got := argmaxClasses(logits, 3, 1, 4)
	if got.W != 4 || got.H != 1 || got.C != 1 {
		t.Fatalf("map is %d×%d×%d, want 4×1×1", got.W, got.H, got.C)
	}
	if want := []uint8{0, 1, 2, 0}; string(got.Pix) != string(want) {
		t.Errorf("classes %v, want %v", got.Pix, want)
	}
}

func TestParseInputNormalises(t *testing.T) {
	t.Parallel()
	// At the image's own size the resize is the identity, so the tensor
	// is the normalised pixels in planar RGB order.
	m := media.NewImage8(2, 2, 3)
	copy(m.Pix, []uint8{0, 255, 128, 255, 0, 51, 10, 20, 30, 40, 50, 60})
	resized, x := parseInput(m, 2)
	if string(resized.Pix) != string(m.Pix) {
		t.Fatalf("resize to the same size changed the image: %v", resized.Pix)
	}
	var want []float64
	mean, std := [3]float64{0.485, 0.456, 0.406}, [3]float64{0.229, 0.224, 0.225}
	for c := range 3 {
		for i := range 4 {
			want = append(want, (float64(m.Pix[3*i+c])/255-mean[c])/std[c])
		}
	}
	if len(x) != len(want) {
		t.Fatalf("%d values, want %d", len(x), len(want))
	}
	// (0/255 − 0.485)/0.229 by hand.
	if math.Abs(float64(x[0])+2.1179039) > 1e-6 {
		t.Errorf("x[0] = %v, want −2.1179039", x[0])
	}
	for i, w := range want {
		if math.Abs(float64(x[i])-w) > 1e-6 {
			t.Errorf("x[%d] = %v, want %v", i, x[i], w)
		}
	}
}

func TestParseRejectsBadInput(t *testing.T) {
	t.Parallel()
	p := parseTestParser(t)
	ctx := context.Background()
	gray := media.NewImage8(8, 8, 1)
	short := media.NewImage8(8, 8, 3)
	short.Pix = short.Pix[:10]
	for _, tc := range []struct {
		name string
		img  *media.Image8
		size int
		want string
	}{
		{"nil image", nil, 32, "nil image"},
		{"one channel", gray, 32, "3-channel"},
		{"short pixel buffer", short, 32, "10 bytes"},
		{"empty image", &media.Image8{C: 3}, 32, "non-empty"},
		{"zero size", parseTestImage(8, 8), 0, "size 0"},
		{"huge size", parseTestImage(8, 8), 1 << 20, "size 1048576"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := p.Parse(ctx, tc.img, tc.size)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestParseHonoursContext(t *testing.T) {
	t.Parallel()
	p := parseTestParser(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Parse(ctx, parseTestImage(16, 16), 32); !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want context.Canceled", err)
	}
}

func TestParseMap(t *testing.T) {
	t.Parallel()
	p := parseTestParser(t)
	img := parseTestImage(50, 30)
	const size = 40
	got, err := p.Parse(context.Background(), img, size)
	if err != nil {
		t.Fatal(err)
	}
	if got.W != size || got.H != size || got.C != 1 || len(got.Pix) != size*size {
		t.Fatalf("map is %d×%d×%d (%d bytes), want %d×%d×1", got.W, got.H, got.C, len(got.Pix), size, size)
	}
	// The map is the argmax of the network's logits on the prepared input.
	_, x := parseInput(img, size)
	in := kernels.Upload(p.b, x, 1, 3, size, size)
	defer p.b.Free(in)
	out, err := p.net.Forward(in)
	if err != nil {
		t.Fatal(err)
	}
	defer p.b.Free(out)
	logits := make([]float32, out.Len())
	if err := p.b.Download(logits, out); err != nil {
		t.Fatal(err)
	}
	n := size * size
	for i, c := range got.Pix {
		if int(c) >= model.BiSeNetClasses {
			t.Fatalf("pixel %d has class %d", i, c)
		}
		for k := range model.BiSeNetClasses {
			v, best := logits[k*n+i], logits[int(c)*n+i]
			if v > best || (v == best && k < int(c)) {
				t.Fatalf("pixel %d: class %d (logit %v) beats the chosen %d (logit %v)", i, k, v, c, best)
			}
		}
	}
	// Parsing is deterministic.
	again, err := p.Parse(context.Background(), img, size)
	if err != nil {
		t.Fatal(err)
	}
	if string(again.Pix) != string(got.Pix) {
		t.Error("a second Parse of the same image gave another map")
	}
}

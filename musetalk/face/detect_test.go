package face

import (
	"context"
	"errors"
	"testing"

	"github.com/avatargen/musetalk/kernels/cpu"
	"github.com/avatargen/musetalk/media"
	"github.com/avatargen/musetalk/musetalk/model"
)

func TestPreprocess(t *testing.T) {
	m := media.NewImage8(32, 33, 3)
	for i := range m.Pix {
		m.Pix[i] = uint8(i * 7)
	}
	// Pixel (x=5, y=2) is B=0, G=255, R=10.
	p := (2*32 + 5) * 3
	m.Pix[p], m.Pix[p+1], m.Pix[p+2] = 0, 255, 10
	x, err := Preprocess(m)
	if err != nil {
		t.Fatal(err)
	}
	if len(x) != 3*32*33 {
		t.Fatalf("%d values", len(x))
	}
	plane := 32 * 33
	at := 2*32 + 5
	if x[at] != 10-104 || x[plane+at] != 255-117 || x[2*plane+at] != 0-123 {
		t.Errorf("pixel (5,2): %v %v %v, want R−104, G−117, B−123 = -94 138 -123", x[at], x[plane+at], x[2*plane+at])
	}
	for i := range plane {
		if x[i] != float32(m.Pix[3*i+2])-104 || x[plane+i] != float32(m.Pix[3*i+1])-117 || x[2*plane+i] != float32(m.Pix[3*i])-123 {
			t.Fatalf("pixel %d: %v %v %v from BGR %v", i, x[i], x[plane+i], x[2*plane+i], m.Pix[3*i:3*i+3])
		}
	}

	for name, bad := range map[string]*media.Image8{
		"nil":        nil,
		"gray":       media.NewImage8(64, 64, 1),
		"RGBA":       media.NewImage8(64, 64, 4),
		"too narrow": media.NewImage8(31, 64, 3),
		"too short":  media.NewImage8(64, 31, 3),
		"short pix":  {W: 64, H: 64, C: 3, Pix: make([]uint8, 64*64*3-1)},
	} {
		if _, err := Preprocess(bad); err == nil {
			t.Errorf("%s frame accepted", name)
		}
	}
}

// testDetector builds a detector on seeded random weights.
func testDetector(t *testing.T) *Detector {
	t.Helper()
	b, err := cpu.New(cpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	net, err := model.NewS3FD(b, model.RandomTensors(model.S3FDSpec(), 3))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(net.Close)
	return NewDetector(net, b)
}

// testFrame returns a w×h BGR frame with a smooth pattern.
func testFrame(w, h int) *media.Image8 {
	m := media.NewImage8(w, h, 3)
	for y := range h {
		for x := range w {
			for c := range 3 {
				m.Pix[(y*w+x)*3+c] = uint8((x*3 + y*5 + c*60 + (x*y)%17) % 256)
			}
		}
	}
	return m
}

func TestDetectorErrors(t *testing.T) {
	d := testDetector(t)
	if _, _, err := d.Detect(context.Background(), media.NewImage8(20, 40, 3)); err == nil {
		t.Error("a 20×40 frame was accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, ok, err := d.Detect(ctx, testFrame(40, 40)); !errors.Is(err, context.Canceled) || ok {
		t.Errorf("cancelled Detect: ok %v, err %v; want context.Canceled", ok, err)
	}
}

func TestDetectorMaxSide(t *testing.T) {
	d := testDetector(t)
	ctx := context.Background()
	frame := testFrame(96, 64)

	// Off (and larger than the frame): the full-size result.
	full, okFull, err := d.Detect(ctx, frame)
	if err != nil {
		t.Fatal(err)
	}
	for _, maxSide := range []int{0, 96, 200} {
		box, ok, err := d.WithMaxSide(maxSide).Detect(ctx, frame)
		if err != nil || ok != okFull || box != full {
			t.Errorf("WithMaxSide(%d) = %v, %v, %v; want the full-size %v, %v", maxSide, box, ok, err, full, okFull)
		}
	}

	// On: the box of the 48×32 downscaled frame, scaled by 2.
	small := media.ResizePIL(frame, 48, 32, media.PILBilinear)
	want, okSmall, err := d.Detect(ctx, small)
	if err != nil {
		t.Fatal(err)
	}
	if !okSmall {
		t.Fatal("the random-weight network found no box on the small frame; pick another seed or frame")
	}
	for i := range want {
		want[i] *= 2
	}
	got, ok, err := d.WithMaxSide(48).Detect(ctx, frame)
	if err != nil || !ok || got != want {
		t.Errorf("WithMaxSide(48) = %v, %v, %v; want %v", got, ok, err, want)
	}
	// A maximum below the network's minimum is raised to it.
	if got := d.WithMaxSide(10).maxSide; got != model.S3FDMinSide {
		t.Errorf("WithMaxSide(10) keeps %d, want %d", got, model.S3FDMinSide)
	}
}

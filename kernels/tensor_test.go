package kernels

import (
	"slices"
	"strings"
	"testing"
)

func TestTensorViewsShareStorage(t *testing.T) {
	x := New(2, 3, 4)
	for i := range x.Data() {
		x.Data()[i] = float32(i)
	}
	r := x.Reshape(6, -1)
	if got := r.Shape(); !slices.Equal(got, []int{6, 4}) {
		t.Fatalf("Reshape(6, -1) shape %v", got)
	}
	r.Data()[5] = -1
	if x.Data()[5] != -1 {
		t.Fatal("Reshape copied the storage")
	}
	s := x.Slice(1, 2)
	if !slices.Equal(s.Shape(), []int{1, 3, 4}) || s.Data()[0] != 12 || len(s.Data()) != 12 {
		t.Fatalf("Slice(1, 2) = %v starting at %g", s, s.Data()[0])
	}
	s.Data()[0] = -2
	if x.Data()[12] != -2 {
		t.Fatal("Slice copied the storage")
	}
	if cap(s.Data()) != 12 {
		t.Fatalf("Slice capacity %d lets appends reach past the view", cap(s.Data()))
	}
	if x.Dim(-1) != 4 || x.Dim(0) != 2 || x.Rank() != 3 || x.Len() != 24 {
		t.Fatalf("Dim/Rank/Len wrong for %v", x)
	}
	sh := x.Shape()
	sh[0] = 99
	if x.Dim(0) != 2 {
		t.Fatal("Shape returned the internal slice")
	}
}

func TestTensorDevice(t *testing.T) {
	type handle struct{ id int }
	h := &handle{1}
	x := NewDevice(h, 10, 4, 5)
	if x.IsHost() || x.Data() != nil {
		t.Fatal("device tensor claims host data")
	}
	v := x.Slice(2, 4).Reshape(10)
	dev, off := v.Device()
	if dev != h || off != 20 {
		t.Fatalf("view of device tensor: handle %v offset %d, want offset 20", dev, off)
	}
	if !strings.Contains(x.String(), "device") {
		t.Fatalf("String() = %q", x.String())
	}
}

func TestTensorPanics(t *testing.T) {
	for name, f := range map[string]func(){
		"zero dim":         func() { New(2, 0) },
		"empty shape":      func() { New() },
		"FromSlice length": func() { FromSlice(make([]float32, 5), 2, 3) },
		"Reshape length":   func() { New(2, 3).Reshape(4, 2) },
		"Reshape two -1":   func() { New(2, 3).Reshape(-1, -1) },
		"Reshape inexact":  func() { New(2, 3).Reshape(4, -1) },
		"Slice empty":      func() { New(2, 3).Slice(1, 1) },
		"Slice range":      func() { New(2, 3).Slice(0, 3) },
		"NewDevice nil":    func() { NewDevice(nil, 0, 1) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			f()
		})
	}
}

func TestOpNamesComplete(t *testing.T) {
	seen := map[string]bool{}
	for _, op := range AllOps() {
		name := op.String()
		if name == "" || seen[name] {
			t.Fatalf("op %d has empty or duplicate name %q", op, name)
		}
		seen[name] = true
	}
	if got := Op(200).String(); got != "Op(200)" {
		t.Fatalf("unknown op formats as %q", got)
	}
}

func TestParams(t *testing.T) {
	p := Conv2DParams{PadRight: 1, PadBottom: 1, StrideH: 2, StrideW: 2}
	if h, w := p.OutSize(64, 64, 3, 3); h != 32 || w != 32 {
		t.Fatalf("VAE downsample of 64×64 gives %d×%d, want 32×32", h, w)
	}
	if h, w := Conv2DPad(1, 1).OutSize(7, 9, 3, 3); h != 7 || w != 9 {
		t.Fatalf("same-padding 3×3 gives %d×%d", h, w)
	}
	if got := (Conv2DParams{}).OutShape(New(2, 3, 8, 8), New(5, 3, 1, 1)); !slices.Equal(got, []int{2, 5, 8, 8}) {
		t.Fatalf("OutShape = %v", got)
	}
	if l := (Conv1DParams{PadLeft: 1, PadRight: 1, Stride: 2}).OutLen(3000, 3); l != 1500 {
		t.Fatalf("Whisper conv2 output length %d, want 1500", l)
	}
	if s := (AttentionParams{Heads: 8}).HeadScale(320); s != float32(1/6.324555320336759) {
		t.Fatalf("default scale for head dim 40 = %g", s)
	}
	if s := (AttentionParams{Heads: 8, Scale: 0.5}).HeadScale(320); s != 0.5 {
		t.Fatalf("explicit scale ignored: %g", s)
	}
}

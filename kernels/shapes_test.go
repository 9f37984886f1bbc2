package kernels

import (
	"strings"
	"testing"
)

func TestConcatShapes(t *testing.T) {
	dst := New(2, 5, 3)
	ax, outer, err := ConcatShapes(dst, -2, []*Tensor{New(2, 2, 3), New(2, 3, 3)})
	if err != nil || ax != 1 || outer != 2 {
		t.Fatalf("got %d, %d, %v; want 1, 2, nil", ax, outer, err)
	}
	for _, c := range []struct {
		axis int
		srcs []*Tensor
		want string
	}{
		{3, []*Tensor{New(2, 5, 3)}, "axis 3"},
		{1, nil, "with 0 sources"},
		{1, []*Tensor{nil}, "nil source"},
		{1, []*Tensor{New(2, 2, 4), New(2, 3, 3)}, "does not fit"},
		{1, []*Tensor{New(2, 2, 3), New(2, 2, 3)}, "sources sum to 4"},
	} {
		if _, _, err := ConcatShapes(dst, c.axis, c.srcs); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("axis %d, %v: %v, want %q", c.axis, c.srcs, err, c.want)
		}
	}
}

func TestLinearShapes(t *testing.T) {
	m, n, k, err := LinearShapes(New(2, 3, 4), New(2, 3, 5), New(4, 5), New(4))
	if err != nil || m != 6 || n != 4 || k != 5 {
		t.Fatalf("got %d, %d, %d, %v; want 6, 4, 5, nil", m, n, k, err)
	}
	for _, c := range []struct {
		dst, x, w, bias *Tensor
		want            string
	}{
		{New(3, 4), nil, New(4, 5), nil, "nil input"},
		{New(3, 4), New(3, 5), New(4, 5, 1), nil, "want rank 2"},
		{New(3, 4), New(3, 6), New(4, 5), nil, "disagree on K"},
		{New(3, 5), New(3, 5), New(4, 5), nil, "dst is"},
		{New(3, 4), New(3, 5), New(4, 5), New(5), "bias is"},
	} {
		if _, _, _, err := LinearShapes(c.dst, c.x, c.w, c.bias); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c, err, c.want)
		}
	}
}

func TestLayerNormShapes(t *testing.T) {
	rows, d, err := LayerNormShapes(New(3, 4), New(3, 4), New(4), nil)
	if err != nil || rows != 3 || d != 4 {
		t.Fatalf("got %d, %d, %v; want 3, 4, nil", rows, d, err)
	}
	for _, c := range []struct {
		dst, x, w, b *Tensor
		want         string
	}{
		{New(3, 4), nil, nil, nil, "x is"},
		{New(4, 3), New(3, 4), nil, nil, "dst is"},
		{New(3, 4), New(3, 4), New(3), nil, "weight is"},
		{New(3, 4), New(3, 4), nil, New(5), "bias is"},
	} {
		if _, _, err := LayerNormShapes(c.dst, c.x, c.w, c.b); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c, err, c.want)
		}
	}
}

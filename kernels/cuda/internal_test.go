package cuda

import (
	"slices"
	"testing"
)

func TestBroadcastPlan(t *testing.T) {
	for _, c := range []struct {
		a, x           []int
		sizes, strides []int
	}{
		{[]int{2, 3, 4, 5}, []int{2, 3, 4, 5}, []int{120}, []int{1}},
		{[]int{2, 3, 4, 5}, []int{1}, []int{120}, []int{0}},
		{[]int{2, 3, 4, 5}, []int{3, 1, 1}, []int{2, 3, 20}, []int{0, 1, 0}},
		{[]int{2, 3, 4, 5}, []int{2, 3, 1, 1}, []int{6, 20}, []int{1, 0}},
		{[]int{2, 3, 4, 5}, []int{2, 1, 4, 1}, []int{2, 3, 4, 5}, []int{4, 0, 1, 0}},
		{[]int{2, 50, 24}, []int{24}, []int{100, 24}, []int{0, 1}},
		{[]int{1, 1, 7}, []int{1, 7}, []int{7}, []int{1}},
		{[]int{1, 1}, []int{1}, []int{1}, []int{0}},
		{[]int{4, 1, 70000}, []int{4, 1, 1}, []int{4, 70000}, []int{1, 0}},
		{[]int{2, 3, 2, 3, 2, 3}, []int{2, 1, 2, 1, 2, 1}, []int{2, 3, 2, 3, 2, 3}, []int{4, 0, 2, 0, 1, 0}},
	} {
		sizes, strides := broadcastPlan("Add", c.a, c.x)
		if !slices.Equal(sizes, c.sizes) || !slices.Equal(strides, c.strides) {
			t.Errorf("broadcastPlan(%v, %v) = %v %v, want %v %v", c.a, c.x, sizes, strides, c.sizes, c.strides)
		}
	}
}

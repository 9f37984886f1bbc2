package kernels

import (
	"slices"
	"testing"
)

func TestSimplifyPermute(t *testing.T) {
	for _, c := range []struct {
		shape, perm, sizes, order []int
	}{
		{[]int{2, 3, 4}, []int{0, 1, 2}, []int{24}, []int{0}},                   // identity: one copy
		{[]int{2, 3, 4}, []int{0, 2, 1}, []int{2, 3, 4}, []int{0, 2, 1}},        // batched transpose
		{[]int{2, 3, 4, 5}, []int{0, 2, 3, 1}, []int{2, 3, 20}, []int{0, 2, 1}}, // [4,5] stay together
		{[]int{1, 3, 1, 5}, []int{2, 3, 0, 1}, []int{3, 5}, []int{1, 0}},        // size-1 dims dropped
		{[]int{1, 1}, []int{1, 0}, []int{1}, []int{0}},                          // nothing left
		{[]int{2, 3, 4}, []int{2, 1, 0}, []int{2, 3, 4}, []int{2, 1, 0}},        // a full reversal
	} {
		sizes, order := SimplifyPermute(c.shape, c.perm)
		if !slices.Equal(sizes, c.sizes) || !slices.Equal(order, c.order) {
			t.Errorf("SimplifyPermute(%v, %v) = %v, %v; want %v, %v", c.shape, c.perm, sizes, order, c.sizes, c.order)
		}
	}
}

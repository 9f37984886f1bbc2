package kernels

import "slices"

// SimplifyPermute reduces x.permute(perm...) of a tensor of the given
// shape to an equivalent permutation of fewer, larger dimensions, for the
// backends' Permute: it drops size-1 dimensions and merges dimensions that
// stay adjacent and in order under perm. It returns the merged source
// sizes and the permutation of them ([1] and [0] when nothing is left).
func SimplifyPermute(shape, perm []int) (sizes, order []int) {
	var kept []int // source dims of size > 1, in dst order
	for _, p := range perm {
		if shape[p] > 1 {
			kept = append(kept, p)
		}
	}
	if len(kept) == 0 {
		return []int{1}, []int{0}
	}
	// Groups of consecutive source dims, in dst order.
	var groups [][2]int // [first, last] source dim
	for _, p := range kept {
		if g := len(groups) - 1; g >= 0 && nextKept(shape, groups[g][1]) == p {
			groups[g][1] = p
			continue
		}
		groups = append(groups, [2]int{p, p})
	}
	bySrc := make([]int, len(groups)) // group indexes sorted by source position
	for i := range bySrc {
		bySrc[i] = i
	}
	slices.SortFunc(bySrc, func(a, b int) int { return groups[a][0] - groups[b][0] })
	rank := make([]int, len(groups)) // group → merged source dim
	for pos, g := range bySrc {
		rank[g] = pos
		n := 1
		for d := groups[g][0]; d <= groups[g][1]; d++ {
			n *= shape[d]
		}
		sizes = append(sizes, n)
	}
	for g := range groups {
		order = append(order, rank[g])
	}
	return sizes, order
}

// nextKept returns the first source dim after d with size > 1, or -1.
func nextKept(shape []int, d int) int {
	for d++; d < len(shape); d++ {
		if shape[d] > 1 {
			return d
		}
	}
	return -1
}

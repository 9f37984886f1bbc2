package cpu

// goKernel returns the portable micro-kernel: a 4×8 tile in plain Go.
func goKernel() microKernel {
	return microKernel{mr: 4, nr: 8, kc: 256, mc: 64, nc: 256, fn: kernGo}
}

// kernGo computes a 4×8 tile; see [microKernel.fn].
func kernGo(k int, a, b, c []float32, ldc int, acc bool) {
	const mr, nr = 4, 8
	var t [mr][nr]float32
	a, b = a[:k*mr], b[:k*nr]
	for p := range k {
		ap := a[p*mr : p*mr+mr : p*mr+mr]
		bp := b[p*nr : p*nr+nr : p*nr+nr]
		for r := range mr {
			av := ap[r]
			row := &t[r]
			row[0] += av * bp[0]
			row[1] += av * bp[1]
			row[2] += av * bp[2]
			row[3] += av * bp[3]
			row[4] += av * bp[4]
			row[5] += av * bp[5]
			row[6] += av * bp[6]
			row[7] += av * bp[7]
		}
	}
	for r := range mr {
		dst := c[r*ldc : r*ldc+nr]
		if acc {
			for q, v := range t[r] {
				dst[q] += v
			}
		} else {
			copy(dst, t[r][:])
		}
	}
}

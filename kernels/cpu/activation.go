package cpu

import "github.com/avatargen/musetalk/kernels"

// unary applies f elementwise from x to dst (same length; dst may be x).
func (b *Backend) unary(op string, dst, x *kernels.Tensor, f func(dst, x []float32)) {
	xd, dd := hostData(op, x), hostData(op, dst)
	checkShape(op, "dst", dst, x.Shape()...)
	b.forChunks(len(xd), elemChunk, func(lo, hi int) { f(dd[lo:hi], xd[lo:hi]) })
}

// GELU implements [kernels.Ops.GELU].
func (b *Backend) GELU(dst, x *kernels.Tensor) {
	b.unary("GELU", dst, x, func(d, s []float32) {
		if b.kern.avx512 {
			geluVec(d, s)
			return
		}
		d = d[:len(s)]
		for i, v := range s {
			d[i] = gelu32(v)
		}
	})
}

// GEGLU implements [kernels.Ops.GEGLU].
func (b *Backend) GEGLU(dst, x *kernels.Tensor) {
	const op = "GEGLU"
	xd, dd := hostData(op, x), hostData(op, dst)
	d2 := x.Dim(-1)
	check(d2%2 == 0, op, "last dimension of x %v is odd", x)
	d := d2 / 2
	shape := x.Shape()
	shape[len(shape)-1] = d
	checkShape(op, "dst", dst, shape...)
	rows := x.Len() / d2
	b.forChunks(rows, max(1, elemChunk/d), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			h, gate, out := xd[r*d2:r*d2+d], xd[r*d2+d:(r+1)*d2], dd[r*d:(r+1)*d]
			if b.kern.avx512 {
				gegluVec(out, h, gate)
				continue
			}
			h = h[:len(gate)]
			out = out[:len(gate)]
			for i, g := range gate {
				out[i] = h[i] * gelu32(g)
			}
		}
	})
}

// ReLU implements [kernels.Ops.ReLU].
func (b *Backend) ReLU(dst, x *kernels.Tensor) {
	b.unary("ReLU", dst, x, func(d, s []float32) {
		d = d[:len(s)]
		for i, v := range s {
			d[i] = max(v, 0)
		}
	})
}

// Sigmoid implements [kernels.Ops.Sigmoid].
func (b *Backend) Sigmoid(dst, x *kernels.Tensor) {
	b.unary("Sigmoid", dst, x, func(d, s []float32) {
		if b.kern.avx512 {
			sigmoidVec(d, s)
			return
		}
		d = d[:len(s)]
		for i, v := range s {
			d[i] = sigmoid32(v)
		}
	})
}

// SiLU implements [kernels.Ops.SiLU].
func (b *Backend) SiLU(dst, x *kernels.Tensor) {
	b.unary("SiLU", dst, x, func(d, s []float32) {
		if b.kern.avx512 {
			siluVec(d, s)
			return
		}
		d = d[:len(s)]
		for i, v := range s {
			d[i] = v * sigmoid32(v)
		}
	})
}

// Softmax implements [kernels.Ops.Softmax].
func (b *Backend) Softmax(dst, x *kernels.Tensor) {
	const op = "Softmax"
	xd, dd := hostData(op, x), hostData(op, dst)
	checkShape(op, "dst", dst, x.Shape()...)
	d := x.Dim(-1)
	b.forChunks(x.Len()/d, max(1, elemChunk/d), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			softmaxRow(&b.kern, dd[r*d:(r+1)*d], xd[r*d:(r+1)*d])
		}
	})
}

// softmaxRow sets dst = softmax(x); dst may be x.
func softmaxRow(kern *microKernel, dst, x []float32) {
	if kern.avx512 {
		softmaxVec(dst, x)
		return
	}
	dst = dst[:len(x)]
	m := x[0]
	for _, v := range x {
		m = max(m, v)
	}
	var sum float64
	for i, v := range x {
		e := exp32(v - m)
		dst[i] = e
		sum += float64(e)
	}
	inv := float32(1 / sum)
	for i := range dst {
		dst[i] *= inv
	}
}

// HardSigmoid implements [kernels.Ops.HardSigmoid] as PyTorch's CPU kernel
// computes it: min(max(x + 3, 0), 6) / 6 in float32.
func (b *Backend) HardSigmoid(dst, x *kernels.Tensor) {
	b.unary("HardSigmoid", dst, x, func(d, s []float32) {
		d = d[:len(s)]
		for i, v := range s {
			d[i] = min(max(v+3, 0), 6) / 6
		}
	})
}

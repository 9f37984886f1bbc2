package cpu

import (
	"math/rand/v2"
	"testing"

	"github.com/avatargen/musetalk/kernels"
)

// BenchmarkPack times packing one k block of A and B panels, in ns per
// packed element.
func BenchmarkPack(b *testing.B) {
	const m, k, n, kc = 192, 1024, 512, 256
	rng := rand.New(rand.NewPCG(1, 2))
	data := randTensor(rng, 1024*1024).Data()
	dst := alignedFloats(kc * 1024)
	kern := kernelFor(BestISA())
	report := func(b *testing.B, elems int) {
		b.ReportMetric(b.Elapsed().Seconds()*1e9/float64(b.N*elems), "ns/elem")
	}
	b.Run("A_rowmajor_12", func(b *testing.B) {
		s := strided{data: data, rs: k, cs: 1}
		for b.Loop() {
			s.packA(&kern, dst, 0, m, 0, kc, 1)
		}
		report(b, m*kc)
	})
	b.Run("B_transposed_32", func(b *testing.B) {
		s := strided{data: data, rs: 1, cs: k}
		for b.Loop() {
			s.packB(&kern, dst, 0, kc, 0, n)
		}
		report(b, n*kc)
	})
	b.Run("B_rowmajor_32", func(b *testing.B) {
		s := strided{data: data, rs: n, cs: 1}
		for b.Loop() {
			s.packB(&kern, dst, 0, kc, 0, n)
		}
		report(b, n*kc)
	})
	b.Run("B_conv3x3_32x32", func(b *testing.B) {
		x := kernels.FromSlice(data[:320*32*32], 1, 320, 32, 32)
		s := &convSrc{x: x.Data(), c: 320, h: 32, w: 32, kh: 3, kw: 3, sh: 1, sw: 1, pt: 1, pl: 1, ho: 32, wo: 32}
		for b.Loop() {
			s.packB(&kern, dst, 0, kc, 0, n)
		}
		report(b, n*kc)
	})
	b.Run("B_conv3x3_8x8", func(b *testing.B) {
		x := kernels.FromSlice(data[:1280*8*8], 1, 1280, 8, 8)
		s := &convSrc{x: x.Data(), c: 1280, h: 8, w: 8, kh: 3, kw: 3, sh: 1, sw: 1, pt: 1, pl: 1, ho: 8, wo: 8}
		for b.Loop() {
			s.packB(&kern, dst, 0, kc, 0, 64)
		}
		report(b, 64*kc)
	})
}

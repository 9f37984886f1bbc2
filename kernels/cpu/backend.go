// Package cpu is the CPU backend of package kernels: pure Go plus SIMD
// assembly (AVX2+FMA and AVX-512 micro-kernels chosen at run time), with a
// worker pool owned by the backend.
//
// Convolutions and linear layers run as cache-blocked GEMMs with packed
// panels (GotoBLAS style); convolutions pack their input patches straight
// from the image (implicit im2col), so no im2col matrix is materialised.
package cpu

import (
	"fmt"
	"runtime"
	"sync"

	"github.com/avatargen/musetalk/kernels"
)

// Options configures [New].
type Options struct {
	// ISA forces a code path; ISAAuto (the zero value) picks [BestISA]. Tests
	// use ISAGo to check the SIMD paths against the portable one.
	ISA ISA
	// NoWeightCache stops the backend from keeping GEMM-packed copies of
	// tensors made by [Backend.Weight]: half the weight memory, but every
	// convolution and linear layer packs its weights again.
	NoWeightCache bool
	// Threads is the number of threads ops use, the caller's included;
	// 0 means runtime.GOMAXPROCS(0).
	Threads int
	// Conv3x3 picks the algorithm of 3×3, stride 1, pad 1 convolutions:
	// ConvAuto (the zero value) uses Winograd F(4×4, 3×3) where a cost
	// model says it wins (AVX-512, at least 64 channels each way);
	// ConvDirect never does; ConvWinograd always does, on any ISA and
	// channel count (tests use it to check the Winograd path's numerics on
	// small networks).
	Conv3x3 ConvAlgo
}

// ConvAlgo names an algorithm choice for [Options.Conv3x3].
type ConvAlgo uint8

// The algorithm choices.
const (
	ConvAuto ConvAlgo = iota
	ConvDirect
	ConvWinograd
)

// String returns "auto", "direct" or "winograd".
func (a ConvAlgo) String() string {
	switch a {
	case ConvAuto:
		return "auto"
	case ConvDirect:
		return "direct"
	case ConvWinograd:
		return "winograd"
	}
	return fmt.Sprintf("ConvAlgo(%d)", uint8(a))
}

// Backend is the CPU implementation of [kernels.Backend]. It is safe for
// concurrent use; each op uses the backend's worker pool and per-thread
// scratch arenas. Its tensors are host tensors.
type Backend struct {
	isa  ISA
	kern microKernel
	w    *workers

	noWeightCache bool
	conv3x3       ConvAlgo

	mu      sync.Mutex
	pool    map[int][][]float32 // free buffers by length
	weights map[*float32]*weight
}

var _ kernels.Backend = (*Backend)(nil)

// New starts a CPU backend. It returns an error if opts.ISA is not
// available on this machine.
func New(opts Options) (*Backend, error) {
	isa := opts.ISA
	if isa == ISAAuto {
		isa = BestISA()
	}
	if !isa.Available() {
		return nil, fmt.Errorf("cpu backend: ISA %v not supported by this CPU", isa)
	}
	if opts.Conv3x3 > ConvWinograd {
		return nil, fmt.Errorf("cpu backend: unknown 3×3 convolution algorithm %v", opts.Conv3x3)
	}
	threads := opts.Threads
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	return &Backend{
		isa:           isa,
		kern:          kernelFor(isa),
		w:             newWorkers(threads),
		noWeightCache: opts.NoWeightCache,
		conv3x3:       opts.Conv3x3,
		pool:          make(map[int][][]float32),
		weights:       make(map[*float32]*weight),
	}, nil
}

// Alloc returns a host tensor from the pool; see [kernels.Memory].
func (b *Backend) Alloc(shape ...int) *kernels.Tensor {
	n := 1
	for _, d := range shape {
		n *= d
	}
	if n <= 0 || len(shape) == 0 {
		panic(fmt.Sprintf("cpu: Alloc: bad shape %v", shape))
	}
	return kernels.FromSlice(b.getBuf(n), shape...)
}

// Close stops the worker goroutines and drops the pool. It must not be
// called while ops are running.
func (b *Backend) Close() error {
	b.w.close()
	b.mu.Lock()
	b.pool = make(map[int][][]float32)
	b.weights = make(map[*float32]*weight)
	b.mu.Unlock()
	return nil
}

// Download copies src into dst. CPU ops are synchronous, so it never fails.
func (b *Backend) Download(dst []float32, src *kernels.Tensor) error {
	d := hostData("Download", src)
	if len(dst) != len(d) {
		panic(fmt.Sprintf("cpu: Download: %d floats for %v", len(dst), src))
	}
	copy(dst, d)
	return nil
}

// Free returns t's storage to the pool, or forgets a weight and its packed
// copies; see [kernels.Memory].
func (b *Backend) Free(t *kernels.Tensor) {
	if t == nil {
		return
	}
	d := hostData("Free", t)
	b.mu.Lock()
	if w := b.weights[&d[0]]; w != nil && w.n == len(d) {
		delete(b.weights, &d[0])
		b.mu.Unlock()
		return
	}
	b.mu.Unlock()
	b.putBuf(d)
}

// ISA returns the code path this backend uses.
func (b *Backend) ISA() ISA { return b.isa }

// Name returns "cpu/" followed by the ISA, e.g. "cpu/avx512".
func (b *Backend) Name() string { return "cpu/" + b.isa.String() }

// ReleasePool drops the buffers that freed tensors left in the pool, so the
// garbage collector can reclaim them. Tensors in use are not affected.
func (b *Backend) ReleasePool() {
	b.mu.Lock()
	b.pool = make(map[int][][]float32)
	b.mu.Unlock()
}

// Supports reports true for every op of the table.
func (b *Backend) Supports(op kernels.Op) bool { return int(op) < len(kernels.AllOps()) }

// Sync returns nil: CPU ops finish before they return.
func (b *Backend) Sync() error { return nil }

// Threads returns the number of threads ops use.
func (b *Backend) Threads() int { return b.w.threads }

// Upload copies src into dst.
func (b *Backend) Upload(dst *kernels.Tensor, src []float32) {
	d := hostData("Upload", dst)
	if len(src) != len(d) {
		panic(fmt.Sprintf("cpu: Upload: %d floats for %v", len(src), dst))
	}
	copy(d, src)
}

// getBuf returns a pooled buffer of exactly n floats (64-byte aligned,
// contents unspecified).
func (b *Backend) getBuf(n int) []float32 {
	b.mu.Lock()
	if l := b.pool[n]; len(l) > 0 {
		buf := l[len(l)-1]
		b.pool[n] = l[:len(l)-1]
		b.mu.Unlock()
		return buf
	}
	b.mu.Unlock()
	return alignedFloats(n)
}

// putBuf returns buf to the pool.
func (b *Backend) putBuf(buf []float32) {
	b.mu.Lock()
	b.pool[len(buf)] = append(b.pool[len(buf)], buf)
	b.mu.Unlock()
}

// hostData returns t's elements and panics if t is not a host tensor.
func hostData(op string, t *kernels.Tensor) []float32 {
	if t == nil {
		panic("cpu: " + op + ": nil tensor")
	}
	d := t.Data()
	if d == nil {
		panic(fmt.Sprintf("cpu: %s: %v is not a host tensor", op, t))
	}
	return d
}

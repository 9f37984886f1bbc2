// Package cuda is the CUDA backend of package kernels: host code in Go
// that runs kernels written in CUDA C (src/*.cu) through [Driver], a small
// seam of memory, copies, launches by name and synchronisation. On a GPU
// the seam is the CUDA driver API (gorgonia.org/cu, build tag cuda); in
// tests it is package emu, which runs the same kernel sources on the CPU,
// so every kernel and launch is checked by `go test` without a GPU.
//
// Tensors are stored as fp32 or, with Options.Precision = kernels.F16, as
// IEEE half; every kernel source is compiled for both storage types and
// computes in fp32 (accumulation, statistics, softmax) either way. Ops are
// issued in order on the driver's stream and may still be running
// when they return; their errors surface at [Backend.Sync] and
// [Backend.Download]. Every op of the table is implemented (Supports
// reports true for each).
package cuda

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/avatargen/musetalk/kernels"
)

// Options configures [New].
type Options struct {
	// MaxPoolBytes bounds the memory that freed tensors leave in the
	// allocator's pool for reuse; beyond it Free hands memory back to the
	// driver. 0 means no bound.
	MaxPoolBytes int64
	// Precision is how tensors are stored: kernels.F32 (the default) or
	// kernels.F16. Accumulation and statistics are fp32 either way.
	Precision kernels.Precision
}

// Backend implements [kernels.Backend] on a [Driver]. It is safe for
// concurrent use: ops and memory calls are serialised on one stream.
type Backend struct {
	d         Driver
	info      DeviceInfo
	prec      kernels.Precision
	esize     int    // bytes per stored element
	suffix    string // of the kernels for prec: "_f32" or "_f16"
	maxPool   int64
	gridLimit int // blocks of a grid-stride kernel

	mu     sync.Mutex
	pool   map[int][]DevPtr // free allocations by size
	pooled int64            // bytes in pool
	held   map[DevPtr]int   // every allocation held, in use or pooled, with its size
	heldB  int64            // bytes in held
	err    error            // the first error any call raised; sticky
	closed bool
}

var (
	_ kernels.Backend              = (*Backend)(nil)
	_ kernels.DeviceMemoryReporter = (*Backend)(nil)
)

// New returns a backend on d, which it owns from then on: Close closes it.
func New(d Driver, opts Options) (*Backend, error) {
	info := d.Info()
	if info.WarpSize != 32 || info.MaxThreadsPerBlock < 256 || info.SharedPerBlock < 16<<10 || info.SMs < 1 {
		return nil, fmt.Errorf("cuda backend: device %q unsupported: warp size %d, %d threads and %d bytes of shared memory per block, %d SMs",
			info.Name, info.WarpSize, info.MaxThreadsPerBlock, info.SharedPerBlock, info.SMs)
	}
	var suffix string
	switch opts.Precision {
	case kernels.F32:
		suffix = "_f32"
	case kernels.F16:
		suffix = "_f16"
	default:
		return nil, fmt.Errorf("cuda backend: unknown precision %v", opts.Precision)
	}
	return &Backend{
		d:         d,
		info:      info,
		prec:      opts.Precision,
		esize:     opts.Precision.ElemBytes(),
		suffix:    suffix,
		maxPool:   opts.MaxPoolBytes,
		gridLimit: 8 * info.SMs,
		pool:      make(map[int][]DevPtr),
		held:      make(map[DevPtr]int),
	}, nil
}

// Name returns "cuda/" followed by the device's name, and "/fp16" for fp16
// storage, e.g. "cuda/emu" or "cuda/NVIDIA H100 80GB HBM3/fp16".
func (b *Backend) Name() string {
	if b.prec == kernels.F16 {
		return "cuda/" + b.info.Name + "/fp16"
	}
	return "cuda/" + b.info.Name
}

// Precision returns how the backend stores tensors.
func (b *Backend) Precision() kernels.Precision { return b.prec }

// Supports reports whether op is implemented.
func (b *Backend) Supports(op kernels.Op) bool {
	switch op {
	case kernels.OpAdd, kernels.OpCopy, kernels.OpGELU, kernels.OpHardSigmoid, kernels.OpLinear, kernels.OpMatMul,
		kernels.OpMul, kernels.OpReLU, kernels.OpScale, kernels.OpSigmoid, kernels.OpSiLU, kernels.OpSoftmax:
		return true
	case kernels.OpConv1D, kernels.OpConv2D, kernels.OpDepthwiseConv2D, kernels.OpGroupNorm, kernels.OpLayerNorm,
		kernels.OpL2Norm, kernels.OpScaleNorm:
		return true
	case kernels.OpAttention, kernels.OpAvgPool2D, kernels.OpConcat, kernels.OpGEGLU, kernels.OpMaxPool2D,
		kernels.OpPermute, kernels.OpUpsampleBilinear, kernels.OpUpsampleNearest:
		return true
	}
	return false
}

// Close frees every allocation the backend holds and closes the driver.
// Tensors of the backend must not be used afterwards.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	var errs []error
	for p := range b.held {
		if err := b.d.Free(p); err != nil {
			errs = append(errs, err)
		}
	}
	b.held, b.pool, b.pooled, b.heldB = nil, nil, 0, 0
	if err := b.d.Close(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cuda: Close: %w", err)
	}
	return nil
}

// launch issues the kernel base+"_f32" or base+"_f16", as the storage
// precision asks (see KNAME in src/common.cuh); the caller holds b.mu. A
// launch error is recorded for Sync and Download to report.
func (b *Backend) launch(op, base string, grid, block Dim3, shared int, args ...any) {
	b.launchExact(op, base+b.suffix, grid, block, shared, args...)
}

// launchExact issues a kernel by its full name, for kernels compiled once
// (plain names, fixed element types).
func (b *Backend) launchExact(op, kernel string, grid, block Dim3, shared int, args ...any) {
	if err := b.d.Launch(kernel, grid, block, shared, args...); err != nil {
		b.record(op, err)
	}
}

// record keeps err, from op, if it is the first; the caller holds b.mu.
func (b *Backend) record(op string, err error) {
	if err != nil && b.err == nil {
		b.err = fmt.Errorf("cuda: %s: %w", op, err)
	}
}

// ptr returns the device address of t's first element; the caller holds
// b.mu. It panics unless t is a live tensor of this backend.
func (b *Backend) ptr(op, name string, t *kernels.Tensor) DevPtr {
	buf, off := b.buffer(op, name, t)
	return buf.ptr + DevPtr(b.esize*off)
}

// optPtr is ptr for an optional tensor: 0 for nil.
func (b *Backend) optPtr(op, name string, t *kernels.Tensor) DevPtr {
	if t == nil {
		return 0
	}
	return b.ptr(op, name, t)
}

// buffer returns t's storage and element offset; the caller holds b.mu.
func (b *Backend) buffer(op, name string, t *kernels.Tensor) (*buffer, int) {
	check(t != nil, op, "%s is nil", name)
	h, off := t.Device()
	buf, ok := h.(*buffer)
	check(ok && buf.b == b, op, "%s %v is not a tensor of backend %s", name, t, b.Name())
	check(!buf.freed && !b.closed, op, "%s %v was freed", name, t)
	return buf, off
}

// check panics with "cuda: op: message" unless ok.
func check(ok bool, op string, format string, args ...any) {
	if !ok {
		panic(fmt.Sprintf("cuda: %s: %s", op, fmt.Sprintf(format, args...)))
	}
}

// checkShape panics unless t has exactly the given shape.
func checkShape(op, name string, t *kernels.Tensor, shape ...int) {
	check(t != nil, op, "%s is nil", name)
	check(slices.Equal(t.Shape(), shape), op, "%s is %v, want shape %v", name, t, shape)
}

// maxElems bounds the elements of one tensor: kernels index with int.
const maxElems = 1 << 30

// i32 returns v as a kernel argument, panicking if it does not fit.
func i32(op string, v int) int32 {
	check(v >= 0 && v <= maxElems, op, "size %d exceeds the kernels' limit of %d", v, maxElems)
	return int32(v)
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

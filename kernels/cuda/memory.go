package cuda

import (
	"fmt"
	"unsafe"

	"github.com/avatargen/musetalk/internal/half"
	"github.com/avatargen/musetalk/kernels"
)

// buffer is the storage handle of the backend's tensors
// ([kernels.NewDevice]): one driver allocation.
type buffer struct {
	b     *Backend
	ptr   DevPtr
	bytes int
	freed bool
}

// allocAlign rounds allocation sizes, so that tensors of nearby sizes
// share pool entries.
const allocAlign = 256

// Alloc returns a tensor from the pool, or new device memory; see
// [kernels.Memory]. It panics if the device is out of memory even after
// the pool is released.
func (b *Backend) Alloc(shape ...int) *kernels.Tensor {
	n := 1
	for _, d := range shape {
		n *= d
	}
	check(len(shape) > 0 && n > 0, "Alloc", "bad shape %v", shape)
	i32("Alloc", n)
	size := ceilDiv(b.esize*n, allocAlign) * allocAlign
	b.mu.Lock()
	defer b.mu.Unlock()
	check(!b.closed, "Alloc", "backend closed")
	return kernels.NewDevice(&buffer{b: b, ptr: b.get(size, shape), bytes: size}, 0, shape...)
}

// get returns size bytes from the pool or the driver; the caller holds
// b.mu.
func (b *Backend) get(size int, shape []int) DevPtr {
	if l := b.pool[size]; len(l) > 0 {
		p := l[len(l)-1]
		b.pool[size] = l[:len(l)-1]
		b.pooled -= int64(size)
		return p
	}
	p, err := b.d.Alloc(size)
	if err != nil {
		b.releasePool()
		p, err = b.d.Alloc(size)
	}
	check(err == nil, "Alloc", "shape %v: %v", shape, err)
	b.held[p] = size
	b.heldB += int64(size)
	return p
}

// Free returns t's memory to the pool; see [kernels.Memory].
func (b *Backend) Free(t *kernels.Tensor) {
	if t == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	buf, off := b.buffer("Free", "t", t)
	check(off == 0, "Free", "%v is a view at element %d, not a tensor from Alloc", t, off)
	buf.freed = true
	if b.maxPool > 0 && b.pooled+int64(buf.bytes) > b.maxPool {
		delete(b.held, buf.ptr)
		b.heldB -= int64(buf.bytes)
		b.record("Free", b.d.Free(buf.ptr))
		return
	}
	b.pool[buf.bytes] = append(b.pool[buf.bytes], buf.ptr)
	b.pooled += int64(buf.bytes)
}

// ReleasePool hands the memory of freed tensors back to the driver.
func (b *Backend) ReleasePool() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.releasePool()
}

// DeviceMemory reports the device memory the allocator holds: for live
// tensors (weights included) and in the pool; see
// [kernels.DeviceMemoryReporter].
func (b *Backend) DeviceMemory() (inUse, pooled int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.heldB - b.pooled, b.pooled
}

// releasePool empties the pool; the caller holds b.mu.
func (b *Backend) releasePool() {
	for _, l := range b.pool {
		for _, p := range l {
			b.heldB -= int64(b.held[p])
			delete(b.held, p)
			b.record("ReleasePool", b.d.Free(p))
		}
	}
	clear(b.pool)
	b.pooled = 0
}

// Upload copies src into dst, rounding to half (to nearest, ties to even)
// when the backend stores fp16.
func (b *Backend) Upload(dst *kernels.Tensor, src []float32) {
	check(dst != nil && len(src) == dst.Len(), "Upload", "%d floats for %v", len(src), dst)
	bytes := floatBytes(src)
	if b.prec == kernels.F16 {
		h := make([]uint16, len(src))
		half.FromFloat32s(h, src)
		bytes = half.Bytes(h)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.record("Upload", b.d.CopyHtoD(b.ptr("Upload", "dst", dst), bytes))
}

// Download copies src into dst after the ops issued before it, and
// returns the first error any call of the backend raised. fp16 elements
// are widened exactly.
func (b *Backend) Download(dst []float32, src *kernels.Tensor) error {
	check(src != nil && len(dst) == src.Len(), "Download", "%d floats for %v", len(dst), src)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.prec == kernels.F16 {
		h := make([]uint16, len(dst))
		b.record("Download", b.d.CopyDtoH(half.Bytes(h), b.ptr("Download", "src", src)))
		half.ToFloat32s(dst, h)
		return b.err
	}
	b.record("Download", b.d.CopyDtoH(floatBytes(dst), b.ptr("Download", "src", src)))
	return b.err
}

// Sync waits for the ops issued so far and returns the first error any
// call of the backend raised.
func (b *Backend) Sync() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return fmt.Errorf("cuda: Sync: backend closed")
	}
	b.record("Sync", b.d.Sync())
	return b.err
}

// Weight copies data to a new device tensor; see [kernels.Memory].
func (b *Backend) Weight(data []float32, shape ...int) *kernels.Tensor {
	t := b.Alloc(shape...)
	b.Upload(t, data)
	return t
}

// WeightF16 copies half values to a new device tensor: as they are when
// the backend stores fp16, widened exactly when it stores fp32. bits may
// be reused once it returns.
func (b *Backend) WeightF16(bits []uint16, shape ...int) *kernels.Tensor {
	if b.prec != kernels.F16 {
		return kernels.WeightFromHalf(b, bits, shape...)
	}
	t := b.Alloc(shape...)
	check(len(bits) == t.Len(), "WeightF16", "%d halves for %v", len(bits), t)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.record("WeightF16", b.d.CopyHtoD(b.ptr("WeightF16", "dst", t), half.Bytes(bits)))
	return t
}

// floatBytes views f's memory as bytes.
func floatBytes(f []float32) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(f))), 4*len(f))
}

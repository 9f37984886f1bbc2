// Package emu runs the CUDA backend's kernel sources (kernels/cuda/src) on
// the CPU, for tests: [Device] is a [cuda.Driver] over host memory, so the
// backend's host code and every kernel run under plain `go test` on
// machines without a GPU.
//
// The .cu files compile with the host C compiler against cuda_emu.h, a
// small emulation of the CUDA execution model: each CUDA thread is a
// cooperative fiber; __syncthreads is a block barrier; warp shuffles and
// votes are rendezvous of the warp's lanes; blocks run one at a time on
// the calling OS thread, so `__shared__` statics are per-block shared
// memory. Launches run synchronously, but their failures (a trap, a
// barrier some threads never reach, a write into the guard bytes around
// an allocation) surface at the next copy or Sync, as on a GPU.
//
// Only tests and test helpers import this package; the shipped binary
// does not link it.
package emu

/*
#cgo CFLAGS: -std=gnu11 -O2 -Wall
#cgo LDFLAGS: -lm
#include <stdlib.h>
#include "emu.h"

// emu_table gives Go the table, whose length C does not declare.
static const emu_kernel *emu_table(void) { return emu_kernels; }
*/
import "C"

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"sort"
	"unsafe"

	"github.com/avatargen/musetalk/kernels/cuda"
)

//go:generate go run gen.go

const (
	// guardBytes of guardByte surround every allocation; a kernel that
	// writes into them is reported after its launch.
	guardBytes = 256
	guardByte  = 0xa5
	// freshByte fills new allocations: 0xffffffff is a NaN, so reading
	// memory nobody wrote shows.
	freshByte = 0xff
)

// ErrClosed is returned by every method of a closed Device.
var ErrClosed = errors.New("emu: device closed")

// Device is a [cuda.Driver] that runs kernels on the host CPU. Like the
// interface says, it is not safe for concurrent use; separate Devices may
// run on separate goroutines.
type Device struct {
	rt      *C.emu_rt
	kernels map[string]kernel
	allocs  []*alloc // sorted by address
	err     error    // the first error a kernel raised; sticky
	closed  bool
	guard   []byte // guardBytes of guardByte, to compare with
	arch    int    // the compute capability Info reports
}

var _ cuda.Driver = (*Device)(nil)

// kernel is an entry of the generated kernel table.
type kernel struct {
	index C.int
	sig   string // parameter kinds: p pointer, i int, u unsigned, f float
}

// alloc is one allocation: guard bytes, the caller's n bytes rounded up to
// the guard size, guard bytes.
type alloc struct {
	base  unsafe.Pointer // C memory, freed by Free
	p     cuda.DevPtr    // the caller's first byte
	n     int
	total int
}

// DefaultArch is the compute capability New's device reports: 86, an
// Ampere card like the fleet's, so the backend takes its tensor-core paths
// (whose warp-level instructions the emulator implements).
const DefaultArch = 86

// New returns a device with an empty memory that reports compute
// capability DefaultArch.
func New() *Device { return NewArch(DefaultArch) }

// NewArch returns a device that reports compute capability arch (×10, e.g.
// 75), to test the backend's paths for older cards. The emulator runs
// every kernel whatever arch says.
func NewArch(arch int) *Device {
	d := &Device{
		arch:    arch,
		rt:      C.emu_rt_new(),
		kernels: make(map[string]kernel, int(C.emu_nkernels)),
		guard:   bytes.Repeat([]byte{guardByte}, guardBytes),
	}
	table := unsafe.Slice(C.emu_table(), int(C.emu_nkernels))
	for i, k := range table {
		d.kernels[C.GoString(k.name)] = kernel{index: C.int(i), sig: C.GoString(k.sig)}
	}
	return d
}

// Kernels returns the names of the kernels the device can launch.
func (d *Device) Kernels() []string {
	names := make([]string, 0, len(d.kernels))
	for n := range d.kernels {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Info describes the emulated device. Its few SMs make the backend choose
// small grids, which keeps emulation fast.
func (d *Device) Info() cuda.DeviceInfo {
	return cuda.DeviceInfo{Name: "emu", SMs: 4, MaxThreadsPerBlock: 1024, SharedPerBlock: 48 << 10, WarpSize: 32, Arch: d.arch}
}

// Alloc returns bytes of host memory standing in for device memory,
// filled with 0xff bytes (NaNs) and surrounded by guard bytes.
func (d *Device) Alloc(n int) (cuda.DevPtr, error) {
	if d.closed {
		return 0, ErrClosed
	}
	if n <= 0 {
		return 0, fmt.Errorf("emu: Alloc(%d): size must be positive", n)
	}
	total := 2*guardBytes + (n+guardBytes-1)/guardBytes*guardBytes
	base := C.aligned_alloc(guardBytes, C.size_t(total))
	if base == nil {
		return 0, fmt.Errorf("emu: Alloc(%d): out of host memory", n)
	}
	mem := unsafe.Slice((*byte)(base), total)
	fill(mem[:guardBytes], guardByte)
	fill(mem[guardBytes:guardBytes+n], freshByte)
	fill(mem[guardBytes+n:], guardByte)
	a := &alloc{base: base, p: cuda.DevPtr(uintptr(base) + guardBytes), n: n, total: total}
	i := sort.Search(len(d.allocs), func(i int) bool { return d.allocs[i].p > a.p })
	d.allocs = append(d.allocs, nil)
	copy(d.allocs[i+1:], d.allocs[i:])
	d.allocs[i] = a
	return a.p, nil
}

// Free releases an allocation after checking its guard bytes.
func (d *Device) Free(p cuda.DevPtr) error {
	if d.closed {
		return ErrClosed
	}
	i := sort.Search(len(d.allocs), func(i int) bool { return d.allocs[i].p >= p })
	if i == len(d.allocs) || d.allocs[i].p != p {
		return fmt.Errorf("emu: Free(%#x): not an allocation", uint64(p))
	}
	a := d.allocs[i]
	err := d.checkGuards(a)
	if err != nil && d.err == nil {
		d.err = err
	}
	d.allocs = append(d.allocs[:i], d.allocs[i+1:]...)
	C.free(a.base)
	return err
}

// CopyHtoD copies src into device memory at dst, which with len(src)
// bytes must lie inside one allocation.
func (d *Device) CopyHtoD(dst cuda.DevPtr, src []byte) error {
	mem, err := d.span("CopyHtoD", dst, len(src))
	if err != nil {
		return err
	}
	copy(mem, src)
	return nil
}

// CopyDtoH copies len(dst) bytes of device memory at src into dst.
func (d *Device) CopyDtoH(dst []byte, src cuda.DevPtr) error {
	mem, err := d.span("CopyDtoH", src, len(dst))
	if err != nil {
		return err
	}
	copy(dst, mem)
	return nil
}

// span returns the n bytes of device memory at p, or the sticky error, or
// an error if they are not inside one allocation.
func (d *Device) span(op string, p cuda.DevPtr, n int) ([]byte, error) {
	if d.closed {
		return nil, ErrClosed
	}
	if d.err != nil {
		return nil, d.err
	}
	if n == 0 {
		return nil, nil
	}
	a := d.find(p, n)
	if a == nil {
		return nil, fmt.Errorf("emu: %s of %d bytes at %#x: not inside one allocation", op, n, uint64(p))
	}
	return unsafe.Slice((*byte)(unsafe.Add(a.base, guardBytes+int(p-a.p))), n), nil
}

// find returns the allocation that holds [p, p+n), or nil.
func (d *Device) find(p cuda.DevPtr, n int) *alloc {
	i := sort.Search(len(d.allocs), func(i int) bool { return d.allocs[i].p > p }) - 1
	if i < 0 {
		return nil
	}
	a := d.allocs[i]
	if p+cuda.DevPtr(n) > a.p+cuda.DevPtr(a.n) {
		return nil
	}
	return a
}

// Launch runs kernel to completion before it returns. It reports an
// unknown kernel, a bad configuration, or arguments that do not match the
// kernel's parameters (a pointer argument must be null or point into an
// allocation); what goes wrong while the kernel runs is reported by the
// next copy or Sync.
func (d *Device) Launch(name string, grid, block cuda.Dim3, shared int, args ...any) error {
	if d.closed {
		return ErrClosed
	}
	if d.err != nil {
		return d.err
	}
	k, ok := d.kernels[name]
	if !ok {
		return fmt.Errorf("emu: launch %s: no such kernel", name)
	}
	if err := d.checkConfig(grid, block, shared); err != nil {
		return fmt.Errorf("emu: launch %s: %w", name, err)
	}
	raw, err := d.marshal(k.sig, args)
	if err != nil {
		return fmt.Errorf("emu: launch %s: %w", name, err)
	}
	var msg [512]C.char
	rc := C.emu_launch(d.rt, k.index, C.uint(grid.X), C.uint(grid.Y), C.uint(grid.Z),
		C.uint(block.X), C.uint(block.Y), C.uint(block.Z), C.size_t(shared), &raw[0], &msg[0], C.size_t(len(msg)))
	if rc != 0 {
		d.err = fmt.Errorf("emu: kernel %s, grid %v, block %v: %s", name, grid, block, C.GoString(&msg[0]))
		return nil
	}
	for _, a := range d.allocs {
		if err := d.checkGuards(a); err != nil {
			d.err = fmt.Errorf("emu: kernel %s, grid %v, block %v: %w", name, grid, block, err)
			break
		}
	}
	return nil
}

// checkConfig applies CUDA's limits on grid, block and shared memory.
func (d *Device) checkConfig(grid, block cuda.Dim3, shared int) error {
	info := d.Info()
	switch {
	case grid.X < 1 || grid.Y < 1 || grid.Z < 1 || block.X < 1 || block.Y < 1 || block.Z < 1:
		return fmt.Errorf("grid %v, block %v: sizes must be positive", grid, block)
	case grid.X > math.MaxInt32 || grid.Y > 65535 || grid.Z > 65535:
		return fmt.Errorf("grid %v exceeds (2^31-1, 65535, 65535)", grid)
	case block.X > 1024 || block.Y > 1024 || block.Z > 64 || block.Len() > info.MaxThreadsPerBlock:
		return fmt.Errorf("block %v exceeds (1024, 1024, 64) or %d threads", block, info.MaxThreadsPerBlock)
	case shared < 0 || shared > info.SharedPerBlock:
		return fmt.Errorf("%d bytes of dynamic shared memory; the limit is %d", shared, info.SharedPerBlock)
	}
	return nil
}

// marshal packs args into 64-bit slots after checking them against the
// kernel's parameter kinds.
func (d *Device) marshal(sig string, args []any) ([]C.uint64_t, error) {
	if len(args) != len(sig) {
		return nil, fmt.Errorf("%d arguments for %d parameters (%s)", len(args), len(sig), sig)
	}
	raw := make([]C.uint64_t, max(len(args), 1))
	for i, a := range args {
		var kind byte
		switch v := a.(type) {
		case cuda.DevPtr:
			kind = 'p'
			if v != 0 && d.find(v, 1) == nil {
				return nil, fmt.Errorf("argument %d, %#x, is not device memory", i, uint64(v))
			}
			raw[i] = C.uint64_t(v)
		case int32:
			kind = 'i'
			raw[i] = C.uint64_t(uint32(v))
		case uint32:
			kind = 'u'
			raw[i] = C.uint64_t(v)
		case float32:
			kind = 'f'
			raw[i] = C.uint64_t(math.Float32bits(v))
		default:
			return nil, fmt.Errorf("argument %d has type %T; want cuda.DevPtr, int32, uint32 or float32", i, a)
		}
		if kind != sig[i] {
			return nil, fmt.Errorf("argument %d is a %T but parameter %d is of kind %q (signature %s)", i, a, i, sig[i], sig)
		}
	}
	return raw, nil
}

// checkGuards reports a write into a's guard bytes.
func (d *Device) checkGuards(a *alloc) error {
	mem := unsafe.Slice((*byte)(a.base), a.total)
	if !bytes.Equal(mem[:guardBytes], d.guard) {
		return fmt.Errorf("a write before allocation %#x (%d bytes)", uint64(a.p), a.n)
	}
	for i, b := range mem[guardBytes+a.n:] {
		if b != guardByte {
			return fmt.Errorf("a write past allocation %#x (%d bytes), at byte %d", uint64(a.p), a.n, a.n+i)
		}
	}
	return nil
}

// Sync reports the first error a kernel raised.
func (d *Device) Sync() error {
	if d.closed {
		return ErrClosed
	}
	return d.err
}

// Close frees all memory. Later calls of any method return ErrClosed.
func (d *Device) Close() error {
	if d.closed {
		return ErrClosed
	}
	d.closed = true
	for _, a := range d.allocs {
		C.free(a.base)
	}
	d.allocs = nil
	C.emu_rt_free(d.rt)
	d.rt = nil
	return nil
}

func fill(b []byte, v byte) {
	for i := range b {
		b[i] = v
	}
}

package cuda

import "fmt"

// DevPtr is a device address; 0 is the null pointer. Offsets within an
// allocation are plain additions.
type DevPtr uint64

// Dim3 is a grid or block size, as CUDA's dim3. Zero fields are invalid.
type Dim3 struct{ X, Y, Z int }

// D1 returns the one-dimensional size x.
func D1(x int) Dim3 { return Dim3{x, 1, 1} }

// D3 returns the size (x, y, z).
func D3(x, y, z int) Dim3 { return Dim3{x, y, z} }

// Len returns X·Y·Z.
func (d Dim3) Len() int { return d.X * d.Y * d.Z }

func (d Dim3) String() string { return fmt.Sprintf("(%d,%d,%d)", d.X, d.Y, d.Z) }

// DeviceInfo describes the device a Driver runs on.
type DeviceInfo struct {
	Name               string // e.g. "NVIDIA H100 80GB HBM3" or "emu"
	SMs                int    // streaming multiprocessors
	MaxThreadsPerBlock int
	SharedPerBlock     int // bytes of shared memory a block may use
	WarpSize           int
	// Arch is the compute capability ×10 (86 for an RTX 3090). From 80 on
	// the backend runs GEMMs on tensor cores (mma.sync) in fp16 storage.
	Arch int
}

// Driver is the seam between the backend's host code and a device: memory,
// copies, kernel launches by name, and synchronisation on one stream. It is
// implemented by the CUDA driver API (gorgonia.org/cu, build tag cuda) and
// by the CPU emulator of the same kernel sources (package emu, for tests).
//
// Work is issued in order on one stream. Launch may return before the
// kernel has run: it reports only what is wrong at launch (an unknown
// kernel, arguments that do not match its parameters, a bad configuration),
// and errors raised while kernels run surface at the next CopyDtoH or Sync.
// Such errors are sticky, as on a GPU: once one is reported, every later
// Launch, copy and Sync reports it too.
//
// A Driver is not safe for concurrent use; the Backend serialises its
// calls.
type Driver interface {
	// Info describes the device.
	Info() DeviceInfo
	// Alloc returns bytes (> 0) of device memory, aligned to 256 bytes.
	// Its contents are unspecified.
	Alloc(bytes int) (DevPtr, error)
	// Free releases memory from Alloc after the work issued before it.
	Free(p DevPtr) error
	// CopyHtoD copies src to dst after the work issued before it; it
	// returns once src has been read, so the caller may reuse it.
	CopyHtoD(dst DevPtr, src []byte) error
	// CopyDtoH waits for the work issued before it and copies
	// len(dst) bytes from src into dst.
	CopyDtoH(dst []byte, src DevPtr) error
	// Launch issues kernel on a grid of blocks with sharedBytes of dynamic
	// shared memory. args are the kernel's parameters in order, each a
	// DevPtr, int32, uint32 or float32 matching the parameter's type.
	Launch(kernel string, grid, block Dim3, sharedBytes int, args ...any) error
	// Sync waits for all issued work and reports the first error it
	// raised.
	Sync() error
	// Close releases the device and all its memory.
	Close() error
}

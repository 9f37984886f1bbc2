//go:build cuda

// Package cudrv implements cuda.Driver on the CUDA driver API through
// gorgonia.org/cu, loading the kernels' embedded PTX (package ptx), which
// the driver JIT-compiles for the card. The binary links libcuda.so.1 and
// nothing else of CUDA.
//
// Importing this package (through gorgonia.org/cu) initialises CUDA when
// the process starts, and gorgonia.org/cu exits the process when that
// fails: only a binary built for a GPU machine may link it (build tag
// cuda), and a GPU build must find out whether a GPU is usable before it
// runs this package's code (see cmd/musetalk).
package cudrv

import (
	"fmt"
	"math"
	"runtime"
	"unsafe"

	"gorgonia.org/cu"

	"github.com/avatargen/musetalk/kernels/cuda"
	"github.com/avatargen/musetalk/kernels/cuda/ptx"
)

// Driver is one device's context, used from one locked OS thread: every
// call is handed to that thread, as the driver API ties a context to the
// thread that made it current. Work is issued on the default stream, in
// order. It is not safe for concurrent use (cuda.Driver's contract).
type Driver struct {
	work  chan func()
	info  cuda.DeviceInfo
	ctx   cu.CUContext
	mods  []cu.Module
	funcs map[string]cu.Function
	stage *pinned // copies go through it; nil if pinning failed
	err   error   // sticky: the first error of asynchronous work
}

var _ cuda.Driver = (*Driver)(nil)

// Open makes a context on device ordinal and loads every kernel module.
func Open(ordinal int) (*Driver, error) {
	d := &Driver{work: make(chan func()), funcs: map[string]cu.Function{}}
	ready := make(chan error, 1)
	go d.loop(ordinal, ready)
	if err := <-ready; err != nil {
		return nil, fmt.Errorf("cuda: opening device %d: %w", ordinal, err)
	}
	return d, nil
}

// loop owns the OS thread and the context; it runs the calls handed to it
// until Close.
func (d *Driver) loop(ordinal int, ready chan<- error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := d.open(ordinal); err != nil {
		ready <- err
		return
	}
	ready <- nil
	for fn := range d.work {
		fn()
	}
}

func (d *Driver) open(ordinal int) error {
	dev, err := cu.GetDevice(ordinal)
	if err != nil {
		return err
	}
	name, err := dev.Name()
	if err != nil {
		return err
	}
	attrs, err := dev.Attributes(cu.MultiprocessorCount, cu.MaxThreadsPerBlock, cu.MaxSharedMemoryPerBlock, cu.WarpSize,
		cu.ComputeCapabilityMajor, cu.ComputeCapabilityMinor)
	if err != nil {
		return err
	}
	d.info = cuda.DeviceInfo{Name: name, SMs: attrs[0], MaxThreadsPerBlock: attrs[1], SharedPerBlock: attrs[2], WarpSize: attrs[3],
		Arch: 10*attrs[4] + attrs[5]}
	target, ok := ptx.TargetFor(d.info.Arch)
	if !ok {
		return fmt.Errorf("%s has compute capability %d.%d; the kernels need %s or newer", name, attrs[4], attrs[5], ptx.Targets[len(ptx.Targets)-1])
	}
	if d.ctx, err = dev.MakeContext(cu.SchedAuto); err != nil {
		return err
	}
	for _, src := range ptx.Sources(target) {
		text, _ := ptx.Module(src, target)
		mod, err := cu.LoadData(text)
		if err != nil {
			return fmt.Errorf("loading the PTX of %s (%s): %w", src, target, err)
		}
		d.mods = append(d.mods, mod)
	}
	// Without pinned memory copies still work, staged by the driver.
	d.stage, _ = allocPinned(stagingBytes)
	return nil
}

// do runs fn on the context's thread and returns its error.
func (d *Driver) do(fn func() error) error {
	done := make(chan error, 1)
	d.work <- func() { done <- fn() }
	return <-done
}

// Info describes the device.
func (d *Driver) Info() cuda.DeviceInfo { return d.info }

// Alloc returns bytes of device memory (cuMemAlloc aligns to 256 bytes or
// more).
func (d *Driver) Alloc(bytes int) (cuda.DevPtr, error) {
	if bytes <= 0 {
		return 0, fmt.Errorf("cuda: allocating %d bytes", bytes)
	}
	var p cu.DevicePtr
	err := d.do(func() (err error) {
		p, err = cu.MemAlloc(int64(bytes))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("cuda: allocating %d bytes: %w", bytes, err)
	}
	return cuda.DevPtr(p), nil
}

// Free releases memory from Alloc. cuMemFree waits for the work that uses
// it to finish.
func (d *Driver) Free(p cuda.DevPtr) error {
	return d.do(func() error { return cu.MemFree(cu.DevicePtr(p)) })
}

// CopyHtoD copies src to dst, synchronously, through the pinned staging
// buffer in chunks of its size (or straight from Go memory, which the
// driver then stages itself, if pinning failed at Open).
func (d *Driver) CopyHtoD(dst cuda.DevPtr, src []byte) error {
	if len(src) == 0 {
		return nil
	}
	return d.do(func() error {
		if d.err != nil {
			return d.err
		}
		if d.stage == nil {
			return d.sticky(cu.MemcpyHtoD(cu.DevicePtr(dst), unsafe.Pointer(&src[0]), int64(len(src))))
		}
		for off := 0; off < len(src); off += len(d.stage.buf) {
			n := copy(d.stage.buf, src[off:])
			if err := cu.MemcpyHtoD(cu.DevicePtr(dst)+cu.DevicePtr(off), d.stage.p, int64(n)); err != nil {
				return d.sticky(err)
			}
		}
		return nil
	})
}

// CopyDtoH waits for the work issued before it and copies into dst,
// through the pinned staging buffer as CopyHtoD does.
func (d *Driver) CopyDtoH(dst []byte, src cuda.DevPtr) error {
	if len(dst) == 0 {
		return d.Sync()
	}
	return d.do(func() error {
		if d.err != nil {
			return d.err
		}
		if d.stage == nil {
			return d.sticky(cu.MemcpyDtoH(unsafe.Pointer(&dst[0]), cu.DevicePtr(src), int64(len(dst))))
		}
		for off := 0; off < len(dst); off += len(d.stage.buf) {
			n := min(len(d.stage.buf), len(dst)-off)
			if err := cu.MemcpyDtoH(d.stage.p, cu.DevicePtr(src)+cu.DevicePtr(off), int64(n)); err != nil {
				return d.sticky(err)
			}
			copy(dst[off:], d.stage.buf[:n])
		}
		return nil
	})
}

// Launch issues kernel. Each argument travels in an 8-byte slot, as
// cuLaunchKernel reads each parameter from the start of its slot.
func (d *Driver) Launch(kernel string, grid, block cuda.Dim3, sharedBytes int, args ...any) error {
	slots := make([]uint64, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case cuda.DevPtr:
			slots[i] = uint64(v)
		case int32:
			slots[i] = uint64(uint32(v))
		case uint32:
			slots[i] = uint64(v)
		case float32:
			slots[i] = uint64(math.Float32bits(v))
		default:
			return fmt.Errorf("cuda: launching %s: argument %d is a %T, want DevPtr, int32, uint32 or float32", kernel, i, a)
		}
	}
	params := make([]unsafe.Pointer, len(slots))
	for i := range slots {
		params[i] = unsafe.Pointer(&slots[i])
	}
	return d.do(func() error {
		if d.err != nil {
			return d.err
		}
		fn, err := d.function(kernel)
		if err != nil {
			return err
		}
		err = fn.Launch(grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, sharedBytes, cu.Stream{}, params)
		if err != nil {
			return d.sticky(fmt.Errorf("cuda: launching %s on %v×%v: %w", kernel, grid, block, err))
		}
		return nil
	})
}

// function finds kernel in the loaded modules.
func (d *Driver) function(kernel string) (cu.Function, error) {
	if fn, ok := d.funcs[kernel]; ok {
		return fn, nil
	}
	for _, m := range d.mods {
		if fn, err := m.Function(kernel); err == nil {
			d.funcs[kernel] = fn
			return fn, nil
		}
	}
	return cu.Function{}, fmt.Errorf("cuda: no kernel %q in the loaded PTX", kernel)
}

// Sync waits for all issued work.
func (d *Driver) Sync() error {
	return d.do(func() error {
		if d.err != nil {
			return d.err
		}
		return d.sticky(cu.Synchronize())
	})
}

// sticky records the first device error: after it the context is unusable,
// as after a fault on a GPU, and every later call reports it.
func (d *Driver) sticky(err error) error {
	if err != nil && d.err == nil {
		d.err = err
	}
	return err
}

// Close destroys the context, freeing its memory and modules, and ends
// the thread.
func (d *Driver) Close() error {
	err := d.do(func() error {
		d.stage.free()
		return d.ctx.Destroy()
	})
	close(d.work)
	return err
}

// DeviceCount returns how many CUDA devices the driver sees.
func DeviceCount() (int, error) { return cu.NumDevices() }

// Describe returns a line naming device ordinal: its name, compute
// capability, memory and the driver's CUDA version, for the self-check.
func Describe(ordinal int) (string, error) {
	dev, err := cu.GetDevice(ordinal)
	if err != nil {
		return "", err
	}
	name, err := dev.Name()
	if err != nil {
		return "", err
	}
	major, minor, err := dev.ComputeCapability()
	if err != nil {
		return "", err
	}
	mem, err := dev.TotalMem()
	if err != nil {
		return "", err
	}
	v := cu.Version()
	return fmt.Sprintf("%s, compute capability %d.%d, %.1f GiB, driver CUDA %d.%d", name, major, minor,
		float64(mem)/(1<<30), v/1000, v%1000/10), nil
}

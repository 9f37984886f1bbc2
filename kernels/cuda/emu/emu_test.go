package emu

import (
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"unsafe"

	"github.com/avatargen/musetalk/kernels/cuda"
)

// newDevice returns a device closed when the test ends.
func newDevice(t *testing.T) *Device {
	t.Helper()
	d := New()
	t.Cleanup(func() { d.Close() })
	return d
}

// buf allocates n elements of T on d, filled from init when it is not nil.
func buf[T any](t *testing.T, d *Device, n int, init []T) cuda.DevPtr {
	t.Helper()
	var zero T
	p, err := d.Alloc(n * int(unsafe.Sizeof(zero)))
	if err != nil {
		t.Fatal(err)
	}
	if init != nil {
		if err := d.CopyHtoD(p, bytesOf(init)); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// get downloads n elements of T from p.
func get[T any](t *testing.T, d *Device, p cuda.DevPtr, n int) []T {
	t.Helper()
	out := make([]T, n)
	if err := d.CopyDtoH(bytesOf(out), p); err != nil {
		t.Fatal(err)
	}
	return out
}

func bytesOf[T any](s []T) []byte {
	var zero T
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), len(s)*int(unsafe.Sizeof(zero)))
}

func launch(t *testing.T, d *Device, kernel string, grid, block cuda.Dim3, shared int, args ...any) {
	t.Helper()
	if err := d.Launch(kernel, grid, block, shared, args...); err != nil {
		t.Fatal(err)
	}
}

func TestBuiltinVariables(t *testing.T) {
	d := newDevice(t)
	grid, block := cuda.D3(3, 2, 2), cuda.D3(5, 3, 2)
	n := grid.Len() * block.Len()
	out := buf[uint32](t, d, 12*n, nil)
	launch(t, d, "selftest_ids", grid, block, 0, out)
	got := get[uint32](t, d, out, 12*n)
	i := 0
	for bz := range grid.Z {
		for by := range grid.Y {
			for bx := range grid.X {
				for tz := range block.Z {
					for ty := range block.Y {
						for tx := range block.X {
							want := []int{tx, ty, tz, bx, by, bz, block.X, block.Y, block.Z, grid.X, grid.Y, grid.Z}
							for j, w := range want {
								if int(got[12*i+j]) != w {
									t.Fatalf("thread %d value %d: got %d, want %d (all: %v)", i, j, got[12*i+j], w, got[12*i:12*i+12])
								}
							}
							i++
						}
					}
				}
			}
		}
	}
}

func TestBarrierOrdersSharedMemory(t *testing.T) {
	for _, threads := range []int{1, 33, 100, 1024} {
		d := newDevice(t)
		blocks := 3
		bad := buf[int32](t, d, blocks*threads, nil)
		launch(t, d, "selftest_barrier", cuda.D1(blocks), cuda.D1(threads), 4*threads, bad, int32(5))
		for i, v := range get[int32](t, d, bad, blocks*threads) {
			if v != 0 {
				t.Fatalf("%d threads: thread %d read %d stale values", threads, i, v)
			}
		}
	}
}

func TestSharedMemoryIsPerBlock(t *testing.T) {
	d := newDevice(t)
	blocks, threads := 7, 64
	out := buf[int32](t, d, blocks*threads, nil)
	launch(t, d, "selftest_shared_blocks", cuda.D1(blocks), cuda.D1(threads), 0, out)
	for i, v := range get[int32](t, d, out, blocks*threads) {
		if want := int32(1000 + i/threads); v != want {
			t.Fatalf("thread %d of block %d sees %d, want %d", i%threads, i/threads, v, want)
		}
	}
}

func TestShuffles(t *testing.T) {
	d := newDevice(t)
	blocks, threads := 2, 48 // the second warp of each block has 16 lanes
	out := buf[float32](t, d, 8*blocks*threads, nil)
	launch(t, d, "selftest_shuffles", cuda.D1(blocks), cuda.D1(threads), 0, out)
	got := get[float32](t, d, out, 8*blocks*threads)
	for g := range blocks * threads {
		tid := g % threads
		lane, warp := tid%32, tid/32
		lanes := min(32, threads-32*warp)
		exists := func(l int) bool { return l >= 0 && l < lanes }
		v := func(l int) float32 { return float32(l*10 + warp) }
		from := func(src int) float32 {
			if exists(src) {
				return v(src)
			}
			return v(lane)
		}
		// The butterfly sum, where a missing partner gives one's own value.
		vals := make([]float32, lanes)
		for l := range vals {
			vals[l] = float32(l)
		}
		for o := 16; o > 0; o >>= 1 {
			next := make([]float32, lanes)
			for l := range vals {
				p := vals[l]
				if exists(l ^ o) {
					p = vals[l^o]
				}
				next[l] = vals[l] + p
			}
			vals = next
		}
		var ballot uint32
		for l := range lanes {
			if l%3 == 0 {
				ballot |= 1 << l
			}
		}
		all := float32(0)
		if lanes <= 20 {
			all = 1
		}
		want := []float32{from(lane ^ 1), from(lane + 3), from(lane - 5), from(7), vals[lane], float32(ballot), 1, all}
		for j, w := range want {
			if got[8*g+j] != w {
				t.Errorf("thread %d (warp %d lane %d) value %d: got %g, want %g", g, warp, lane, j, got[8*g+j], w)
			}
		}
	}
}

func TestBlockReductions(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, threads := range []int{32, 96, 256, 1024} {
		d := newDevice(t)
		blocks := 3
		in := make([]float32, blocks*threads)
		for i := range in {
			in[i] = float32(rng.NormFloat64())
		}
		sum, mx := buf[float32](t, d, blocks, nil), buf[float32](t, d, blocks, nil)
		launch(t, d, "selftest_block_reduce", cuda.D1(blocks), cuda.D1(threads), 0, sum, mx, buf(t, d, len(in), in))
		gs, gm := get[float32](t, d, sum, blocks), get[float32](t, d, mx, blocks)
		for b := range blocks {
			var s, abs float64
			m := float32(math.Inf(-1))
			for _, v := range in[b*threads : (b+1)*threads] {
				s += float64(v)
				abs += math.Abs(float64(v))
				m = max(m, v)
			}
			if math.Abs(float64(gs[b])-s) > 1e-6*abs || gm[b] != m {
				t.Errorf("%d threads, block %d: sum %g max %g, want %g and %g", threads, b, gs[b], gm[b], s, m)
			}
		}
	}
}

// halfValue decodes binary16 bits by the definition.
func halfValue(h uint16) float64 {
	sign := 1.0
	if h&0x8000 != 0 {
		sign = -1
	}
	e, m := int(h>>10&0x1f), float64(h&0x3ff)
	switch e {
	case 0:
		return sign * m * math.Pow(2, -24)
	case 31:
		if m != 0 {
			return math.NaN()
		}
		return sign * math.Inf(1)
	}
	return sign * (1 + m/1024) * math.Pow(2, float64(e-15))
}

// nearestHalf rounds f to binary16 bits by searching the finite halves
// (increasing with their bits) for the nearest, ties to the even pattern.
func nearestHalf(f float32, finite []float64) uint16 {
	var sign uint16
	x := float64(f)
	if math.Signbit(x) {
		sign, x = 0x8000, -x
	}
	if x >= 65520 { // halfway between the largest half and 2^16
		return sign | 0x7c00
	}
	i := sort.SearchFloat64s(finite, x) // finite[i] >= x
	if i == len(finite) {               // above 65504, below 65520
		return sign | uint16(i-1)
	}
	if finite[i] == x || i == 0 {
		return sign | uint16(i)
	}
	lo, hi := x-finite[i-1], finite[i]-x
	if lo < hi || lo == hi && (i-1)%2 == 0 {
		return sign | uint16(i-1)
	}
	return sign | uint16(i)
}

func TestHalfConversions(t *testing.T) {
	d := newDevice(t)
	finite := make([]float64, 0x7c00)
	for i := range finite {
		finite[i] = halfValue(uint16(i))
	}
	in := []float32{0, float32(math.Copysign(0, -1)), 1, -1, 65504, 65519.996, 65520, 65536, 1e30,
		float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()),
		0x1p-14, 0x1p-24, 0x1p-25, 0x1.000002p-25, 0x1.8p-24, 0x1.4p-24, 0x1.cp-24, 0x1p-26, 0x1p-149,
		0x1.ffcp-15, 0x1.ffep-15, 0x1.ffdp-15, 1 + 0x1p-11, 1 + 0x3p-11, 1 + 0x1.0002p-11, -2049, 2049, 4097}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 1 << 17 {
		in = append(in, math.Float32frombits(rng.Uint32()))
		bits := rng.Uint32()&0x807fffff | (100+rng.Uint32N(46))<<23 // around the half range
		in = append(in, math.Float32frombits(bits))
	}
	hin := make([]uint16, len(in))
	for i := range hin {
		hin[i] = uint16(i)
	}
	n := len(in)
	hp, fp := buf[uint16](t, d, n, nil), buf[float32](t, d, n, nil)
	launch(t, d, "selftest_half", cuda.D1(16), cuda.D1(256), 0, hp, fp, buf(t, d, n, in), buf(t, d, n, hin), int32(n))
	h, f := get[uint16](t, d, hp, n), get[float32](t, d, fp, n)
	for i, x := range in {
		if x != x {
			if h[i]&0x7c00 != 0x7c00 || h[i]&0x3ff == 0 {
				t.Errorf("__float2half(NaN) = %#04x, not a NaN", h[i])
			}
			continue
		}
		if want := nearestHalf(x, finite); h[i] != want {
			t.Errorf("__float2half(%g = %#08x) = %#04x, want %#04x", x, math.Float32bits(x), h[i], want)
		}
	}
	for i := range 1 << 16 {
		want := halfValue(uint16(i))
		got := float64(f[i])
		if math.IsNaN(want) {
			if !math.IsNaN(got) {
				t.Errorf("__half2float(%#04x) = %g, want NaN", i, got)
			}
			continue
		}
		if got != want || math.Signbit(got) != math.Signbit(want) {
			t.Errorf("__half2float(%#04x) = %g, want %g", i, got, want)
		}
	}
}

func TestAtomics(t *testing.T) {
	d := newDevice(t)
	count, sum := buf(t, d, 1, []int32{0}), buf(t, d, 1, []float32{0})
	launch(t, d, "selftest_atomic", cuda.D1(5), cuda.D3(8, 4, 2), 0, count, sum)
	if c, s := get[int32](t, d, count, 1)[0], get[float32](t, d, sum, 1)[0]; c != 320 || s != 160 {
		t.Errorf("count %d sum %g, want 320 and 160", c, s)
	}
}

// TestKernelFaults checks that a kernel's failure is reported by the next
// Sync and copy, sticks, and names the kernel and what went wrong.
func TestKernelFaults(t *testing.T) {
	for _, c := range []struct {
		kernel string
		grid   cuda.Dim3
		want   []string
	}{
		{"selftest_unmatched_barrier", cuda.D1(1), []string{"selftest_unmatched_barrier", "__syncthreads reached by 32 of 64 threads", "32 exited"}},
		{"selftest_warp_exit", cuda.D1(1), []string{"warp 0", "lanes 0x0000ffff wait in a warp-synchronous call"}},
		{"selftest_write_past", cuda.D1(2), []string{"selftest_write_past", "a write past allocation", "(40 bytes), at byte 40"}},
		{"selftest_trap", cuda.D1(3), []string{"block (1,0,0): thread (3,0,0): __trap()"}},
	} {
		t.Run(c.kernel, func(t *testing.T) {
			d := newDevice(t)
			out := buf[float32](t, d, 10, nil)
			if err := d.Launch(c.kernel, c.grid, cuda.D1(64), 0, launchArgs(c.kernel, out)...); err != nil {
				t.Fatalf("Launch reported %v; kernel failures belong to Sync", err)
			}
			err := d.Sync()
			if err == nil {
				t.Fatal("Sync reported no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if err2 := d.CopyDtoH(make([]byte, 4), out); err2 != err {
				t.Errorf("CopyDtoH after the fault: %v, want the sticky %v", err2, err)
			}
			if err2 := d.Launch("selftest_atomic", cuda.D1(1), cuda.D1(1), 0, out, out); err2 != err {
				t.Errorf("Launch after the fault: %v, want the sticky %v", err2, err)
			}
		})
	}
}

func launchArgs(kernel string, p cuda.DevPtr) []any {
	if kernel == "selftest_write_past" {
		return []any{p, int32(10)}
	}
	return []any{p}
}

// TestLaunchErrors checks what Launch itself rejects; those errors are not
// sticky.
func TestLaunchErrors(t *testing.T) {
	d := newDevice(t)
	p := buf[float32](t, d, 4, nil)
	for _, c := range []struct {
		name        string
		kernel      string
		grid, block cuda.Dim3
		shared      int
		args        []any
		want        string
	}{
		{"unknown", "nope", cuda.D1(1), cuda.D1(1), 0, nil, "no such kernel"},
		{"arity", "copy_f32", cuda.D1(1), cuda.D1(1), 0, []any{p, p}, "2 arguments for 3 parameters"},
		{"kind", "copy_f32", cuda.D1(1), cuda.D1(1), 0, []any{p, p, float32(1)}, "argument 2 is a float32"},
		{"type", "copy_f32", cuda.D1(1), cuda.D1(1), 0, []any{p, p, 1}, "argument 2 has type int"},
		{"wild pointer", "copy_f32", cuda.D1(1), cuda.D1(1), 0, []any{p, p + 1<<20, int32(1)}, "is not device memory"},
		{"block", "copy_f32", cuda.D1(1), cuda.D1(1025), 0, []any{p, p, int32(1)}, "block (1025,1,1) exceeds"},
		{"zero grid", "copy_f32", cuda.D3(1, 0, 1), cuda.D1(1), 0, []any{p, p, int32(1)}, "must be positive"},
		{"shared", "copy_f32", cuda.D1(1), cuda.D1(1), 64 << 10, []any{p, p, int32(1)}, "dynamic shared memory"},
	} {
		err := d.Launch(c.kernel, c.grid, c.block, c.shared, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Launch = %v, want an error containing %q", c.name, err, c.want)
		}
	}
	if err := d.Sync(); err != nil {
		t.Errorf("Sync after rejected launches: %v", err)
	}
}

func TestMemoryErrors(t *testing.T) {
	d := newDevice(t)
	p := buf[byte](t, d, 100, nil)
	if err := d.CopyHtoD(p+50, make([]byte, 51)); err == nil || !strings.Contains(err.Error(), "not inside one allocation") {
		t.Errorf("CopyHtoD past the end: %v", err)
	}
	if err := d.CopyDtoH(make([]byte, 1), p-1); err == nil {
		t.Error("CopyDtoH before the start: no error")
	}
	if err := d.Free(p + 4); err == nil {
		t.Error("Free of an interior pointer: no error")
	}
	if _, err := d.Alloc(0); err == nil {
		t.Error("Alloc(0): no error")
	}
	fresh := get[float32](t, d, p, 25)
	if !math.IsNaN(float64(fresh[0])) {
		t.Errorf("fresh memory reads %g, want NaN", fresh[0])
	}
	if err := d.Free(p); err != nil {
		t.Errorf("Free: %v", err)
	}
	if err := d.Free(p); err == nil {
		t.Error("double Free: no error")
	}
	d.Close()
	if _, err := d.Alloc(4); err != ErrClosed {
		t.Errorf("Alloc after Close: %v, want ErrClosed", err)
	}
}

// BenchmarkBarrier measures one fiber switch to a thread and back: each
// thread of a 256-thread block parks at two barriers per round.
func BenchmarkBarrier(b *testing.B) {
	d := New()
	defer d.Close()
	p, err := d.Alloc(4 * 256)
	if err != nil {
		b.Fatal(err)
	}
	const rounds = 100
	b.ResetTimer()
	for range b.N {
		if err := d.Launch("selftest_barrier", cuda.D1(1), cuda.D1(256), 4*256, p, int32(rounds)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*256*2*rounds), "ns/park")
}

// TestConcurrentDevices runs devices on several goroutines at once: each
// launch runs on its own OS thread, whose thread-local __shared__
// variables no other launch sees.
func TestConcurrentDevices(t *testing.T) {
	errs := make(chan string, 4)
	for g := range 4 {
		go func() {
			d := New()
			defer d.Close()
			blocks, threads := 5+g, 64
			p, _ := d.Alloc(4 * blocks * threads)
			for range 20 {
				if err := d.Launch("selftest_shared_blocks", cuda.D1(blocks), cuda.D1(threads), 0, p); err != nil {
					errs <- err.Error()
					return
				}
				got := make([]int32, blocks*threads)
				if err := d.CopyDtoH(bytesOf(got), p); err != nil {
					errs <- err.Error()
					return
				}
				for i, v := range got {
					if v != int32(1000+i/threads) {
						errs <- "a launch saw another's shared memory"
						return
					}
				}
			}
			errs <- ""
		}()
	}
	for range 4 {
		if e := <-errs; e != "" {
			t.Error(e)
		}
	}
}

package emu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"unsafe"

	"github.com/avatargen/musetalk/kernels/cuda"
)

// Tests of the tensor-core building blocks (src/mma.cuh, through
// src/tc_selftest.cu) and of the fp16 tensor-core GEMM (src/gemm_tc.cu).
// Each check takes a cuda.Driver, so the same checks run on an sm_80+ GPU.

// dbuf allocates n elements of T on d, filled from init when it is not
// nil, and frees them when the test ends.
func dbuf[T any](t *testing.T, d cuda.Driver, n int, init []T) cuda.DevPtr {
	t.Helper()
	var zero T
	p, err := d.Alloc(max(1, n*int(unsafe.Sizeof(zero))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Free(p) })
	if init != nil {
		if err := d.CopyHtoD(p, bytesOf(init)); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// dget downloads n elements of T from p.
func dget[T any](t *testing.T, d cuda.Driver, p cuda.DevPtr, n int) []T {
	t.Helper()
	out := make([]T, n)
	if err := d.CopyDtoH(bytesOf(out), p); err != nil {
		t.Fatal(err)
	}
	return out
}

func dlaunch(t *testing.T, d cuda.Driver, kernel string, grid, block cuda.Dim3, shared int, args ...any) {
	t.Helper()
	if err := d.Launch(kernel, grid, block, shared, args...); err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
}

// toHalf rounds x to the nearest binary16, ties to even (|x| < 65504 in
// these tests).
func toHalf(x float64) uint16 {
	var sign uint16
	if math.Signbit(x) {
		sign = 0x8000
	}
	a := math.Abs(x)
	if a < 0x1p-14 { // subnormal: units of 2^-24
		return sign | uint16(math.RoundToEven(a*0x1p24))
	}
	frac, exp := math.Frexp(a)                          // a = frac·2^exp, frac in [0.5, 1)
	m := math.RoundToEven(frac * 2048)                  // 1024..2048
	return sign | (uint16(exp+14)<<10 + uint16(m-1024)) // m = 2048 carries into the exponent
}

// randHalves returns n halves of scale·N(0,1) rounded, with their values.
func randHalves(rng *rand.Rand, n int, scale float64) ([]uint16, []float64) {
	h, v := make([]uint16, n), make([]float64, n)
	for i := range h {
		h[i] = toHalf(scale * rng.NormFloat64())
		v[i] = halfValue(h[i])
	}
	return h, v
}

func TestHalfRounding(t *testing.T) {
	finite := make([]float64, 0x7c00)
	for i := range finite {
		finite[i] = halfValue(uint16(i))
	}
	rng := rand.New(rand.NewPCG(9, 9))
	for range 20000 {
		x := float32(rng.NormFloat64() * math.Pow(2, float64(rng.IntN(30)-20)))
		if got, want := toHalf(float64(x)), nearestHalf(x, finite); got != want {
			t.Fatalf("toHalf(%g) = %#04x, want %#04x", x, got, want)
		}
	}
}

func TestMMA(t *testing.T) { checkMMA(t, newDevice(t)) }

// checkMMA runs selftest_mma on 2 blocks of 2 warps (4 problems), first
// on small integers, where every result is exact, then on random halves
// against a float64 triple loop. The products of halves are exact in fp32
// and D sums 17 terms (C and 16 products) in fp32, so in any order of
// summation |D − exact| ≤ 16·2⁻²⁴·(|c| + Σ|a·b|) with rounding, or twice
// that with truncation; the bound checked is 2⁻¹⁹·(|c| + Σ|a·b|).
func checkMMA(t *testing.T, d cuda.Driver) {
	const problems = 4
	rng := rand.New(rand.NewPCG(5, 6))
	for _, integers := range []bool{true, false} {
		var A, B []uint16
		var av, bv []float64
		if integers {
			A, B = make([]uint16, 256*problems), make([]uint16, 128*problems)
			av, bv = make([]float64, len(A)), make([]float64, len(B))
			for i := range A {
				av[i] = float64(rng.IntN(17) - 8)
				A[i] = toHalf(av[i])
			}
			for i := range B {
				bv[i] = float64(rng.IntN(17) - 8)
				B[i] = toHalf(bv[i])
			}
		} else {
			A, av = randHalves(rng, 256*problems, 1)
			B, bv = randHalves(rng, 128*problems, 1)
		}
		C := make([]float32, 128*problems)
		for i := range C {
			if integers {
				C[i] = float32(rng.IntN(201) - 100)
			} else {
				C[i] = float32(rng.NormFloat64())
			}
		}
		Dp := dbuf[float32](t, d, 128*problems, nil)
		dlaunch(t, d, "selftest_mma", cuda.D1(2), cuda.D1(64), 0, Dp, dbuf(t, d, len(A), A), dbuf(t, d, len(B), B), dbuf(t, d, len(C), C))
		D := dget[float32](t, d, Dp, 128*problems)
		bad := 0
		for p := range problems {
			for m := range 16 {
				for n := range 8 {
					c := float64(C[128*p+8*m+n])
					ref, abs := c, math.Abs(c)
					for k := range 16 {
						x := av[256*p+16*m+k] * bv[128*p+8*k+n]
						ref += x
						abs += math.Abs(x)
					}
					got := float64(D[128*p+8*m+n])
					tol := 0x1p-19 * abs
					if integers {
						tol = 0
					}
					if math.Abs(got-ref) > tol || math.IsNaN(got) {
						if bad++; bad <= 10 {
							t.Errorf("integers=%v problem %d D[%d][%d] = %g, want %g (tolerance %g)", integers, p, m, n, got, ref, tol)
						}
					}
				}
			}
		}
	}
}

func TestLdmatrix(t *testing.T) { checkLdmatrix(t, newDevice(t)) }

// checkLdmatrix runs selftest_ldmatrix (2 blocks of 2 warps) and checks
// every register of every lane against the ISA's ldmatrix definition:
// rows 0..7 of matrix i come from the addresses of lanes 8i..8i+7; lane L
// receives elements (L/4, 2(L%4)) and (L/4, 2(L%4)+1) of each matrix, or
// (2(L%4), L/4) and (2(L%4)+1, L/4) with .trans.
func checkLdmatrix(t *testing.T, d cuda.Driver) {
	const rows, ld, blocks, threads = 32, 24, 2, 64
	in := make([]uint16, rows*ld)
	for i := range in {
		in[i] = uint16(0x3c00 + i) // distinct finite halves
	}
	out := dbuf[uint32](t, d, 12*blocks*threads, nil)
	dlaunch(t, d, "selftest_ldmatrix", cuda.D1(blocks), cuda.D1(threads), 0, out, dbuf(t, d, len(in), in))
	got := dget[uint32](t, d, out, 12*blocks*threads)
	for g := range blocks * threads {
		w, lane := g%threads/32, g%32
		// elem is element (r, c) of matrix i, whose row r lane 8i+r gives.
		elem := func(i, r, c int) uint32 {
			l := 8*i + r
			row, col := (5*l+3+7*w)&31, 8*((l+w)%3)
			return uint32(in[row*ld+col+c])
		}
		want := make([]uint32, 12)
		for i := range 4 {
			want[i] = elem(i, lane/4, 2*(lane%4)) | elem(i, lane/4, 2*(lane%4)+1)<<16
			want[4+i] = elem(i, 2*(lane%4), lane/4) | elem(i, 2*(lane%4)+1, lane/4)<<16
		}
		copy(want[8:10], want[0:2])
		copy(want[10:12], want[4:6])
		names := []string{"x4[0]", "x4[1]", "x4[2]", "x4[3]", "x4.trans[0]", "x4.trans[1]", "x4.trans[2]", "x4.trans[3]", "x2[0]", "x2[1]", "x2.trans[0]", "x2.trans[1]"}
		for j := range want {
			if got[12*g+j] != want[j] {
				t.Errorf("thread %d (warp %d lane %d) %s = %#08x, want %#08x", g, w, lane, names[j], got[12*g+j], want[j])
			}
		}
	}
}

func TestCpAsync(t *testing.T) { checkCpAsync(t, newDevice(t)) }

// checkCpAsync runs selftest_cp_async with both ways of waiting and checks
// the copied, zero-filled and partially copied chunks.
func checkCpAsync(t *testing.T, d cuda.Driver) {
	rng := rand.New(rand.NewPCG(7, 8))
	in := make([]byte, 512)
	for i := range in {
		in[i] = byte(1 + rng.IntN(255)) // no zeros, so a fill shows
	}
	for mode := range 2 {
		out := dbuf[byte](t, d, 512, nil)
		dlaunch(t, d, "selftest_cp_async", cuda.D1(1), cuda.D1(32), 0, out, dbuf(t, d, len(in), in), int32(mode))
		got := dget[byte](t, d, out, 512)
		for c := range 32 {
			u := (c + 1) % 32
			n := 0 // bytes of chunk u copied
			switch {
			case u <= 16:
				n = u
			case u < 24:
				n = 16
			}
			for i := range 16 {
				want := byte(0)
				if i < n {
					want = in[16*u+i]
				}
				if g := got[16*c+i]; g != want {
					t.Errorf("mode %d: byte %d of chunk %d = %#02x, want %#02x", mode, i, u, g, want)
				}
			}
		}
	}
}

// hgemmCase is one launch of hgemm_tc. B is stored [K][ldb] (kn) or
// [N][ldb] (B given transposed); ldb 0 means N or K. sb 0 with
// sharedB shares one B among the batch; aOff and bOff shift the operands
// by elements, which breaks 16-byte alignment.
type hgemmCase struct {
	M, N, K, batch int
	kn             bool
	ldb            int
	sharedB        bool
	bias           bool
	alpha          float32
	aOff, bOff     int
	gridZ          int // blocks along z; 0 means batch
}

func TestHgemmTC(t *testing.T) { checkHgemmTC(t, newDevice(t)) }

func checkHgemmTC(t *testing.T, d cuda.Driver) {
	cases := []hgemmCase{
		{M: 1, N: 1, K: 1, batch: 1, kn: true, alpha: 1},
		{M: 37, N: 3, K: 17, batch: 2, kn: true, bias: true, alpha: 1},
		{M: 37, N: 3, K: 17, batch: 2, bias: true, alpha: 1},
		{M: 130, N: 129, K: 40, batch: 2, bias: true, alpha: 0.5}, // [N,K], both cp.async
		{M: 129, N: 200, K: 40, batch: 1, kn: true, alpha: 1},     // [K,N], cp.async, N tail
		{M: 64, N: 136, K: 64, batch: 2, kn: true, sharedB: true, bias: true, alpha: -1.5},
		{M: 20, N: 50, K: 1, batch: 2, bias: true, alpha: 1},                    // K = 1
		{M: 150, N: 70, K: 72, batch: 1, alpha: 1},                              // three slices
		{M: 33, N: 260, K: 96, batch: 1, kn: true, bias: true, alpha: 1},        // N % 8 ≠ 0: B element loads
		{M: 45, N: 24, K: 100, batch: 2, alpha: 2},                              // K % 8 ≠ 0: element loads
		{M: 50, N: 37, K: 48, batch: 2, kn: true, ldb: 48, alpha: 1},            // padded rows: partial chunks
		{M: 50, N: 37, K: 44, batch: 1, ldb: 48, bias: true, alpha: 1},          // [N,K] rows of 48, K tail
		{M: 70, N: 40, K: 64, batch: 1, kn: true, aOff: 1, bOff: 3, alpha: 1},   // unaligned
		{M: 70, N: 40, K: 64, batch: 1, aOff: 8, bOff: 8, bias: true, alpha: 1}, // 16-byte offsets
		{M: 260, N: 300, K: 200, batch: 3, gridZ: 2, bias: true, alpha: 1},      // 3×3 blocks, 7 slices, z loop
	}
	rng := rand.New(rand.NewPCG(11, 12))
	for _, c := range cases {
		name := fmt.Sprintf("M%d_N%d_K%d_b%d_kn%v_ldb%d_shared%v_bias%v_off%d,%d_z%d", c.M, c.N, c.K, c.batch, c.kn, c.ldb, c.sharedB, c.bias, c.aOff, c.bOff, c.gridZ)
		t.Run(name, func(t *testing.T) { runHgemmCase(t, d, rng, c) })
	}
}

func runHgemmCase(t *testing.T, d cuda.Driver, rng *rand.Rand, c hgemmCase) {
	M, N, K := c.M, c.N, c.K
	ldb := c.ldb
	if ldb == 0 {
		ldb = N
		if !c.kn {
			ldb = K
		}
	}
	bRows := K
	sbk, sbn := ldb, 1
	if !c.kn {
		bRows, sbk, sbn = N, 1, ldb
	}
	sa, sb := M*K, bRows*ldb
	bEntries := c.batch
	if c.sharedB {
		sb, bEntries = 0, 1
	}
	A, av := randHalves(rng, c.aOff+c.batch*sa, 1)
	B, bv := randHalves(rng, c.bOff+bEntries*bRows*ldb, 1)
	// What lies outside the operands is NaN, so a kernel that multiplies
	// any of it in (0·NaN is NaN) fails.
	const nan = 0x7e00
	for i := range c.aOff {
		A[i] = nan
	}
	rowLen := K // of B's rows of ldb elements
	if c.kn {
		rowLen = N
	}
	for i := range B {
		if j := i - c.bOff; j < 0 || j%ldb >= rowLen {
			B[i] = nan
		}
	}
	var bias []uint16
	var biasv []float64
	biasP := cuda.DevPtr(0)
	if c.bias {
		bias, biasv = randHalves(rng, N, 1)
		biasP = dbuf(t, d, N, bias)
	}
	Cp := dbuf[uint16](t, d, c.batch*M*N, nil)
	Ap := dbuf(t, d, len(A), A) + cuda.DevPtr(2*c.aOff)
	Bp := dbuf(t, d, len(B), B) + cuda.DevPtr(2*c.bOff)
	gz := c.gridZ
	if gz == 0 {
		gz = min(c.batch, 65535)
	}
	grid := cuda.D3((M+127)/128, (N+127)/128, gz)
	dlaunch(t, d, "hgemm_tc", grid, cuda.D1(256), 0, Cp, Ap, Bp, biasP,
		int32(M), int32(N), int32(K), int32(c.batch), int32(sa), int32(sb), int32(sbk), int32(sbn), c.alpha)
	got := dget[uint16](t, d, Cp, c.batch*M*N)
	bad := 0
	for z := range c.batch {
		for m := range M {
			for n := range N {
				var sum, abs float64
				for k := range K {
					a := av[c.aOff+z*sa+m*K+k]
					b := bv[c.bOff+z*sb+k*sbk+n*sbn]
					sum += a * b
					abs += math.Abs(a * b)
				}
				ref := float64(c.alpha) * sum
				tol := 1e-5 * math.Abs(float64(c.alpha)) * abs
				if c.bias {
					ref += biasv[n]
					tol += 1e-5 * math.Abs(biasv[n])
				}
				tol += 0x1p-11 * math.Abs(ref)
				g := halfValue(got[z*M*N+m*N+n])
				if math.Abs(g-ref) > tol || math.IsNaN(g) {
					if bad++; bad <= 8 {
						t.Errorf("C[%d][%d][%d] = %g, want %g (tolerance %g)", z, m, n, g, ref, tol)
					}
				}
			}
		}
	}
	if bad > 8 {
		t.Errorf("%d wrong elements in all", bad)
	}
}

// TestTensorCoreFaults checks what the emulator reports where a GPU would
// fault or be undefined (emulator only: on a GPU these kill the context).
func TestTensorCoreFaults(t *testing.T) {
	for _, c := range []struct {
		name, kernel string
		block        int
		args         func(d *Device) []any
		want         string
	}{
		{"misaligned cp.async", "selftest_cp_async", 32, func(d *Device) []any {
			return []any{buf[byte](t, d, 512, nil), buf[byte](t, d, 600, nil) + 4, int32(0)}
		}, "cp.async: an address that is not 16-byte aligned"},
		{"partial warp", "selftest_mma", 48, func(d *Device) []any {
			return []any{buf[float32](t, d, 512, nil), buf[uint16](t, d, 1024, nil), buf[uint16](t, d, 512, nil), buf[float32](t, d, 512, nil)}
		}, "mma.sync/ldmatrix in a partial warp"},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := newDevice(t)
			if err := d.Launch(c.kernel, cuda.D1(1), cuda.D1(c.block), 0, c.args(d)...); err != nil {
				t.Fatalf("Launch: %v", err)
			}
			if err := d.Sync(); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Sync = %v, want an error containing %q", err, c.want)
			}
		})
	}
}

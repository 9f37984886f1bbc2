//go:build amd64 && !purego

#include "textflag.h"

// Constants, as float32 bits. The layout matches the register loads in
// LOADCONSTS and the erfc polynomial offsets used by GELU.
DATA mathC<>+0(SB)/4, $0x42b00000  // 88: exp saturates here (finite)
DATA mathC<>+4(SB)/4, $0xc2d00000  // -104: exp underflows to 0 below
DATA mathC<>+8(SB)/4, $0x3fb8aa3b  // log2(e)
DATA mathC<>+12(SB)/4, $0x3f318000 // ln2 high part
DATA mathC<>+16(SB)/4, $0xb95e8083 // ln2 low part
DATA mathC<>+20(SB)/4, $0x39506967 // Cephes expf polynomial p0..p5
DATA mathC<>+24(SB)/4, $0x3ab743ce
DATA mathC<>+28(SB)/4, $0x3c088908
DATA mathC<>+32(SB)/4, $0x3d2aa9c1
DATA mathC<>+36(SB)/4, $0x3e2aaaaa
DATA mathC<>+40(SB)/4, $0x3f000000
DATA mathC<>+44(SB)/4, $0x3f800000 // 1
DATA mathC<>+48(SB)/4, $0x40000000 // 2
DATA mathC<>+52(SB)/4, $0x3f000000 // 0.5
DATA mathC<>+56(SB)/4, $0x3f3504f3 // 1/sqrt(2)
DATA mathC<>+60(SB)/4, $0x3e2ef945 // erfc fit (Numerical Recipes) c9..c0
DATA mathC<>+64(SB)/4, $0xbf527892
DATA mathC<>+68(SB)/4, $0x3fbe87b0
DATA mathC<>+72(SB)/4, $0xbf914e5d
DATA mathC<>+76(SB)/4, $0x3e8ec7cc
DATA mathC<>+80(SB)/4, $0xbe3ec24c
DATA mathC<>+84(SB)/4, $0x3dc636c9
DATA mathC<>+88(SB)/4, $0x3ebf88fb
DATA mathC<>+92(SB)/4, $0x3f8000c7
DATA mathC<>+96(SB)/4, $0xbfa1fc4e
DATA mathC<>+100(SB)/4, $0x7fffffff // |x| mask
GLOBL mathC<>(SB), RODATA|NOPTR, $104

// LOADCONSTS puts the exp constants in Z16-Z28, 0.5 in Z29, 1/sqrt(2) in
// Z30 and the abs mask in Z31.
#define LOADCONSTS \
	VBROADCASTSS mathC<>+0(SB), Z16; \
	VBROADCASTSS mathC<>+4(SB), Z17; \
	VBROADCASTSS mathC<>+8(SB), Z18; \
	VBROADCASTSS mathC<>+12(SB), Z19; \
	VBROADCASTSS mathC<>+16(SB), Z20; \
	VBROADCASTSS mathC<>+20(SB), Z21; \
	VBROADCASTSS mathC<>+24(SB), Z22; \
	VBROADCASTSS mathC<>+28(SB), Z23; \
	VBROADCASTSS mathC<>+32(SB), Z24; \
	VBROADCASTSS mathC<>+36(SB), Z25; \
	VBROADCASTSS mathC<>+40(SB), Z26; \
	VBROADCASTSS mathC<>+44(SB), Z27; \
	VBROADCASTSS mathC<>+48(SB), Z28; \
	VBROADCASTSS mathC<>+52(SB), Z29; \
	VBROADCASTSS mathC<>+56(SB), Z30; \
	VBROADCASTSS mathC<>+100(SB), Z31

// EXP sets r = e^r (Cephes expf: n = round(r·log2 e), reduced argument,
// degree-5 polynomial, scale by 2^n with VSCALEFPS). NaN stays NaN.
#define EXP(r, t1, t2) \
	VMINPS r, Z16, r; \
	VMAXPS r, Z17, r; \
	VMULPS Z18, r, t1; \
	VRNDSCALEPS $0, t1, t1; \
	VFNMADD231PS Z19, t1, r; \
	VFNMADD231PS Z20, t1, r; \
	VMOVAPS Z21, t2; \
	VFMADD213PS Z22, r, t2; \
	VFMADD213PS Z23, r, t2; \
	VFMADD213PS Z24, r, t2; \
	VFMADD213PS Z25, r, t2; \
	VFMADD213PS Z26, r, t2; \
	VFMADD213PS Z27, r, t2; \
	VFMADD213PS Z27, r, t2; \
	VSCALEFPS t1, t2, r

// RCP sets r = 1/d (14-bit estimate plus one Newton step).
#define RCP(d, r, t) \
	VRCP14PS d, r; \
	VMOVAPS r, t; \
	VFNMADD213PS Z28, d, t; \
	VMULPS t, r, r

// SIGMOID sets Z1 = 1/(1+e^-x) for x in Z4; clobbers Z0, Z2.
#define SIGMOID \
	VPXORD Z0, Z0, Z0; \
	VSUBPS Z4, Z0, Z0; \
	EXP(Z0, Z1, Z2); \
	VADDPS Z27, Z0, Z0; \
	RCP(Z0, Z1, Z2)

// GELU sets Z0 = x·Φ(x) for x in Z4, Φ(x) = erfc(-x/√2)/2; clobbers
// Z1, Z2, Z5-Z8, K2.
#define GELU \
	VPANDD Z31, Z4, Z5; \
	VMULPS Z30, Z5, Z5; \
	VMULPS Z29, Z5, Z6; \
	VADDPS Z27, Z6, Z6; \
	RCP(Z6, Z7, Z2); \
	VBROADCASTSS mathC<>+60(SB), Z8; \
	VFMADD213PS.BCST mathC<>+64(SB), Z7, Z8; \
	VFMADD213PS.BCST mathC<>+68(SB), Z7, Z8; \
	VFMADD213PS.BCST mathC<>+72(SB), Z7, Z8; \
	VFMADD213PS.BCST mathC<>+76(SB), Z7, Z8; \
	VFMADD213PS.BCST mathC<>+80(SB), Z7, Z8; \
	VFMADD213PS.BCST mathC<>+84(SB), Z7, Z8; \
	VFMADD213PS.BCST mathC<>+88(SB), Z7, Z8; \
	VFMADD213PS.BCST mathC<>+92(SB), Z7, Z8; \
	VFMADD213PS.BCST mathC<>+96(SB), Z7, Z8; \
	VFNMADD231PS Z5, Z5, Z8; \
	EXP(Z8, Z1, Z2); \
	VMULPS Z7, Z8, Z8; \
	VMULPS Z29, Z4, Z1; \
	VMULPS Z8, Z1, Z0; \
	VSUBPS Z0, Z4, Z2; \
	VPANDD Z31, Z4, Z5; \
	VCMPPS $0, Z5, Z4, K2; \
	VMOVAPS Z2, K2, Z0

// TAILMASK sets K1 to the low CX lanes.
#define TAILMASK \
	MOVQ $1, AX; \
	SHLQ CX, AX; \
	DECQ AX; \
	KMOVW AX, K1

// func siluAVX512(dst, src *float32, n int)
TEXT ·siluAVX512(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	LOADCONSTS
loop:
	CMPQ CX, $16
	JLT tail
	VMOVUPS (SI), Z4
	SIGMOID
	VMULPS Z1, Z4, Z0
	VMOVUPS Z0, (DI)
	ADDQ $64, SI
	ADDQ $64, DI
	SUBQ $16, CX
	JMP loop
tail:
	TESTQ CX, CX
	JZ done
	TAILMASK
	VMOVUPS.Z (SI), K1, Z4
	SIGMOID
	VMULPS Z1, Z4, Z0
	VMOVUPS Z0, K1, (DI)
done:
	VZEROUPPER
	RET

// func sigmoidAVX512(dst, src *float32, n int)
TEXT ·sigmoidAVX512(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	LOADCONSTS
loop:
	CMPQ CX, $16
	JLT tail
	VMOVUPS (SI), Z4
	SIGMOID
	VMOVUPS Z1, (DI)
	ADDQ $64, SI
	ADDQ $64, DI
	SUBQ $16, CX
	JMP loop
tail:
	TESTQ CX, CX
	JZ done
	TAILMASK
	VMOVUPS.Z (SI), K1, Z4
	SIGMOID
	VMOVUPS Z1, K1, (DI)
done:
	VZEROUPPER
	RET

// func geluAVX512(dst, src *float32, n int)
TEXT ·geluAVX512(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	LOADCONSTS
loop:
	CMPQ CX, $16
	JLT tail
	VMOVUPS (SI), Z4
	GELU
	VMOVUPS Z0, (DI)
	ADDQ $64, SI
	ADDQ $64, DI
	SUBQ $16, CX
	JMP loop
tail:
	TESTQ CX, CX
	JZ done
	TAILMASK
	VMOVUPS.Z (SI), K1, Z4
	GELU
	VMOVUPS Z0, K1, (DI)
done:
	VZEROUPPER
	RET

// func gegluAVX512(dst, h, gate *float32, n int)
// dst = h · GELU(gate).
TEXT ·gegluAVX512(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ h+8(FP), BX
	MOVQ gate+16(FP), SI
	MOVQ n+24(FP), CX
	LOADCONSTS
loop:
	CMPQ CX, $16
	JLT tail
	VMOVUPS (SI), Z4
	GELU
	VMULPS (BX), Z0, Z0
	VMOVUPS Z0, (DI)
	ADDQ $64, SI
	ADDQ $64, BX
	ADDQ $64, DI
	SUBQ $16, CX
	JMP loop
tail:
	TESTQ CX, CX
	JZ done
	TAILMASK
	VMOVUPS.Z (SI), K1, Z4
	GELU
	VMOVUPS.Z (BX), K1, Z9
	VMULPS Z9, Z0, Z0
	VMOVUPS Z0, K1, (DI)
done:
	VZEROUPPER
	RET

// func expShiftAVX512(dst, src *float32, n int, shift float32) float32
// dst = e^(src − shift); returns the sum of dst.
TEXT ·expShiftAVX512(SB), NOSPLIT, $0-36
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	VBROADCASTSS shift+24(FP), Z9
	LOADCONSTS
	VPXORD Z10, Z10, Z10
loop:
	CMPQ CX, $16
	JLT tail
	VMOVUPS (SI), Z0
	VSUBPS Z9, Z0, Z0
	EXP(Z0, Z1, Z2)
	VMOVUPS Z0, (DI)
	VADDPS Z0, Z10, Z10
	ADDQ $64, SI
	ADDQ $64, DI
	SUBQ $16, CX
	JMP loop
tail:
	TESTQ CX, CX
	JZ sum
	TAILMASK
	VMOVUPS.Z (SI), K1, Z0
	VSUBPS Z9, Z0, Z0
	EXP(Z0, Z1, Z2)
	VMOVUPS Z0, K1, (DI)
	VADDPS Z0, Z10, K1, Z10
sum:
	VEXTRACTF64X4 $1, Z10, Y11
	VADDPS Y11, Y10, Y10
	VEXTRACTF128 $1, Y10, X11
	VADDPS X11, X10, X10
	VHADDPS X10, X10, X10
	VHADDPS X10, X10, X10
	MOVSS X10, ret+32(FP)
	VZEROUPPER
	RET

// HSUMPD sets X10 (low lane) to the sum of Z10's eight float64 lanes.
#define HSUMPD \
	VEXTRACTF64X4 $1, Z10, Y12; \
	VADDPD Y12, Y10, Y10; \
	VEXTRACTF128 $1, Y10, X12; \
	VADDPD X12, X10, X10; \
	VHADDPD X10, X10, X10

// func sumAVX512(x *float32, n int) float64
// Sum of x[0:n] in float64; n is a multiple of 16.
TEXT ·sumAVX512(SB), NOSPLIT, $0-24
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VPXORQ Z10, Z10, Z10
	VPXORQ Z11, Z11, Z11
	SHRQ $4, CX
	JZ done
loop:
	VCVTPS2PD (SI), Z0
	VCVTPS2PD 32(SI), Z1
	VADDPD Z0, Z10, Z10
	VADDPD Z1, Z11, Z11
	ADDQ $64, SI
	DECQ CX
	JNZ loop
done:
	VADDPD Z11, Z10, Z10
	HSUMPD
	MOVSD X10, ret+16(FP)
	VZEROUPPER
	RET

// func sumSqDevAVX512(x *float32, n int, mean float64) float64
// Σ (x−mean)² over x[0:n] in float64; n is a multiple of 16.
TEXT ·sumSqDevAVX512(SB), NOSPLIT, $0-32
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSD mean+16(FP), Z9
	VPXORQ Z10, Z10, Z10
	VPXORQ Z11, Z11, Z11
	SHRQ $4, CX
	JZ done
loop:
	VCVTPS2PD (SI), Z0
	VCVTPS2PD 32(SI), Z1
	VSUBPD Z9, Z0, Z0
	VSUBPD Z9, Z1, Z1
	VFMADD231PD Z0, Z0, Z10
	VFMADD231PD Z1, Z1, Z11
	ADDQ $64, SI
	DECQ CX
	JNZ loop
done:
	VADDPD Z11, Z10, Z10
	HSUMPD
	MOVSD X10, ret+24(FP)
	VZEROUPPER
	RET

// AFFINE sets Z4 = (Z4 − mean)·scale + shift with mean, scale, shift in
// Z13, Z14, Z15.
#define AFFINE \
	VSUBPS Z13, Z4, Z4; \
	VFMADD213PS Z15, Z14, Z4

// func affineAVX512(dst, src *float32, n int, mean, scale, shift float32, silu bool)
// dst = (src − mean)·scale + shift, then SiLU if silu is set.
TEXT ·affineAVX512(SB), NOSPLIT, $0-37
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	VBROADCASTSS mean+24(FP), Z13
	VBROADCASTSS scale+28(FP), Z14
	VBROADCASTSS shift+32(FP), Z15
	MOVBLZX silu+36(FP), DX
	LOADCONSTS
loop:
	CMPQ CX, $16
	JLT tail
	VMOVUPS (SI), Z4
	AFFINE
	TESTQ DX, DX
	JZ store
	SIGMOID
	VMULPS Z1, Z4, Z4
store:
	VMOVUPS Z4, (DI)
	ADDQ $64, SI
	ADDQ $64, DI
	SUBQ $16, CX
	JMP loop
tail:
	TESTQ CX, CX
	JZ done
	TAILMASK
	VMOVUPS.Z (SI), K1, Z4
	AFFINE
	TESTQ DX, DX
	JZ tailstore
	SIGMOID
	VMULPS Z1, Z4, Z4
tailstore:
	VMOVUPS Z4, K1, (DI)
done:
	VZEROUPPER
	RET

// func maxAVX512(x *float32, n int) float32
// Maximum of x[0:n], n ≥ 1.
TEXT ·maxAVX512(SB), NOSPLIT, $0-20
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSS (SI), Z10
loop:
	CMPQ CX, $16
	JLT tail
	VMAXPS (SI), Z10, Z10
	ADDQ $64, SI
	SUBQ $16, CX
	JMP loop
tail:
	TESTQ CX, CX
	JZ reduce
	TAILMASK
	VMOVUPS.Z (SI), K1, Z0
	VMAXPS Z0, Z10, K1, Z10
reduce:
	VEXTRACTF64X4 $1, Z10, Y11
	VMAXPS Y11, Y10, Y10
	VEXTRACTF128 $1, Y10, X11
	VMAXPS X11, X10, X10
	VPERMILPS $0x4e, X10, X11
	VMAXPS X11, X10, X10
	VPERMILPS $0xb1, X10, X11
	VMAXPS X11, X10, X10
	MOVSS X10, ret+16(FP)
	VZEROUPPER
	RET

// func scaleAVX512(dst, src *float32, n int, s float32)
// dst = s·src.
TEXT ·scaleAVX512(SB), NOSPLIT, $0-28
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	VBROADCASTSS s+24(FP), Z9
loop:
	CMPQ CX, $16
	JLT tail
	VMULPS (SI), Z9, Z0
	VMOVUPS Z0, (DI)
	ADDQ $64, SI
	ADDQ $64, DI
	SUBQ $16, CX
	JMP loop
tail:
	TESTQ CX, CX
	JZ done
	TAILMASK
	VMOVUPS.Z (SI), K1, Z0
	VMULPS Z0, Z9, Z0
	VMOVUPS Z0, K1, (DI)
done:
	VZEROUPPER
	RET

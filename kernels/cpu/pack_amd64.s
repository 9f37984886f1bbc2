//go:build amd64 && !purego

#include "textflag.h"

// func packRowsAVX512(dst, src *float32, ld, cols, width, kc int)
// For k in [0, kc): dst[k·width + c] = src[k·ld + c] for c < cols, 0 for
// cols ≤ c < width. width ≤ 32; ld in elements.
TEXT ·packRowsAVX512(SB), NOSPLIT, $0-48
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ ld+16(FP), R8
	SHLQ $2, R8
	MOVQ cols+24(FP), CX
	MOVQ width+32(FP), R9
	MOVQ kc+40(FP), R10
	// K1/K2: the valid columns of each 16-lane half; K3/K4: the width.
	MOVQ $1, AX
	SHLQ CX, AX
	DECQ AX
	KMOVW AX, K1
	SHRQ $16, AX
	KMOVW AX, K2
	MOVQ $1, AX
	MOVQ R9, CX
	SHLQ CX, AX
	DECQ AX
	KMOVW AX, K3
	SHRQ $16, AX
	KMOVW AX, K4
	SHLQ $2, R9
	TESTQ R10, R10
	JZ done
loop:
	VMOVUPS.Z (SI), K1, Z0
	VMOVUPS.Z 64(SI), K2, Z1
	VMOVUPS Z0, K3, (DI)
	VMOVUPS Z1, K4, 64(DI)
	ADDQ R8, SI
	ADDQ R9, DI
	DECQ R10
	JNZ loop
done:
	VZEROUPPER
	RET

// func packConvAVX512(a *convPackArgs)
// Packs kc rows of one 32-column sliver of a stride-1 convolution's patch
// matrix; see convPackArgs and convRun for the layout.
TEXT ·packConvAVX512(SB), NOSPLIT, $0-8
	MOVQ a+0(FP), R15
	MOVQ 0(R15), DI   // dst
	MOVQ 8(R15), R13  // x
	MOVQ 32(R15), R14 // kc
	MOVQ 40(R15), R8  // koff
	MOVQ 48(R15), R9  // ky
	MOVQ 56(R15), R10 // kx
	VPXORD Z31, Z31, Z31
	TESTQ R14, R14
	JZ done
kloop:
	VMOVUPS Z31, (DI)
	VMOVUPS Z31, 64(DI)
	MOVQ 16(R15), SI  // runs
	MOVQ 24(R15), R12 // nrun
rloop:
	MOVQ 24(SI), AX // iy = iy0 + ky
	ADDQ R9, AX
	CMPQ AX, $0
	JLT next
	CMPQ AX, 80(R15) // h
	JGE next
	MOVQ 32(SI), BX // ix = ix0 + kx
	ADDQ R10, BX
	XORQ CX, CX
	MOVQ BX, DX
	NEGQ DX
	CMPQ DX, CX
	CMOVQGT DX, CX // lo = max(0, -ix)
	MOVQ 88(R15), DX
	SUBQ BX, DX // w - ix
	MOVQ 8(SI), R11
	CMPQ R11, DX
	CMOVQLT R11, DX // hi = min(n, w - ix)
	CMPQ DX, CX
	JLE next
	MOVQ $1, AX
	SHLXQ DX, AX, AX
	DECQ AX
	MOVQ $1, R11
	SHLXQ CX, R11, R11
	DECQ R11
	NOTQ R11
	ANDQ R11, AX // lanes [lo, hi)
	KMOVW AX, K1
	SHRQ $16, AX
	KMOVW AX, K2
	MOVQ 16(SI), AX // off + koff
	ADDQ R8, AX
	LEAQ (R13)(AX*4), AX
	MOVQ 0(SI), BX // col
	LEAQ (DI)(BX*4), BX
	VMOVUPS.Z (AX), K1, Z0
	VMOVUPS Z0, K1, (BX)
	VMOVUPS.Z 64(AX), K2, Z1
	VMOVUPS Z1, K2, 64(BX)
next:
	ADDQ $40, SI
	DECQ R12
	JNZ rloop
	ADDQ $128, DI
	INCQ R8
	INCQ R10
	CMPQ R10, 72(R15) // kw
	JLT knext
	XORQ R10, R10
	ADDQ 88(R15), R8 // next tap row: + w - kw
	SUBQ 72(R15), R8
	INCQ R9
	CMPQ R9, 64(R15) // kh
	JLT knext
	XORQ R9, R9
	ADDQ 96(R15), R8 // next channel: + plane - kh·w
	MOVQ 64(R15), AX
	IMULQ 88(R15), AX
	SUBQ AX, R8
knext:
	DECQ R14
	JNZ kloop
done:
	VZEROUPPER
	RET

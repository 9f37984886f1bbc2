//go:build amd64 && !purego

package cpu

// hostFeatures is computed once and never written again.
var hostFeatures = detectFeatures()

func cpuid(eaxIn, ecxIn uint32) (eax, ebx, ecx, edx uint32)
func xgetbv() (eax, edx uint32)

func detectFeatures() features {
	maxLeaf, _, _, _ := cpuid(0, 0)
	if maxLeaf < 7 {
		return features{}
	}
	_, _, ecx1, _ := cpuid(1, 0)
	const (
		fma     = 1 << 12
		osxsave = 1 << 27
		avx     = 1 << 28
	)
	if ecx1&(fma|osxsave|avx) != fma|osxsave|avx {
		return features{}
	}
	xcr0, _ := xgetbv()
	if xcr0&0x6 != 0x6 { // XMM and YMM state
		return features{}
	}
	_, ebx7, _, _ := cpuid(7, 0)
	f := features{avx2: ebx7&(1<<5) != 0}
	f.avx512 = f.avx2 && ebx7&(1<<16) != 0 && xcr0&0xe0 == 0xe0 // opmask, ZMM0-15 upper, ZMM16-31
	return f
}

//go:build cuda

package cudrv

// gorgonia.org/cu binds no page-locked host allocation (cuMemAllocHost,
// cuMemHostRegister), so this file calls the driver API for it directly.

/*
#cgo LDFLAGS: -lcuda
#include <cuda.h>
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// stagingBytes is the size of the pinned buffer every copy goes through:
// big enough for a batch of latents or a few decoded frames per chunk,
// small enough to pin on any host.
const stagingBytes = 16 << 20

// pinned is a page-locked host buffer. Copies between it and the device
// run at the bus's full rate with no staging inside the driver, which a
// copy from pageable Go memory needs.
type pinned struct {
	p   unsafe.Pointer
	buf []byte
}

// allocPinned returns n page-locked bytes; the context must be current.
func allocPinned(n int) (*pinned, error) {
	var p unsafe.Pointer
	if r := C.cuMemAllocHost(&p, C.size_t(n)); r != C.CUDA_SUCCESS {
		return nil, fmt.Errorf("cuMemAllocHost(%d): CUresult %d", n, int(r))
	}
	return &pinned{p: p, buf: unsafe.Slice((*byte)(p), n)}, nil
}

// free releases the buffer; the context must be current.
func (s *pinned) free() {
	if s != nil && s.p != nil {
		C.cuMemFreeHost(s.p)
		s.p, s.buf = nil, nil
	}
}

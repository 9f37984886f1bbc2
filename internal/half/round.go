package half

import "unsafe"

// Round returns f rounded to the nearest half value, as a float32: what
// storing f in fp16 and reading it back gives.
func Round(f float32) float32 { return ToFloat32(FromFloat32(f)) }

// Bytes views h's memory as bytes in host order (little-endian on every
// platform the project builds for), e.g. for a device copy.
func Bytes(h []uint16) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(h))), 2*len(h))
}

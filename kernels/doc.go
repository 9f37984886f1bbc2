// Package kernels defines the tensor type and the op table ([Backend]) that
// MuseTalk's networks (UNet, VAE, Whisper encoder) are built from.
//
// Models take a [Backend] and call its ops; they never name a concrete
// backend. Package kernels/cpu implements the table in pure Go with SIMD
// assembly; a CUDA backend implements it behind the `cuda` build tag.
// Package kernels/kerneltest checks any backend against naive reference
// loops.
//
// Memory: ops write into destination tensors the caller provides. Callers
// allocate them with [Memory.Alloc] and hand them back with [Memory.Free],
// so a backend's pool reuses the same buffers layer after layer and frame
// after frame. Scratch space an op needs internally (packed GEMM panels,
// attention scores) is owned by the backend and never escapes the op.
package kernels

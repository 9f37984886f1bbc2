package model

import "github.com/avatargen/musetalk/kernels"

// Test hooks for the external golden tests: forward passes that report the
// golden files' intermediate.* activations.

func UNetForwardTrace(u *UNet, sample *kernels.Tensor, timesteps []float32, cond *kernels.Tensor, trace func(string, *kernels.Tensor)) (*kernels.Tensor, error) {
	return u.forward(sample, timesteps, cond, trace)
}

func VAEEncodeMomentsTrace(v *VAE, x *kernels.Tensor, trace func(string, *kernels.Tensor)) (*kernels.Tensor, error) {
	return v.encodeMoments(x, trace)
}

func VAEDecodeTrace(v *VAE, z *kernels.Tensor, trace func(string, *kernels.Tensor)) (*kernels.Tensor, error) {
	return v.decode(z, trace)
}

// TimestepProjection exposes the host-side timestep embedding.
var TimestepProjection = timestepProjection

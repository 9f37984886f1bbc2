//go:build cuda

package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/kernels/cuda"
	"github.com/avatargen/musetalk/kernels/cuda/cudrv"
)

// This file makes the CUDA build (musetalk-cuda in a GPU image). It only
// starts where cuInit succeeds (gorgonia.org/cu exits otherwise): the
// plain build probes with `musetalk-cuda gpu-probe` before handing over
// (gpu_sibling.go).

// cuda is the GPU device: the CUDA backend on device 0, storing fp16 by
// default (--precision fp32 for fp32).
func (buildDevices) cuda() device {
	return device{
		name:       deviceCUDA,
		precisions: cudaPrecisions,
		usable: func() error {
			n, err := cudrv.DeviceCount()
			if err != nil {
				return fmt.Errorf("no usable GPU: %w", err)
			}
			if n == 0 {
				return errors.New("no usable GPU: the driver sees no CUDA device")
			}
			return nil
		},
		open: func(_ deviceConfig, p kernels.Precision) (kernels.Backend, error) {
			drv, err := cudrv.Open(0)
			if err != nil {
				return nil, err
			}
			b, err := cuda.New(drv, cuda.Options{Precision: p})
			if err != nil {
				drv.Close()
				return nil, err
			}
			var missing []string
			for _, op := range kernels.AllOps() {
				if !b.Supports(op) {
					missing = append(missing, op.String())
				}
			}
			if len(missing) > 0 {
				b.Close()
				return nil, fmt.Errorf("the CUDA backend does not implement %s yet: use --device cpu", strings.Join(missing, ", "))
			}
			return b, nil
		},
	}
}

// gpuProbeCommand is what the plain build runs to learn whether this
// build can start here: it prints device 0 and exits 0, or dies (no
// libcuda.so.1, cuInit failing) or fails (no device).
func (buildDevices) gpuProbeCommand() *cli.Command {
	return &cli.Command{
		Name:   "gpu-probe",
		Hidden: true,
		Usage:  "print the GPU this CUDA build would use (for the plain build's hand-off)",
		Action: func(c *cli.Context) error {
			n, err := cudrv.DeviceCount()
			if err != nil {
				return err
			}
			if n == 0 {
				return errors.New("the driver sees no CUDA device")
			}
			desc, err := cudrv.Describe(0)
			if err != nil {
				return err
			}
			fmt.Fprintln(c.App.Writer, desc)
			return nil
		},
	}
}

package main

import (
	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/kernels/cpu"
)

// cpuDevice is the CPU backend (package kernels/cpu): in every build,
// usable on every machine, started with deviceConfig.cpu. It computes in
// fp32 only (precisions nil).
func cpuDevice() device {
	return device{
		name:   deviceCPU,
		usable: func() error { return nil },
		open: func(cfg deviceConfig, _ kernels.Precision) (kernels.Backend, error) {
			b, err := cpu.New(cfg.cpu)
			if err != nil {
				return nil, err
			}
			return b, nil
		},
	}
}

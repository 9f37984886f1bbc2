//go:build !cuda

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/avatargen/musetalk/kernels"
)

// A GPU image ships two builds of this program side by side: musetalk (pure
// Go, CPU only: it starts on any machine) and musetalk-cuda (-tags cuda,
// linked to libcuda.so.1). The CUDA build cannot start on a machine without
// a usable GPU: the dynamic loader refuses it without libcuda.so.1, and
// gorgonia.org/cu exits from its package init when cuInit fails. So the
// plain build decides. Before a command that runs the networks, it has the
// sibling probe the GPU in a process of its own (`musetalk-cuda
// gpu-probe`, which may die freely) and, when the probe answers, replaces
// itself with the sibling (exec: same PID, arguments and environment).
// When it does not, the plain build goes on with a cuda device that is
// unusable for the probe's reason: `--device cuda`, and auto too (a GPU
// image on a machine whose GPU fails is a fault to see, not to hide on the
// CPU), fail saying why, so a worker stays up, not ready, and claims
// nothing; `--device cpu` runs on the CPU.

// cudaSiblingName is the GPU build's file name, beside this executable.
const cudaSiblingName = "musetalk-cuda"

// gpuProbeTimeout bounds the probe (a hung driver must not hang the start).
const gpuProbeTimeout = 30 * time.Second

// siblingKey holds the probe's outcome in the app's Metadata.
const siblingKey = "cuda-sibling"

// siblingProbe is what the plain build learnt of its GPU sibling.
type siblingProbe struct {
	path string
	err  error // why the GPU cannot be used
}

// networkCommands are the commands that take --device.
var networkCommands = []string{"render", "worker", "up", "bench"}

// handOffToGPU runs before the CLI: when a GPU sibling exists and the
// command may use the GPU, it probes and execs the sibling, returning
// only when it does not (nil: no sibling or a command without networks).
func handOffToGPU(args []string, getenv func(string) string) *siblingProbe {
	exe, err := os.Executable()
	if err != nil {
		return nil
	}
	sibling := filepath.Join(filepath.Dir(exe), cudaSiblingName)
	if st, err := os.Stat(sibling); err != nil || st.IsDir() {
		return nil
	}
	cmd, device := commandAndDevice(args[1:], getenv)
	if !slices.Contains(networkCommands, cmd) || device == deviceCPU {
		return &siblingProbe{path: sibling, err: errors.New("not probed")}
	}
	ctx, cancel := context.WithTimeout(context.Background(), gpuProbeTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, sibling, "gpu-probe").CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if len(msg) > 500 {
			msg = msg[:500] + "…"
		}
		return &siblingProbe{path: sibling, err: fmt.Errorf("no usable GPU: %s gpu-probe: %v: %s", cudaSiblingName, err, msg)}
	}
	err = syscall.Exec(sibling, append([]string{sibling}, args[1:]...), os.Environ())
	return &siblingProbe{path: sibling, err: fmt.Errorf("starting %s: %w", sibling, err)}
}

// commandAndDevice finds the subcommand and its --device value (else
// $MUSETALK_DEVICE, else auto) in the arguments after the program name.
func commandAndDevice(args []string, getenv func(string) string) (cmd, device string) {
	device = getenv("MUSETALK_DEVICE")
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case cmd == "" && (a == "--log-format" || a == "--log-level" || a == "-log-format" || a == "-log-level"):
			i++ // the global flag's value
		case cmd == "" && !strings.HasPrefix(a, "-"):
			cmd = a
		case a == "--device" || a == "-device":
			if i+1 < len(args) {
				device = args[i+1]
				i++
			}
		case strings.HasPrefix(a, "--device=") || strings.HasPrefix(a, "-device="):
			device = a[strings.Index(a, "=")+1:]
		}
	}
	if device == "" {
		device = deviceAuto
	}
	return cmd, device
}

// siblingDevices is the GPU sibling as a device that cannot be used here
// (the probe failed, or did not run for this command), or nothing without
// a sibling. It is strict: auto does not pass it over for the CPU.
func siblingDevices(c *cli.Context) []device {
	p, ok := c.App.Metadata[siblingKey].(*siblingProbe)
	if !ok || p == nil {
		return nil
	}
	return []device{{
		name:       deviceCUDA,
		strict:     true,
		precisions: cudaPrecisions,
		usable:     func() error { return p.err },
		open: func(deviceConfig, kernels.Precision) (kernels.Backend, error) {
			return nil, p.err
		},
	}}
}

package main

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"

	"github.com/urfave/cli/v2"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/kernels/cpu"
)

// The binary, not the pipeline, picks the backend the networks run on
// (--device). device_cpu.go provides the CPU device, which every build
// has; a file behind the cuda build tag adds the GPU one (see
// buildDevices).

// Values of --device.
const (
	deviceAuto = "auto"
	deviceCUDA = "cuda"
	deviceCPU  = "cpu"
)

// device is one kind of backend this build can run.
type device struct {
	name string
	// usable reports whether this machine can run the device: nil, or why
	// not (no driver, no GPU). It is cheap and does not take the device.
	usable func() error
	// open starts a backend on the device with cfg's settings.
	open func(cfg deviceConfig) (kernels.Backend, error)
	// strict: auto must not pass this device over when it is unusable
	// (the GPU of a GPU image: see gpu_sibling.go).
	strict bool
}

// buildDevices is where files behind build tags add devices, as methods:
// device_cuda.go (build tag cuda) is to give it
//
//	func (buildDevices) cuda() device
//
// and a build without that file has no such method, hence no CUDA device.
// No registry variable is filled at init.
type buildDevices struct{}

// builtDevices lists this build's devices in auto's order of preference:
// the GPU first, the CPU, always there, last.
func builtDevices() []device {
	var out []device
	if b, ok := any(buildDevices{}).(interface{ cuda() device }); ok {
		out = append(out, b.cuda())
	}
	return append(out, cpuDevice())
}

// deviceConfig is a checked --device choice and what its backend is
// started with. The zero value is auto over this build's devices with
// default settings.
type deviceConfig struct {
	name    string       // deviceAuto or a device's name; "" is auto
	devices []device     // the devices to choose from; nil: builtDevices()
	cpu     cpu.Options  // the CPU device's: --threads; bench model's --isa and --conv
	log     *slog.Logger // notes the device taken and why auto passed one over; nil: slog.Default()
}

// deviceFlags are --device and --threads, for the commands that run the
// networks; threadsUsage says what the threads are for.
func deviceFlags(threadsUsage string) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "device", Value: deviceAuto, EnvVars: []string{"MUSETALK_DEVICE"},
			Usage: "where the networks run: auto (cuda when this build has it and a GPU is usable, else cpu), cuda or cpu"},
		&cli.IntFlag{Name: "threads", Usage: threadsUsage, DefaultText: "all cores", EnvVars: []string{"MUSETALK_THREADS"}},
	}
}

// deviceConfigFrom reads deviceFlags. It checks the values against this
// build without probing the machine: that happens when the backend is
// opened.
func deviceConfigFrom(c *cli.Context, log *slog.Logger) (deviceConfig, error) {
	cfg, err := parseDevice(c.String("device"), append(siblingDevices(c), builtDevices()...))
	if err != nil {
		return deviceConfig{}, err
	}
	if n := c.Int("threads"); n < 0 {
		return deviceConfig{}, fmt.Errorf("--threads %d: must not be negative (0: all cores)", n)
	}
	cfg.cpu.Threads = c.Int("threads")
	cfg.log = log
	return cfg, nil
}

// parseDevice checks a --device value: auto ("" too: an empty
// MUSETALK_DEVICE), or the name of one of devices. cuda in a build without
// it is an error saying how to get it.
func parseDevice(name string, devices []device) (deviceConfig, error) {
	if name == deviceAuto || name == "" {
		return deviceConfig{name: deviceAuto, devices: devices}, nil
	}
	for _, d := range devices {
		if d.name == name {
			return deviceConfig{name: name, devices: devices}, nil
		}
	}
	if name == deviceCUDA {
		return deviceConfig{}, errors.New("--device cuda: this musetalk was built without CUDA support (build with -tags cuda; see README)")
	}
	return deviceConfig{}, fmt.Errorf("--device %q: want %s, %s or %s", name, deviceAuto, deviceCUDA, deviceCPU)
}

// open starts the backend; the caller closes it. auto takes the first
// usable device (the GPU when there is one), noting at info level why it
// passed over the others; a named device that is not usable is an error
// saying why. A usable device that fails to start is an error, also for
// auto: a GPU machine silently running on its CPU would hide the fault.
func (cfg deviceConfig) open() (kernels.Backend, error) {
	name := cmp.Or(cfg.name, deviceAuto)
	devices := cfg.devices
	if devices == nil {
		devices = builtDevices()
	}
	log := cfg.log
	if log == nil {
		log = slog.Default()
	}
	for _, d := range devices {
		if name != deviceAuto && d.name != name {
			continue
		}
		if err := d.usable(); err != nil {
			if name != deviceAuto || d.strict {
				return nil, fmt.Errorf("--device %s: %w", name, err)
			}
			log.Info("device: passing over "+d.name, "reason", err)
			continue
		}
		b, err := d.open(cfg)
		if err != nil {
			return nil, fmt.Errorf("starting the %s device: %w", d.name, err)
		}
		log.Info("device", "device", name, "backend", b.Name())
		return b, nil
	}
	return nil, fmt.Errorf("--device %s: no usable device in this build", name)
}

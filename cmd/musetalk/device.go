package main

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

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

// Values of --precision; empty (the default) is the device's own: the
// first of its precisions.
const (
	precisionFP16 = "fp16"
	precisionFP32 = "fp32"
)

// device is one kind of backend this build can run.
type device struct {
	name string
	// usable reports whether this machine can run the device: nil, or why
	// not (no driver, no GPU). It is cheap and does not take the device.
	usable func() error
	// open starts a backend on the device with cfg's settings, storing
	// tensors at precision p (one of precisions).
	open func(cfg deviceConfig, p kernels.Precision) (kernels.Backend, error)
	// precisions are the storage precisions the device offers, its
	// default first; nil is fp32 only.
	precisions []kernels.Precision
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

// cudaPrecisions are the CUDA device's precisions, its default first. The
// plain build's stand-in for its GPU sibling (gpu_sibling.go) offers the
// same, so a --precision is judged alike before and after the hand-off.
var cudaPrecisions = []kernels.Precision{kernels.F16, kernels.F32}

// passedOver is a device auto did not take, and why.
type passedOver struct {
	name string
	err  error
}

// offers reports whether d stores tensors at p.
func (d device) offers(p kernels.Precision) bool {
	if d.precisions == nil {
		return p == kernels.F32
	}
	return slices.Contains(d.precisions, p)
}

// precisionFor is the precision d's backend is started with: cfg's
// --precision, else d's default. A precision d does not offer is an error
// naming the flag.
func (d device) precisionFor(cfg deviceConfig) (kernels.Precision, error) {
	if cfg.precision == nil {
		if len(d.precisions) == 0 {
			return kernels.F32, nil
		}
		return d.precisions[0], nil
	}
	p := *cfg.precision
	if d.offers(p) {
		return p, nil
	}
	if d.name == deviceCPU {
		return 0, fmt.Errorf("--precision %s needs --device %s; the CPU backend computes in fp32", p, deviceCUDA)
	}
	return 0, fmt.Errorf("--precision %s: the %s device does not offer it", p, d.name)
}

// deviceConfig is a checked --device choice and what its backend is
// started with. The zero value is auto over this build's devices with
// default settings.
type deviceConfig struct {
	name    string   // deviceAuto or a device's name; "" is auto
	devices []device // the devices to choose from; nil: builtDevices()
	// precision is --precision; nil: the chosen device's default (fp16
	// on cuda, fp32 on cpu).
	precision *kernels.Precision
	cpu       cpu.Options  // the CPU device's: --threads; bench model's --isa and --conv
	log       *slog.Logger // notes the device taken and why auto passed one over; nil: slog.Default()
}

// deviceFlags are --device, --precision and --threads, for the commands
// that run the networks; threadsUsage says what the threads are for.
func deviceFlags(threadsUsage string) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "device", Value: deviceAuto, EnvVars: []string{"MUSETALK_DEVICE"},
			Usage: "where the networks run: auto (cuda when this build has it and a GPU is usable, else cpu), cuda or cpu"},
		&cli.StringFlag{Name: "precision", EnvVars: []string{"MUSETALK_PRECISION"}, DefaultText: "the device's: fp16 on cuda, fp32 on cpu",
			Usage: "how the device stores weights and activations: fp16 (cuda only: half the memory, tensor cores; sums stay fp32) or fp32"},
		&cli.IntFlag{Name: "threads", Usage: threadsUsage, DefaultText: "all cores", EnvVars: []string{"MUSETALK_THREADS"}},
	}
}

// deviceConfigFrom reads deviceFlags. It checks the values against this
// build, and a --precision against the device that will run (for auto,
// the one it would take: this asks whether each device is usable, which
// is cheap), so that a bad choice fails before any work starts. Starting
// the device happens when the backend is opened.
func deviceConfigFrom(c *cli.Context, log *slog.Logger) (deviceConfig, error) {
	cfg, err := parseDevice(c.String("device"), append(siblingDevices(c), builtDevices()...))
	if err != nil {
		return deviceConfig{}, err
	}
	if cfg.precision, err = parsePrecision(c.String("precision")); err != nil {
		return deviceConfig{}, err
	}
	if err := cfg.checkPrecision(); err != nil {
		return deviceConfig{}, err
	}
	if n := c.Int("threads"); n < 0 {
		return deviceConfig{}, fmt.Errorf("--threads %d: must not be negative (0: all cores)", n)
	}
	cfg.cpu.Threads = c.Int("threads")
	cfg.log = log
	return cfg, nil
}

// parsePrecision checks a --precision value: fp16, fp32, or empty (an
// empty MUSETALK_PRECISION too) for the device's default, nil.
func parsePrecision(s string) (*kernels.Precision, error) {
	if s == "" {
		return nil, nil
	}
	p, err := kernels.ParsePrecision(s)
	if err != nil {
		return nil, fmt.Errorf("--precision %q: want %s or %s (empty: the device's default)", s, precisionFP16, precisionFP32)
	}
	return &p, nil
}

// checkPrecision reports a --precision that the device to run does not
// offer: the named device, or the one auto would take now. A device
// question it cannot answer (auto finds none usable) is left to open.
func (cfg deviceConfig) checkPrecision() error {
	if cfg.precision == nil {
		return nil
	}
	d, passed, err := cfg.choose()
	if err != nil {
		return nil
	}
	if _, err := d.precisionFor(cfg); err != nil {
		return autoChose(cfg, d, passed, err)
	}
	return nil
}

// autoChose adds to err, about the device auto took, why auto took it.
func autoChose(cfg deviceConfig, d device, passed []passedOver, err error) error {
	if cmp.Or(cfg.name, deviceAuto) != deviceAuto {
		return err
	}
	why := "this build has no other device"
	if len(passed) > 0 {
		var reasons []string
		for _, p := range passed {
			reasons = append(reasons, fmt.Sprintf("passed over %s: %v", p.name, p.err))
		}
		why = strings.Join(reasons, "; ")
	}
	return fmt.Errorf("%w (--device %s took %s: %s)", err, deviceAuto, d.name, why)
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

// choose returns the device open starts: auto takes the first usable
// device (the GPU when there is one), passed saying why it passed over
// the others; a named device that is not usable is an error saying why.
func (cfg deviceConfig) choose() (d device, passed []passedOver, err error) {
	name := cmp.Or(cfg.name, deviceAuto)
	devices := cfg.devices
	if devices == nil {
		devices = builtDevices()
	}
	for _, d := range devices {
		if name != deviceAuto && d.name != name {
			continue
		}
		if err := d.usable(); err != nil {
			if name != deviceAuto || d.strict {
				return device{}, passed, fmt.Errorf("--device %s: %w", name, err)
			}
			passed = append(passed, passedOver{d.name, err})
			continue
		}
		return d, passed, nil
	}
	return device{}, passed, fmt.Errorf("--device %s: no usable device in this build", name)
}

// open starts the backend; the caller closes it. It takes the device
// choose gives, noting at info level why auto passed over the others, and
// starts it at --precision (else the device's default), which the device
// must offer. A usable device that fails to start is an error, also for
// auto: a GPU machine silently running on its CPU would hide the fault.
func (cfg deviceConfig) open() (kernels.Backend, error) {
	log := cfg.log
	if log == nil {
		log = slog.Default()
	}
	d, passed, err := cfg.choose()
	for _, p := range passed {
		log.Info("device: passing over "+p.name, "reason", p.err)
	}
	if err != nil {
		return nil, err
	}
	p, err := d.precisionFor(cfg)
	if err != nil {
		return nil, autoChose(cfg, d, passed, err)
	}
	b, err := d.open(cfg, p)
	if err != nil {
		return nil, fmt.Errorf("starting the %s device: %w", d.name, err)
	}
	stored := kernels.PrecisionOf(b)
	log.Info("device", "device", cmp.Or(cfg.name, deviceAuto), "backend", b.Name(), "precision", stored)
	if stored != p {
		log.Warn("device: the backend does not report the precision it was started with", "asked", p, "reported", stored)
	}
	return b, nil
}

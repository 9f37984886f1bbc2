// Command musetalk is the one binary of the system: the control plane, the
// worker, and the tools around them. Each subcommand is a thin layer over a
// library package; run `musetalk help` or `musetalk <command> --help`.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"

	"github.com/urfave/cli/v2"

	"github.com/avatargen/musetalk/telemetry"
)

// version is the binary's version: set at link time (-ldflags "-X
// main.version=..."), else read from the build information at start.
var version = ""

func init() {
	if version == "" {
		version = buildVersion(debug.ReadBuildInfo())
	}
}

// buildVersion is the module version the Go toolchain stamped into the
// binary: a tag, or a pseudo-version naming the commit (with "+dirty" for
// a modified checkout), else the VCS revision, else "devel".
func buildVersion(info *debug.BuildInfo, ok bool) string {
	if !ok {
		return "devel"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified == "true" {
		rev += "+dirty"
	}
	return "devel-" + rev
}

// gcPercent replaces Go's default GOGC of 100 unless GOGC is set. The
// networks' weights are a large, long-lived, pointer-free heap (over 10 GB
// at full size on the CPU backend) while the garbage is per-frame images
// and buffers; GOGC=100 lets the heap grow to twice the live size before
// collecting (a full-size CPU render peaked at 22.5 GB). Pointer-free
// memory is not scanned, so collecting at 25 % growth costs little.
const gcPercent = 25

// controlGCPercent is the GOGC of the control plane (musetalk control and
// bench control's in-process one) unless GOGC is set. Its heap is the
// opposite of a render's: small (tens of MB) and full of pointers, while
// every request allocates a few kB; at 25 % it collected about five
// times a second under 3,000 requests/s and the collector took a fifth of
// the CPU. At 400 % it collects about a fifth as often for a heap a few
// times the live size.
const controlGCPercent = 400

// setControlGC applies controlGCPercent unless GOGC is set.
func setControlGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(controlGCPercent)
	}
}

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	app := newApp()
	// In a GPU image, become the CUDA build when the GPU answers (returns
	// only when it does not).
	app.Metadata = map[string]any{siblingKey: handOffToGPU(os.Args, os.Getenv)}
	if err := app.RunContext(context.Background(), os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "musetalk:", err)
		os.Exit(1)
	}
}

func newApp() *cli.App {
	app := &cli.App{
		Name:    "musetalk",
		Usage:   "MuseTalk lip-sync as a service: control plane, GPU workers and tools",
		Version: version,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "log-format", Value: "text", Usage: "log format: text or json", EnvVars: []string{"MUSETALK_LOG_FORMAT"}},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "log level: debug, info, warn or error", EnvVars: []string{"MUSETALK_LOG_LEVEL"}},
		},
		Commands: []*cli.Command{
			upCommand(),
			submitCommand(),
			renderCommand(),
			controlCommand(),
			workerCommand(),
			weightsCommand(),
			benchCommand(),
			devCommand(),
		},
		EnableBashCompletion: true,
	}
	// The CUDA build adds its hidden gpu-probe command (device_cuda.go).
	if p, ok := any(buildDevices{}).(interface{ gpuProbeCommand() *cli.Command }); ok {
		app.Commands = append(app.Commands, p.gpuProbeCommand())
	}
	return app
}

// logger builds the process logger from the global flags; logs go to stderr.
func logger(c *cli.Context) (*slog.Logger, error) {
	return telemetry.NewLogger(os.Stderr, c.String("log-format"), c.String("log-level"))
}

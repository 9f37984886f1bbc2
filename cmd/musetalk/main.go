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

// version is set at link time (-ldflags "-X main.version=...").
var version = "dev"

// gcPercent replaces Go's default GOGC of 100 unless GOGC is set. The
// networks' weights are a large, long-lived, pointer-free heap (over 10 GB
// at full size on the CPU backend) while the garbage is per-frame images
// and buffers; GOGC=100 lets the heap grow to twice the live size before
// collecting (a full-size CPU render peaked at 22.5 GB). Pointer-free
// memory is not scanned, so collecting at 25 % growth costs little.
const gcPercent = 25

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	if err := newApp().RunContext(context.Background(), os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "musetalk:", err)
		os.Exit(1)
	}
}

func newApp() *cli.App {
	return &cli.App{
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
}

// logger builds the process logger from the global flags; logs go to stderr.
func logger(c *cli.Context) (*slog.Logger, error) {
	return telemetry.NewLogger(os.Stderr, c.String("log-format"), c.String("log-level"))
}

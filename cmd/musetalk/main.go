// Command musetalk is the one binary of the system: the control plane, the
// worker, and the tools around them. Each subcommand is a thin layer over a
// library package; run `musetalk help` or `musetalk <command> --help`.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/avatargen/musetalk/telemetry"
)

// version is set at link time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
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

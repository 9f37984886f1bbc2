package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/avatargen/musetalk/blob/b2test"
)

// devCommand groups tools for tests and local trials; hidden from help.
func devCommand() *cli.Command {
	return &cli.Command{
		Name:   "dev",
		Usage:  "tools for tests and local trials",
		Hidden: true,
		Subcommands: []*cli.Command{{
			Name:  "b2-server",
			Usage: "serve an in-memory B2 (the subset blazer uses, with fault injection under /_b2test/)",
			Description: `Prints one JSON line {"url","key_id","app_key","bucket"} on stdout
once it listens, then serves until SIGINT or SIGTERM. Point workers and the
control plane at it with B2_ENDPOINT=<url>.`,
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "addr", Value: "127.0.0.1:0", Usage: "listen address"},
				&cli.StringFlag{Name: "key-id", Value: "b2test-key-id", Usage: "application key id"},
				&cli.StringFlag{Name: "app-key", Usage: "application key (default: random)"},
				&cli.StringFlag{Name: "bucket", Value: "b2test-bucket", Usage: "bucket to create"},
				&cli.Int64Flag{Name: "min-part-size", Value: 5_000_000, Usage: "smallest large-file part accepted"},
			},
			Action: func(c *cli.Context) error {
				ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
				defer stop()
				cfg := b2test.Config{KeyID: c.String("key-id"), AppKey: c.String("app-key"),
					Buckets: []string{c.String("bucket")}, MinPartSize: c.Int64("min-part-size")}
				return b2test.ListenAndServe(ctx, c.String("addr"), cfg, func(s *b2test.Server) {
					line, _ := json.Marshal(map[string]string{"url": s.URL, "key_id": s.KeyID, "app_key": s.AppKey, "bucket": s.Bucket})
					fmt.Fprintln(c.App.Writer, string(line))
				})
			},
		}},
	}
}

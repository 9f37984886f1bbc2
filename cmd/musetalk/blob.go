package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/avatargen/musetalk/blob"
	"github.com/avatargen/musetalk/blob/b2"
)

// blobFlags are the object-store settings shared by control and worker:
// B2 when its three variables are set (as in the deployed fleet), else a
// local directory.
func blobFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "blob-dir", Usage: "local object directory, used when B2 is not configured (default: <data-dir>/blobs)", EnvVars: []string{"MUSETALK_BLOB_DIR"}},
		&cli.StringFlag{Name: "b2-bucket", Usage: "Backblaze B2 bucket name", EnvVars: []string{"B2_BUCKET_NAME"}},
		&cli.StringFlag{Name: "b2-key-id", Usage: "Backblaze B2 application key id", EnvVars: []string{"B2_KEY_ID"}},
		&cli.StringFlag{Name: "b2-app-key", Usage: "Backblaze B2 application key (secret)", EnvVars: []string{"B2_APP_KEY"}},
		&cli.StringFlag{Name: "b2-endpoint", Usage: "B2 authorization API base URL override (tests)", EnvVars: []string{"B2_ENDPOINT"}},
	}
}

// b2Configured reports whether any B2 setting is present.
func b2Configured(c *cli.Context) bool {
	return c.String("b2-bucket") != "" || c.String("b2-key-id") != "" || c.String("b2-app-key") != ""
}

// openBlob opens B2 when configured, else the directory (--blob-dir, or
// defaultDir). It returns a description of the store without secrets.
func openBlob(ctx context.Context, c *cli.Context, defaultDir string) (blob.Store, string, error) {
	if b2Configured(c) {
		cfg := b2.Config{
			KeyID:    c.String("b2-key-id"),
			AppKey:   c.String("b2-app-key"),
			Bucket:   c.String("b2-bucket"),
			Endpoint: c.String("b2-endpoint"),
		}
		switch {
		case cfg.Bucket == "":
			return nil, "", errors.New("B2_BUCKET_NAME is required when B2_KEY_ID or B2_APP_KEY is set")
		case cfg.KeyID == "":
			return nil, "", errors.New("B2_KEY_ID is required when B2_BUCKET_NAME is set")
		case cfg.AppKey == "":
			return nil, "", errors.New("B2_APP_KEY is required when B2_BUCKET_NAME is set")
		}
		s, err := b2.New(ctx, cfg)
		if err != nil {
			return nil, "", fmt.Errorf("opening B2 bucket %s: %w", cfg.Bucket, err)
		}
		return s, "b2:" + cfg.Bucket, nil
	}
	dir := c.String("blob-dir")
	if dir == "" {
		dir = defaultDir
	}
	s, err := blob.NewDir(dir)
	if err != nil {
		return nil, "", fmt.Errorf("opening object directory %s: %w", dir, err)
	}
	return s, "dir:" + dir, nil
}

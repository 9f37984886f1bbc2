package control

import (
	"strings"
	"testing"
	"time"
)

func TestConfig(t *testing.T) {
	t.Parallel()
	b := setup(t)
	base := b.cfg
	base.Store = b.store
	cases := []struct {
		name   string
		mod    func(*Config)
		naming string
	}{
		{"no store", func(c *Config) { c.Store = nil }, "Store"},
		{"no blob", func(c *Config) { c.Blob = nil }, "Blob"},
		{"no internal key", func(c *Config) { c.InternalAPIKey = "" }, "InternalAPIKey"},
		{"empty public key", func(c *Config) { c.PublicAPIKeys = []string{"a", ""} }, "PublicAPIKeys[1]"},
		{"public equals internal", func(c *Config) { c.PublicAPIKeys = []string{testInternalKey} }, "PublicAPIKeys[0]"},
		{"negative interval", func(c *Config) { c.HeartbeatInterval = -time.Second }, "HeartbeatInterval"},
		{"negative stall", func(c *Config) { c.StallTimeout = -1 }, "StallTimeout"},
		{"short lease", func(c *Config) { c.LeaseDuration = time.Second }, "LeaseDuration"},
		{"backoff max below base", func(c *Config) { c.BackoffBase = time.Minute; c.BackoffMax = time.Second }, "BackoffMax"},
		{"negative failures", func(c *Config) { c.MaxFailures = -1 }, "MaxFailures"},
		{"negative upload", func(c *Config) { c.MaxUploadBytes = -1 }, "MaxUploadBytes"},
	}
	for _, c := range cases {
		cfg := base
		c.mod(&cfg)
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), c.naming) {
			t.Errorf("%s: error %v does not name %s", c.name, err, c.naming)
		}
	}
	srv, err := New(Config{Store: b.store, Blob: b.blobs, InternalAPIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	c := srv.cfg
	if c.HeartbeatInterval != 5*time.Second || c.LeaseDuration != 15*time.Second || c.OfflineAfter != 15*time.Second ||
		c.SweepInterval != 5*time.Second || c.StallTimeout != 0 || c.MaxInterruptions != 5 || c.MaxFailures != 3 ||
		c.BackoffBase != 2*time.Second || c.BackoffMax != 5*time.Minute || c.MaxUploadBytes != 512<<20 ||
		c.Logger == nil || c.TracerProvider == nil || c.Now == nil {
		t.Fatalf("defaults: %+v", c)
	}
}

package control

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/avatargen/musetalk/blob"
	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/control/store/postgres"
	"github.com/avatargen/musetalk/control/store/sqlite"
	"github.com/avatargen/musetalk/internal/testenv"
	"github.com/avatargen/musetalk/protocol"
)

// postgresURLEnv names the PostgreSQL server of the tests (scripts/test
// sets it).
const postgresURLEnv = "MUSETALK_TEST_POSTGRES_URL"

// openPostgres opens a store in a fresh schema of the test server, dropped
// when the test ends. Without a server it skips (fails under CI).
func openPostgres(t *testing.T) store.Store {
	t.Helper()
	url := os.Getenv(postgresURLEnv)
	if url == "" {
		testenv.Missing(t, "%s is not set; set it to a PostgreSQL URL to run the PostgreSQL half of this test", postgresURLEnv)
	}
	ctx := context.Background()
	var rb [8]byte
	rand.Read(rb[:])
	schema := "controltest_" + hex.EncodeToString(rb[:])
	exec := func(sql string) {
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatalf("connecting to %s: %v", postgresURLEnv, err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec(`CREATE SCHEMA ` + schema)
	t.Cleanup(func() { exec(`DROP SCHEMA ` + schema + ` CASCADE`) })
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	cfg.MaxConns = 4
	st, err := postgres.OpenConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("opening PostgreSQL store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// setupStore is setup over the given store (any driver).
func setupStore(t *testing.T, st store.Store) *testBundle {
	t.Helper()
	blobs, err := blob.NewDir(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { blobs.Close() })
	b := &testBundle{t: t, blobs: blobs, logs: &syncBuffer{},
		clock: &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}}
	b.cfg = Config{
		Store: st, Blob: blobs, Now: b.clock.Now, RandSource: mrand.NewPCG(1, 2),
		Logger:         slog.New(slog.NewTextHandler(b.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		InternalAPIKey: testInternalKey, PublicAPIKeys: []string{testPublicKey}, HeartbeatInterval: testInterval,
	}
	if b.srv, err = New(b.cfg); err != nil {
		t.Fatal(err)
	}
	b.ts = httptest.NewServer(b.srv.Handler())
	t.Cleanup(b.ts.Close)
	return b
}

// A NUL byte (or invalid UTF-8) in the free text a worker sends is stored
// as U+FFFD on both stores: PostgreSQL used to answer 500 ("invalid byte
// sequence for encoding UTF8: 0x00") where SQLite accepted it, so a worker
// whose error text held one could not report its failure.
func TestWorkerTextWithNUL(t *testing.T) {
	t.Parallel()
	for name, open := range map[string]func(t *testing.T) store.Store{
		"sqlite": func(t *testing.T) store.Store {
			st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "control.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			return st
		},
		"postgres": openPostgres,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setupStore(t, open(t))
			const fffd = "\uFFFD"
			// JSON "\u0000" decodes to a NUL byte.
			raw := `{"status":"idle","provider":"salad\u0000","gpu_class":"RTX\u00003060","worker_type":"main","version":"1.0\u0000"}`
			status, data := b.call("POST", protocol.Path(protocol.HeartbeatRoute, "w1"), testInternalKey, raw, nil)
			if status != http.StatusOK {
				t.Fatalf("heartbeat with NUL bytes: %d %s", status, data)
			}
			if w := b.worker("w1"); w.Provider != "salad"+fffd || w.GPUClass != "RTX"+fffd+"3060" || w.Version != "1.0"+fffd {
				t.Errorf("registry entry %+v: want each NUL as U+FFFD", w)
			}

			job := b.submit(protocol.SubmitRequest{})
			a := b.claim("w1")
			body := `{"attempt":1,"token":"` + a.Token + `","error":"CUDA error\u0000: illegal address","retryable":true}`
			if status, data := b.attemptCall(protocol.FailRoute, job.ID, body); status != http.StatusOK {
				t.Fatalf("fail with a NUL in the error: %d %s", status, data)
			}
			v := b.getJob(job.ID)
			if want := "CUDA error" + fffd + ": illegal address"; v.Failures != 1 || v.Attempts[0].Error != want || v.Error != want {
				t.Errorf("after fail: failures %d, error %q, attempt error %q; want 1 and %q", v.Failures, v.Error, v.Attempts[0].Error, want)
			}

			b.clock.Advance(time.Hour) // past the retry's backoff
			a = b.claim("w1")
			if a == nil || a.Attempt != 2 {
				t.Fatalf("second claim: %+v", a)
			}
			body = `{"attempt":2,"token":"` + a.Token + `","reason":"draining\u0000now"}`
			if status, data := b.attemptCall(protocol.ReleaseRoute, job.ID, body); status != http.StatusOK {
				t.Fatalf("release with a NUL in the reason: %d %s", status, data)
			}
			if got := b.getJob(job.ID).Attempts[1]; got.Outcome != protocol.OutcomeReleased || got.Error != "draining"+fffd+"now" {
				t.Errorf("released attempt %+v", got)
			}
			if strings.Contains(b.logs.String(), "level=ERROR") {
				t.Errorf("errors logged:\n%s", b.logs.String())
			}
		})
	}
}

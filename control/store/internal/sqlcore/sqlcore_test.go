package sqlcore

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	_ "modernc.org/sqlite"
)

func TestRebind(t *testing.T) {
	d := &Dialect{DollarPlaceholders: true}
	got := d.rebind(`SELECT a FROM t WHERE b = ? AND c = '?' AND d IN (?, ?)`)
	want := `SELECT a FROM t WHERE b = $1 AND c = '?' AND d IN ($2, $3)`
	if got != want {
		t.Errorf("rebind = %s, want %s", got, want)
	}
	plain := &Dialect{}
	if q := `SELECT ?`; plain.rebind(q) != q {
		t.Errorf("rebind without dollar placeholders changed %q", q)
	}
}

func TestLoadMigrationsRejectsBadNames(t *testing.T) {
	for name, files := range map[string]fstest.MapFS{
		"no number": {"init.sql": {Data: []byte("SELECT 1")}},
		"zero":      {"0000_init.sql": {Data: []byte("SELECT 1")}},
		"duplicate": {"0001_a.sql": {Data: []byte("SELECT 1")}, "1_b.sql": {Data: []byte("SELECT 1")}},
	} {
		if _, err := LoadMigrations(files); err == nil {
			t.Errorf("%s: LoadMigrations succeeded", name)
		}
	}
	ms, err := LoadMigrations(fstest.MapFS{
		"0010_c.sql": {Data: []byte("c")}, "0002_b.sql": {Data: []byte("b")}, "README": {Data: []byte("x")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].Version != 2 || ms[1].Version != 10 {
		t.Errorf("LoadMigrations = %+v, want versions 2 and 10 in order", ms)
	}
}

// openWith runs New over a SQLite file with the given migrations.
func openWith(t *testing.T, path string, migrations fstest.MapFS) (*Store, error) {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	s, err := New(context.Background(), Config{
		Dialect: Dialect{Name: "sqlite", EncodeTime: func(t time.Time) any { return t.UnixMicro() }, Migrations: migrations},
		Write:   db, Read: db,
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	t.Cleanup(func() { s.Close() })
	return s, nil
}

func TestMigrateAppliesOnlyMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.db")
	// Neither migration can run twice: CREATE TABLE without IF NOT EXISTS.
	v1 := fstest.MapFS{"0001_a.sql": {Data: []byte("CREATE TABLE a (x INTEGER); INSERT INTO a VALUES (1);")}}
	v2 := fstest.MapFS{
		"0001_a.sql": v1["0001_a.sql"],
		"0002_b.sql": {Data: []byte("CREATE TABLE b (y INTEGER); INSERT INTO a VALUES (2);")},
	}
	if _, err := openWith(t, path, v1); err != nil {
		t.Fatalf("first open: %v", err)
	}
	if _, err := openWith(t, path, v1); err != nil {
		t.Fatalf("reopening with the same migrations: %v", err)
	}
	s, err := openWith(t, path, v2)
	if err != nil {
		t.Fatalf("opening with a new migration: %v", err)
	}
	var n, versions int
	if err := s.w.QueryRow(`SELECT COUNT(*) FROM a`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if err := s.w.QueryRow(`SELECT COUNT(*) FROM schema_migrations`).Scan(&versions); err != nil {
		t.Fatal(err)
	}
	if n != 2 || versions != 2 {
		t.Errorf("rows in a = %d, migrations recorded = %d; want 2 and 2", n, versions)
	}
	// An older program refuses a newer schema.
	_, err = openWith(t, path, v1)
	if err == nil || !strings.Contains(err.Error(), "newer") {
		t.Errorf("opening a newer schema with older migrations: %v, want an error saying it is newer", err)
	}
}

func TestMigrateFailureRollsBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.db")
	bad := fstest.MapFS{
		"0001_a.sql": {Data: []byte("CREATE TABLE a (x INTEGER);")},
		"0002_b.sql": {Data: []byte("CREATE TABLE oops (")},
	}
	_, err := openWith(t, path, bad)
	if err == nil || !strings.Contains(err.Error(), "0002_b.sql") {
		t.Fatalf("open with a broken migration: %v, want an error naming 0002_b.sql", err)
	}
	// Nothing of the transaction stayed: 0001 applies cleanly again.
	if _, err := openWith(t, path, fstest.MapFS{"0001_a.sql": bad["0001_a.sql"]}); err != nil {
		t.Fatalf("open after a failed migration: %v", err)
	}
}

package sqlcore

import (
	"context"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Migration is one numbered schema change.
type Migration struct {
	Version int
	Name    string // file name, e.g. 0001_init.sql
	SQL     string
}

// LoadMigrations reads NNNN_name.sql files from the root of fsys, ordered
// by version. Versions must be positive and unique.
func LoadMigrations(fsys fs.FS) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("reading migrations: %w", err)
	}
	var out []Migration
	seen := map[int]string{}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || path.Ext(name) != ".sql" {
			continue
		}
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must start with a positive number and _, like 0001_init.sql", name)
		}
		if prev, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %s and %s share version %d", prev, name, v)
		}
		seen[v] = name
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("reading migration %s: %w", name, err)
		}
		out = append(out, Migration{Version: v, Name: name, SQL: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// migrate applies, in one transaction, the migrations that the
// schema_migrations table does not list yet. The dialect's MigrationLock
// keeps replicas that start together from racing.
func (s *Store) migrate(ctx context.Context) error {
	all, err := LoadMigrations(s.d.Migrations)
	if err != nil {
		return err
	}
	err = s.write(ctx, func(t *tx) error {
		if s.d.MigrationLock != "" {
			if _, err := t.ExecContext(ctx, s.d.MigrationLock); err != nil {
				return fmt.Errorf("taking the migration lock: %w", err)
			}
		}
		// Migrations run unprepared (t.Tx): they are never run again.
		if _, err := t.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    INTEGER NOT NULL PRIMARY KEY,
	name       TEXT    NOT NULL,
	applied_at TEXT    NOT NULL
)`); err != nil {
			return fmt.Errorf("creating schema_migrations: %w", err)
		}
		applied := map[int]bool{}
		rows, err := t.QueryContext(ctx, `SELECT version FROM schema_migrations`)
		if err != nil {
			return fmt.Errorf("reading schema_migrations: %w", err)
		}
		versions, err := collect(rows, func(r scanner) (int, error) {
			var v int
			return v, r.Scan(&v)
		})
		if err != nil {
			return fmt.Errorf("reading schema_migrations: %w", err)
		}
		newest := 0
		for _, v := range versions {
			applied[v] = true
			newest = max(newest, v)
		}
		if len(all) > 0 && newest > all[len(all)-1].Version {
			return fmt.Errorf("the database's schema version %d is newer than this program's (%d); upgrade the program",
				newest, all[len(all)-1].Version)
		}
		for _, m := range all {
			if applied[m.Version] {
				continue
			}
			if _, err := t.ExecContext(ctx, m.SQL); err != nil {
				return fmt.Errorf("applying migration %s: %w", m.Name, err)
			}
			if _, err := t.ExecContext(ctx, s.d.rebind(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`),
				m.Version, m.Name, time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
				return fmt.Errorf("recording migration %s: %w", m.Name, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("migrating the %s schema: %w", s.d.Name, err)
	}
	return nil
}

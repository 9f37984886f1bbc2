// Package sqlcore implements store.Store once, over database/sql, for every
// SQL database the control plane supports. A driver package (sqlite,
// postgres) supplies a Dialect describing what differs between databases
// (placeholders, row locks, time encoding, migration locking, retryable
// errors) and its embedded migrations, and wraps the resulting Store.
//
// Every write runs in one transaction. Rows that a transition reads before
// it writes are locked (SELECT ... FOR UPDATE where the database has row
// locks; SQLite's BEGIN IMMEDIATE serialises writers instead), and every
// transition of a running attempt is still a conditional UPDATE on
// state, attempt and token, so concurrent callers on any number of
// replicas change each job at most once.
package sqlcore

import (
	"io/fs"
	"strconv"
	"strings"
	"time"
)

// Dialect describes one SQL database.
type Dialect struct {
	// Name is used in error messages ("sqlite", "postgres").
	Name string
	// DollarPlaceholders: rewrite the ? placeholders of the shared queries
	// into $1, $2, ... .
	DollarPlaceholders bool
	// RowLocks: the database supports SELECT ... FOR UPDATE [SKIP LOCKED].
	// Without row locks, write transactions must be serialised by the
	// database (SQLite's BEGIN IMMEDIATE).
	RowLocks bool
	// EncodeTime turns a UTC time, already truncated to microseconds, into
	// the value stored in a timestamp column. Scanning accepts both int64
	// Unix microseconds and time.Time.
	EncodeTime func(time.Time) any
	// CacheStatements: keep prepared statements per query text (for
	// databases whose driver parses on every query; pgx caches by itself).
	CacheStatements bool
	// GroupCommit: write transactions that wait for the (single) writer
	// are run together in one database transaction, each in a savepoint of
	// its own, and committed once (for databases that serialise writers
	// anyway, where the commit is most of a small transaction's cost). Each
	// keeps its own atomicity and outcome; none is reported before the
	// shared commit.
	GroupCommit bool
	// Arrays: the database takes arrays as query parameters (PostgreSQL's
	// ?::text[], = ANY, unnest). Heartbeats that arrive together are then
	// saved together, a few statements for the whole batch.
	Arrays bool
	// ModifyingCTEs: the database runs INSERT and UPDATE inside WITH
	// (PostgreSQL); a claim and a complete are then one statement each
	// (fastpath.go).
	ModifyingCTEs bool
	// MigrationLock, if not empty, is run first in the migration
	// transaction; it must block concurrent migrations of the same schema.
	MigrationLock string
	// Retryable reports errors after which the whole transaction may be
	// run again (deadlock, serialisation failure, busy database).
	Retryable func(error) bool
	// Migrations holds the numbered migration files, NNNN_name.sql, at its
	// root.
	Migrations fs.FS
}

// rebind rewrites ? placeholders to the dialect's form. Placeholders in
// quoted strings are left alone.
func (d *Dialect) rebind(q string) string {
	if !d.DollarPlaceholders || !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 16)
	n := 0
	quoted := false
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c == '\'':
			quoted = !quoted
		case c == '?' && !quoted:
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// forUpdate returns the clause that locks the rows a SELECT returns, or ""
// where writers are serialised by the database.
func (d *Dialect) forUpdate() string {
	if d.RowLocks {
		return " FOR UPDATE"
	}
	return ""
}

// skipLocked is forUpdate that passes over rows other transactions hold.
func (d *Dialect) skipLocked() string {
	if d.RowLocks {
		return " FOR UPDATE SKIP LOCKED"
	}
	return ""
}

// placeholders returns "?, ?, ?" for n values.
func placeholders(n int) string {
	if n == 0 {
		return ""
	}
	return strings.Repeat("?, ", n-1) + "?"
}

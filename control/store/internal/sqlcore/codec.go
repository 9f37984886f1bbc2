package sqlcore

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/protocol"
)

// text is store.SanitizeText: free text storable in every database.
func text(s string) string { return store.SanitizeText(s) }

// Stored times have microsecond precision and are returned in UTC.
func norm(t time.Time) time.Time { return t.Truncate(time.Microsecond).UTC() }

// ts encodes a time for a query argument.
func (s *Store) ts(t time.Time) any { return s.d.EncodeTime(norm(t)) }

// tsPtr encodes an optional time; nil becomes NULL.
func (s *Store) tsPtr(t *time.Time) any {
	if t == nil {
		return nil
	}
	return s.ts(*t)
}

// timeDest scans a NOT NULL timestamp column.
type timeDest struct{ t *time.Time }

func (d timeDest) Scan(v any) error {
	switch x := v.(type) {
	case int64:
		*d.t = time.UnixMicro(x).UTC()
	case time.Time:
		*d.t = x.UTC()
	default:
		return fmt.Errorf("scanning a timestamp: unexpected %T", v)
	}
	return nil
}

// nullTimeDest scans a nullable timestamp column into a *time.Time.
type nullTimeDest struct{ t **time.Time }

func (d nullTimeDest) Scan(v any) error {
	if v == nil {
		*d.t = nil
		return nil
	}
	var t time.Time
	if err := (timeDest{&t}).Scan(v); err != nil {
		return err
	}
	*d.t = &t
	return nil
}

// encodeJSON returns v as JSON text.
func encodeJSON(what string, v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("encoding %s: %w", what, err)
	}
	return string(b), nil
}

// progressArg encodes an optional progress; nil becomes NULL.
func progressArg(p *protocol.Progress) (any, error) {
	if p == nil {
		return nil, nil
	}
	return encodeJSON("progress", p)
}

// traceArg encodes trace context; an empty map is stored as "".
func traceArg(m map[string]string) (string, error) {
	if len(m) == 0 {
		return "", nil
	}
	return encodeJSON("trace context", m)
}

// decodeProgress reads a nullable progress column.
func decodeProgress(s sql.NullString) (*protocol.Progress, error) {
	if !s.Valid || s.String == "" {
		return nil, nil
	}
	var p protocol.Progress
	if err := json.Unmarshal([]byte(s.String), &p); err != nil {
		return nil, fmt.Errorf("decoding stored progress: %w", err)
	}
	return &p, nil
}

// decodeTrace reads the trace context column.
func decodeTrace(s string) (map[string]string, error) {
	if s == "" {
		return nil, nil
	}
	var m map[string]string
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, fmt.Errorf("decoding stored trace context: %w", err)
	}
	return m, nil
}

func sameProgress(a, b *protocol.Progress) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// delay is the backoff for the count'th retry; nil and negative mean none.
func delay(b func(int) time.Duration, count int) time.Duration {
	if b == nil {
		return 0
	}
	return max(b(count), 0)
}

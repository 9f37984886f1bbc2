package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestLedger(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

	l := newLedger()
	l.claimed("j1", 1, "w1", at(0))
	l.accepted("heartbeat", "j1", 1, at(10))
	// The lease lapsed; attempt 2 went to w2 at 100 ms.
	l.claimed("j1", 2, "w2", at(100))
	// A heartbeat of attempt 1 sent before that claim was answered may
	// still be accepted: the calls overlapped.
	l.accepted("heartbeat", "j1", 1, at(90))
	l.completed("j1", 2, at(150))
	if s := l.summary(); s.Violations != 0 || s.Jobs != 1 || s.Claims != 2 || s.Completes != 1 || s.Reclaimed != 1 {
		t.Fatalf("clean history: %+v", s)
	}

	for _, c := range []struct {
		name, want string
		run        func(l *ledger)
	}{
		{"same attempt twice", "double claim", func(l *ledger) {
			l.claimed("j1", 1, "w1", at(0))
			l.claimed("j1", 1, "w2", at(5))
		}},
		{"old attempt accepted after a newer claim", "concurrent holders", func(l *ledger) {
			l.claimed("j1", 1, "w1", at(0))
			l.claimed("j1", 2, "w2", at(100))
			l.accepted("upload", "j1", 1, at(101))
		}},
		{"completed twice", "double completion", func(l *ledger) {
			l.claimed("j1", 1, "w1", at(0))
			l.completed("j1", 1, at(10))
			l.completed("j1", 1, at(20))
		}},
		{"claimed after completion", "claim after completion", func(l *ledger) {
			l.claimed("j1", 1, "w1", at(0))
			l.completed("j1", 1, at(10))
			l.claimed("j1", 2, "w2", at(20))
		}},
		{"call of an unclaimed job", "no claim", func(l *ledger) {
			l.accepted("heartbeat", "j9", 1, at(0))
		}},
	} {
		l := newLedger()
		c.run(l)
		s := l.summary()
		if s.Violations == 0 || !strings.Contains(strings.Join(s.Details, "\n"), c.want) {
			t.Errorf("%s: violations %d %q; want one naming %q", c.name, s.Violations, s.Details, c.want)
		}
	}
}

func TestHistogram(t *testing.T) {
	var h Histogram
	if h.Quantile(0.5) != 0 || h.Max() != 0 || h.Mean() != 0 {
		t.Fatal("empty histogram reports values")
	}
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.99, 990 * time.Microsecond}, {1, 1000 * time.Microsecond}} {
		got := h.Quantile(c.q)
		if d := float64(got-c.want) / float64(c.want); d < -0.02 || d > 0.02 {
			t.Errorf("Quantile(%v) = %v, want %v ± 2%%", c.q, got, c.want)
		}
	}
	if h.Max() != time.Millisecond || h.Count() != 1000 {
		t.Errorf("max %v count %d", h.Max(), h.Count())
	}
	if m := h.Mean(); m < 500*time.Microsecond || m > 501*time.Microsecond {
		t.Errorf("mean %v", m)
	}
	// Every bucket's middle maps back to the bucket.
	for i := range numBuckets {
		if b := bucketOf(bucketMid(i)); b != i {
			t.Fatalf("bucketOf(bucketMid(%d)) = %d", i, b)
		}
	}
}

// TestConn checks the generator's HTTP/1.1 client against net/http's
// server: fixed-length, chunked and empty answers, errors with their
// codes, a server that closes the connection, and cancellation.
func TestConn(t *testing.T) {
	big := strings.Repeat("x", 10000)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/echo":
			w.Header().Set("X-Auth", r.Header.Get("Authorization"))
			fmt.Fprintf(w, `{"method":%q,"body":%q,"h":%q}`, r.Method, body, r.Header.Get("Musetalk-Token"))
		case "/chunked":
			w.Write([]byte(`{"body":"`))
			w.(http.Flusher).Flush()
			w.Write([]byte(big + `"}`))
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/stale":
			w.WriteHeader(http.StatusConflict)
			w.Write([]byte(`{"error":{"code":"stale_token","message":"gone"}}`))
		case "/close":
			w.Header().Set("Connection", "close")
			w.Write([]byte(`{"body":"closed"}`))
		case "/slow":
			<-r.Context().Done()
		}
	}))
	defer ts.Close()
	base, err := parseBase(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	c := newConn(base, "k1")
	defer c.close()
	ctx := context.Background()
	var out struct{ Method, Body, H string }
	for range 3 { // one connection, reused
		if st, err := c.do(ctx, http.MethodPut, "/echo", "text/plain", []byte("hello"), []header{{"Musetalk-Token", "tok"}}, &out); err != nil || st != 200 {
			t.Fatalf("echo: %d %v", st, err)
		}
		if out.Method != "PUT" || out.Body != "hello" || out.H != "tok" {
			t.Fatalf("echo answered %+v", out)
		}
	}
	if st, err := c.postJSON(ctx, "/chunked", map[string]int{"a": 1}, &out); err != nil || st != 200 || out.Body != big {
		t.Fatalf("chunked: %d %v, body of %d bytes", st, err, len(out.Body))
	}
	if st, err := c.postJSON(ctx, "/empty", nil, &out); err != nil || st != http.StatusNoContent {
		t.Fatalf("empty: %d %v", st, err)
	}
	if _, err := c.postJSON(ctx, "/stale", nil, nil); !stale(err) {
		t.Fatalf("stale: %v", err)
	}
	for range 2 { // the server closes; the next call dials again
		if st, err := c.postJSON(ctx, "/close", nil, &out); err != nil || st != 200 || out.Body != "closed" {
			t.Fatalf("close: %d %v %+v", st, err, out)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := c.postJSON(cctx, "/slow", nil, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow call with a deadline: %v", err)
	}
	if st, err := c.postJSON(ctx, "/empty", nil, nil); err != nil || st != http.StatusNoContent {
		t.Fatalf("after a cancelled call: %d %v", st, err)
	}
	if _, err := parseBase("ftp://x"); err == nil {
		t.Error("parseBase accepted ftp://")
	}
}

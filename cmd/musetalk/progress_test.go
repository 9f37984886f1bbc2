package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/avatargen/musetalk/protocol"
)

// barClock is a clock the test moves by hand.
type barClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *barClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *barClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestProgressBarPlainPrintsStagesAndTenths(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	clock := &barClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	b := newProgressBarMode(&out, false, clock.now)

	b.Update(protocol.Progress{Stage: "prepare"})
	for i := 0; i <= 100; i++ {
		clock.add(100 * time.Millisecond)
		b.Update(protocol.Progress{Stage: "render", FramesDone: i, FramesTotal: 100})
	}
	b.Update(protocol.Progress{Stage: "render", FramesDone: 100, FramesTotal: 100}) // repeat: nothing new
	b.Update(protocol.Progress{Stage: "mux"})
	b.Done()
	b.Update(protocol.Progress{Stage: "after done"})

	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	// prepare, render at 0 %, one per 10 % step (10 of them), mux.
	if len(lines) != 13 {
		t.Fatalf("got %d lines, want 13:\n%s", len(lines), out.String())
	}
	if !strings.HasPrefix(lines[0], "prepare: elapsed 0:00") {
		t.Errorf("first line %q", lines[0])
	}
	if !strings.HasPrefix(lines[1], "render 0/100 frames   0%") {
		t.Errorf("render start line %q", lines[1])
	}
	// 50 frames took 5 s after the stage began, so 50 more take 5 s.
	if want := "render 50/100 frames  50%, elapsed 0:05, ETA 0:05"; lines[6] != want {
		t.Errorf("halfway line %q, want %q", lines[6], want)
	}
	if want := "render 100/100 frames 100%, elapsed 0:10, ETA 0:00"; lines[11] != want {
		t.Errorf("last render line %q, want %q", lines[11], want)
	}
	if !strings.HasPrefix(lines[12], "mux: elapsed 0:10") {
		t.Errorf("mux line %q", lines[12])
	}
	if strings.Contains(out.String(), "\r") || strings.Contains(out.String(), "after done") {
		t.Errorf("plain output has a carriage return or an update after Done:\n%q", out.String())
	}
}

func TestProgressBarTerminalRedrawsOneLine(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	clock := &barClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	b := newProgressBarMode(&out, true, clock.now)

	b.Update(protocol.Progress{Stage: "render", FramesDone: 0, FramesTotal: 40})
	clock.add(2 * time.Second)
	b.Update(protocol.Progress{Stage: "render", FramesDone: 10, FramesTotal: 40})
	b.Update(protocol.Progress{Stage: "mux"})
	b.Done()
	b.Done()

	s := out.String()
	if strings.Count(s, "\n") != 1 || !strings.HasSuffix(s, "\n") {
		t.Fatalf("want exactly one newline, at the end: %q", s)
	}
	draws := strings.Split(strings.TrimSuffix(s, "\n"), "\r")[1:]
	if len(draws) != 3 {
		t.Fatalf("got %d draws, want 3: %q", len(draws), s)
	}
	if want := "render [######..................] 10/40 frames  25%, elapsed 0:02, ETA 0:06"; draws[1] != want {
		t.Errorf("second draw %q, want %q", draws[1], want)
	}
	// The shorter mux line must blank the rest of the longer render line.
	if len(draws[2]) != len(draws[1]) || !strings.HasPrefix(draws[2], "mux: elapsed 0:02") {
		t.Errorf("third draw %q does not cover the previous line", draws[2])
	}
	if !strings.Contains(draws[0], "ETA --") {
		t.Errorf("first draw %q should have no ETA yet", draws[0])
	}
}

func TestProgressBarRefreshMovesTheClock(t *testing.T) {
	t.Parallel()
	for _, tty := range []bool{true, false} {
		var out bytes.Buffer
		clock := &barClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
		b := newProgressBarMode(&out, tty, clock.now)
		b.Refresh() // nothing to show yet
		if out.Len() != 0 {
			t.Fatalf("tty=%v: Refresh before any Update wrote %q", tty, out.String())
		}
		b.Update(protocol.Progress{Stage: "load"})
		clock.add(75 * time.Second)
		b.Refresh()
		b.Done()
		b.Refresh()
		s := out.String()
		if tty && !strings.HasSuffix(s, "\rload: elapsed 1:15\n") {
			t.Errorf("terminal output %q does not end with the refreshed line", s)
		}
		if !tty && s != "load: elapsed 0:00\n" {
			t.Errorf("plain output %q: Refresh must not add lines", s)
		}
	}
}

func TestProgressBarRestartedStageResetsRate(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	clock := &barClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	b := newProgressBarMode(&out, false, clock.now)
	b.Update(protocol.Progress{Stage: "render", FramesDone: 80, FramesTotal: 100})
	clock.add(time.Minute)
	// A retry starts the stage again from the beginning.
	b.Update(protocol.Progress{Stage: "render", FramesDone: 5, FramesTotal: 100})
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	if len(lines) != 2 || !strings.HasSuffix(lines[1], "ETA --") {
		t.Fatalf("restart not shown as a new stage: %q", lines)
	}
}

func TestProgressBarConcurrentUpdates(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	b := newProgressBarMode(&out, true, time.Now)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				b.Update(protocol.Progress{Stage: "render", FramesDone: i, FramesTotal: 100})
			}
		}()
	}
	wg.Wait()
	b.Done()
	if !strings.HasSuffix(out.String(), "\n") {
		t.Fatal("Done did not end the line")
	}
}

func TestIsTerminal(t *testing.T) {
	t.Parallel()
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if isTerminal(f) {
		t.Error("a regular file is not a terminal")
	}
	if isTerminal(&bytes.Buffer{}) {
		t.Error("a buffer is not a terminal")
	}
}

func TestFormatDuration(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0:00"}, {-time.Second, "0:00"}, {1499 * time.Millisecond, "0:01"},
		{61 * time.Second, "1:01"}, {time.Hour + 2*time.Minute + 3*time.Second, "1:02:03"},
	} {
		if got := formatDuration(c.d); got != c.want {
			t.Errorf("formatDuration(%v) = %q, want %q", c.d, got, c.want)
		}
	}
}

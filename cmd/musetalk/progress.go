package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/avatargen/musetalk/protocol"
)

// progressBarWidth is the number of cells in the drawn bar.
const progressBarWidth = 24

// progressBar shows a job's progress on one writer, usually stderr. On a
// terminal it keeps one line and redraws it in place ("\r") with the stage,
// frames done/total, the percentage, the elapsed time and an ETA; anywhere
// else (a file, a pipe, a CI log) it prints a plain line when the stage
// changes and each time another 10 % of the stage's frames is done.
//
// Update, Refresh and Done may be called from any goroutine. After Done,
// Update and Refresh do nothing.
type progressBar struct {
	w   io.Writer
	tty bool
	now func() time.Time

	mu        sync.Mutex
	start     time.Time         // when the bar was made: the elapsed time counts from here
	cur       protocol.Progress // the last progress shown
	seen      bool              // cur holds a real update
	rateFrom  int               // frames done when the current stage was first seen
	rateSince time.Time         // when the current stage was first seen
	decile    int               // plain mode: the last 10 % step printed in this stage
	drawn     int               // terminal mode: width of the line on screen
	done      bool
}

// newProgressBar returns a bar that writes to w, redrawn in place when w is
// a terminal and as plain lines otherwise.
func newProgressBar(w io.Writer) *progressBar {
	return newProgressBarMode(w, isTerminal(w), time.Now)
}

// newProgressBarMode returns a bar with the drawing mode and clock given.
func newProgressBarMode(w io.Writer, tty bool, now func() time.Time) *progressBar {
	return &progressBar{w: w, tty: tty, now: now, start: now()}
}

// isTerminal reports whether w is a character device (a terminal) rather
// than a file or pipe.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	return fi.Mode()&os.ModeCharDevice != 0
}

// Update shows p. Updates that change nothing are not redrawn; an update
// with fewer frames than the last in the same stage is shown as it is (the
// job may have been retried from the start).
func (b *progressBar) Update(p protocol.Progress) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	now := b.now()
	stageChanged := !b.seen || p.Stage != b.cur.Stage || p.FramesDone < b.cur.FramesDone
	if !stageChanged && p == b.cur {
		return
	}
	if stageChanged {
		b.rateFrom, b.rateSince, b.decile = p.FramesDone, now, -1
	}
	b.cur, b.seen = p, true
	if b.tty {
		b.draw(now)
		return
	}
	d := decileOf(p)
	if stageChanged || d > b.decile {
		b.decile = d
		fmt.Fprintln(b.w, b.line(now, false))
	}
}

// Refresh redraws the terminal line so that the elapsed time and the ETA
// move on while no update comes (call it every second or so). It does
// nothing before the first Update, after Done, or when w is not a terminal.
func (b *progressBar) Refresh() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tty && b.seen && !b.done {
		b.draw(b.now())
	}
}

// Done ends the bar: on a terminal it moves past the redrawn line. It is safe
// to call more than once.
func (b *progressBar) Done() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	b.done = true
	if b.tty && b.drawn > 0 {
		fmt.Fprintln(b.w)
	}
}

// draw redraws the terminal line, blanking what is left of a longer one.
func (b *progressBar) draw(now time.Time) {
	s := b.line(now, true)
	pad := b.drawn - len(s)
	if pad < 0 {
		pad = 0
	}
	fmt.Fprint(b.w, "\r"+s+strings.Repeat(" ", pad))
	b.drawn = len(s)
}

// line formats the current progress; withBar adds the drawn bar.
func (b *progressBar) line(now time.Time, withBar bool) string {
	p := b.cur
	stage := p.Stage
	if stage == "" {
		stage = "working"
	}
	elapsed := formatDuration(now.Sub(b.start))
	if p.FramesTotal <= 0 {
		if p.FramesDone > 0 {
			return fmt.Sprintf("%s: %d frames, elapsed %s", stage, p.FramesDone, elapsed)
		}
		return fmt.Sprintf("%s: elapsed %s", stage, elapsed)
	}
	frac := float64(p.FramesDone) / float64(p.FramesTotal)
	if frac > 1 {
		frac = 1
	}
	var sb strings.Builder
	sb.WriteString(stage)
	sb.WriteString(" ")
	if withBar {
		full := int(frac * progressBarWidth)
		sb.WriteString("[" + strings.Repeat("#", full) + strings.Repeat(".", progressBarWidth-full) + "] ")
	}
	fmt.Fprintf(&sb, "%d/%d frames %3.0f%%, elapsed %s, ETA %s",
		p.FramesDone, p.FramesTotal, frac*100, elapsed, b.eta(now))
	return sb.String()
}

// eta estimates the time left in the current stage from the frame rate seen
// since the stage was first shown; "--" until there is a rate.
func (b *progressBar) eta(now time.Time) string {
	p := b.cur
	frames := p.FramesDone - b.rateFrom
	spent := now.Sub(b.rateSince)
	if p.FramesDone >= p.FramesTotal {
		return formatDuration(0)
	}
	if frames <= 0 || spent <= 0 {
		return "--"
	}
	left := time.Duration(float64(spent) / float64(frames) * float64(p.FramesTotal-p.FramesDone))
	return formatDuration(left)
}

// decileOf is the completed 10 % step of p: 0 to 10, or 0 when the total is
// unknown.
func decileOf(p protocol.Progress) int {
	if p.FramesTotal <= 0 || p.FramesDone <= 0 {
		return 0
	}
	d := p.FramesDone * 10 / p.FramesTotal
	if d > 10 {
		d = 10
	}
	return d
}

// formatDuration writes d rounded to the second as m:ss, or h:mm:ss from an
// hour on.
func formatDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := int64((d + time.Second/2) / time.Second)
	h, m := s/3600, s/60%60
	s %= 60
	if h > 0 {
		return fmt.Sprintf("%d:%02d:%02d", h, m, s)
	}
	return fmt.Sprintf("%d:%02d", m, s)
}

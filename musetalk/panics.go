package musetalk

import (
	"fmt"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/avatargen/musetalk/worker/engine"
)

// PanicError is a panic recovered in the render's pipeline (an op on the
// network goroutine, compositing), so that it fails the render instead of
// the process. The error that carries it is engine.Retryable: a panic is a
// fault of the code or of this machine, not of the job's inputs.
type PanicError struct {
	// Value is the panic's value.
	Value any
	// Stack is the panicking goroutine's stack from the panic outwards,
	// at most maxPanicFrames frames, each "package.Function file.go:line"
	// (file base names only: no directories of any kind).
	Stack []string
}

var _ error = (*PanicError)(nil)

// maxPanicFrames bounds PanicError.Stack, so that the error fits a failure
// report.
const maxPanicFrames = 12

// Error returns "panic: <value> [<frame> < <frame> ...]".
func (e *PanicError) Error() string {
	v := fmt.Sprint(e.Value)
	if len(v) > 300 {
		v = v[:300] + "…"
	}
	return fmt.Sprintf("panic: %s [%s]", v, strings.Join(e.Stack, " < "))
}

// recovered turns r, a value recover returned, into a retryable error
// holding a *PanicError. Call it in the deferred function that recovered,
// where the panicking frames are still on the stack.
func recovered(r any) error {
	pcs := make([]uintptr, 64)
	pcs = pcs[:runtime.Callers(2, pcs)]
	frames := runtime.CallersFrames(pcs)
	var stack []string
	afterPanic := false // the frames above runtime.gopanic are the recovery's
	for len(stack) < maxPanicFrames {
		f, more := frames.Next()
		switch {
		case f.Function == "runtime.gopanic":
			afterPanic = true
		case afterPanic && !strings.HasPrefix(f.Function, "runtime."):
			// (runtime frames raise runtime errors or start the
			// goroutine: skipped)
			fn := f.Function
			if i := strings.LastIndexByte(fn, '/'); i >= 0 {
				fn = fn[i+1:]
			}
			stack = append(stack, fmt.Sprintf("%s %s:%d", fn, filepath.Base(f.File), f.Line))
		}
		if !more {
			break
		}
	}
	return engine.Retryable(&PanicError{Value: r, Stack: stack})
}

package musetalk

import (
	"errors"
	"fmt"
	"strings"

	"github.com/avatargen/musetalk/protocol"
)

// InputError is a render failure caused by one of the request's inputs or
// parameters: no retry with the same inputs can succeed. Input names it
// ("avatar", "audio", "params.face_box", …). The worker engine reports
// these as permanent failures.
type InputError struct {
	Input string
	Err   error
}

var _ error = (*InputError)(nil)

// Error returns "<input>: <reason>" (just the reason when it starts with
// the input's name already).
func (e *InputError) Error() string {
	msg := e.Err.Error()
	if strings.HasPrefix(msg, e.Input) {
		return msg
	}
	return e.Input + ": " + msg
}

// Unwrap returns the reason.
func (e *InputError) Unwrap() error { return e.Err }

func inputErrorf(input, format string, args ...any) error {
	return &InputError{Input: input, Err: fmt.Errorf(format, args...)}
}

// paramError is the InputError of a bad job parameter, named by its JSON
// field; the *protocol.ParamError inside lets a CLI name its own flag.
func paramError(field string, err error) error {
	return &InputError{Input: "params." + field, Err: &protocol.ParamError{Field: field, Err: err}}
}

func paramErrorf(field, format string, args ...any) error {
	return paramError(field, fmt.Errorf(format, args...))
}

// IsInputError reports whether err was caused by the request's inputs.
func IsInputError(err error) bool {
	var ie *InputError
	return errors.As(err, &ie)
}

// MissingWeightsError says that the weight directory lacks files a render
// needs. The worker engine reports it as a permanent failure of the job (a
// worker without weights cannot render, and every attempt would fail the
// same way), and its self-check reports weights_present=false.
type MissingWeightsError struct {
	Dir      string
	Versions []string
	Err      error // modeldir's report: the missing files and how to fetch them
}

var _ error = (*MissingWeightsError)(nil)

// Error names the versions and what is missing.
func (e *MissingWeightsError) Error() string {
	msg := e.Err.Error()
	if !strings.Contains(msg, "musetalk weights fetch") {
		msg += fmt.Sprintf(" (run `musetalk weights fetch --dir %s --version %s`)", e.Dir, strings.Join(e.Versions, ","))
	}
	return fmt.Sprintf("MuseTalk %s weights missing: %s", strings.Join(e.Versions, ","), msg)
}

// Unwrap returns modeldir's error.
func (e *MissingWeightsError) Unwrap() error { return e.Err }

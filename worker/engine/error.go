package engine

import "errors"

// Error classifies a job failure: Retryable failures may succeed on another
// attempt (network, storage, a lost device); permanent ones will not (bad
// or corrupt input) and end the job.
type Error struct {
	Err       error
	Retryable bool
}

var _ error = (*Error)(nil)

// Error returns the wrapped error's text.
func (e *Error) Error() string { return e.Err.Error() }

// Unwrap returns the wrapped error.
func (e *Error) Unwrap() error { return e.Err }

// Permanent marks err as a failure that no retry can fix. It returns nil
// for a nil err.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &Error{Err: err}
}

// Retryable marks err as a failure another attempt may not have. It
// returns nil for a nil err.
func Retryable(err error) error {
	if err == nil {
		return nil
	}
	return &Error{Err: err, Retryable: true}
}

// Classify reports whether err is retryable, and whether anything in its
// chain said so. Unclassified errors are the caller's to judge.
func Classify(err error) (retryable, classified bool) {
	var e *Error
	if errors.As(err, &e) {
		return e.Retryable, true
	}
	return false, false
}

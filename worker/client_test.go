package worker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/avatargen/musetalk/protocol"
)

func TestClientErrorClasses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tc := range []struct {
		err              error
		gone, transientE bool
	}{
		{&apiError{Op: "complete", Status: http.StatusConflict, Code: protocol.CodeStaleToken}, true, false},
		{&apiError{Op: "complete", Status: http.StatusConflict, Code: protocol.CodeConflict}, true, false},
		{&apiError{Op: "fail", Status: http.StatusBadRequest, Code: protocol.CodeBadRequest}, false, false},
		{&apiError{Op: "fail", Status: http.StatusUnauthorized, Code: protocol.CodeUnauthorized}, false, false},
		{&apiError{Op: "complete", Status: http.StatusServiceUnavailable}, false, true},
		{&apiError{Op: "complete", Status: http.StatusTooManyRequests}, false, true},
		{fmt.Errorf("complete: %w", errors.New("connection refused")), false, true},
	} {
		if got := errors.Is(tc.err, errAttemptGone); got != tc.gone {
			t.Errorf("%v: gone = %v, want %v", tc.err, got, tc.gone)
		}
		if got := transient(ctx, tc.err); got != tc.transientE {
			t.Errorf("%v: transient = %v, want %v", tc.err, got, tc.transientE)
		}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if transient(cancelled, errors.New("context canceled")) {
		t.Error("an error after the caller gave up is retried")
	}
}

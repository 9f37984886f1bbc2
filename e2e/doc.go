// Package e2e holds the end-to-end tests of the system: they build the
// musetalk binary and a worker with a scripted engine
// (e2e/internal/scriptworker), then run the control plane, workers and the
// B2 test server as real processes and check the control plane's job and
// worker records. See README.md; run them with `go test ./e2e/`.
package e2e

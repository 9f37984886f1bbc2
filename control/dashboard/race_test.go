//go:build race

package dashboard_test

// raceDetector: this test binary runs under -race.
const raceDetector = true

//go:build !unix

package worker

import "errors"

func freeDiskBytes(string) (int64, error) {
	return 0, errors.New("free disk space is only measured on unix systems")
}

//go:build !linux

package blob

import (
	"errors"
	"os"
)

func syncFS(*os.File) error { return errors.ErrUnsupported }

// haveSyncFS is false: each Put fsyncs its file and its directory.
const haveSyncFS = false

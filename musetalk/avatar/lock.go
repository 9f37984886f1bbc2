package avatar

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"
)

// Lock errors of tryLock.
var (
	errLocked  = errors.New("avatar cache: locked by another process")
	errNoLocks = errors.New("avatar cache: file locks are not supported here")
)

// waitLock takes f's lock like tryLock, polling until it is free or ctx
// ends (flock itself cannot be interrupted). A crashed holder's lock is
// released by the kernel, so the wait ends with the holder.
func waitLock(ctx context.Context, f *os.File, exclusive bool) error {
	delay := time.Millisecond
	for {
		err := tryLock(f, exclusive)
		if !errors.Is(err, errLocked) {
			return err
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return context.Cause(ctx)
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
}

// lockFile opens (creating it) the lock file at path and takes its
// exclusive lock, waiting until ctx ends. unlockFile removes the file
// before releasing it, so a waiter that locked the removed file notices
// (its inode is no longer the path's) and starts again. A file system
// without locks gives the open file and an error wrapping errNoLocks.
func lockFile(ctx context.Context, path string) (*os.File, error) {
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, err
		}
		if err := waitLock(ctx, f, true); err != nil {
			if errors.Is(err, errNoLocks) {
				return f, err
			}
			f.Close()
			return nil, err
		}
		same, err := samePath(f, path)
		if same {
			return f, nil
		}
		f.Close()
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
}

// unlockFile removes the lock file f (from lockFile) and releases it.
func unlockFile(f *os.File) {
	os.Remove(f.Name())
	f.Close()
}

// holdDir opens directory dir and takes its shared lock, which says that
// the directory is in use: an evicting process needs the exclusive lock.
// It returns an error wrapping fs.ErrNotExist when dir does not exist or
// was renamed (evicted) before the lock was taken. Where the file system
// has no locks the directory is returned unlocked. Closing the file
// releases the hold.
func holdDir(ctx context.Context, dir string) (*os.File, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	if err := waitLock(ctx, f, false); err != nil && !errors.Is(err, errNoLocks) {
		f.Close()
		return nil, err
	}
	same, err := samePath(f, dir)
	if !same {
		f.Close()
		if err == nil {
			err = fmt.Errorf("%s was replaced: %w", dir, fs.ErrNotExist)
		}
		return nil, err
	}
	return f, nil
}

// samePath reports whether f is still the file at path.
func samePath(f *os.File, path string) (bool, error) {
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	pi, err := os.Stat(path)
	if err != nil {
		return false, err
	}
	return os.SameFile(fi, pi), nil
}

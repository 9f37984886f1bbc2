package avatar

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// Cache keeps prepared avatars on disk under one directory, one entry
// directory per key, at most maxBytes in total, evicting the least
// recently used entries that no open [Avatar] holds. Entries appear
// atomically: preparation writes into a temporary directory that is
// renamed into place when complete, so a crash leaves no half entry (its
// temporary directory is removed by a later OpenCache). A Cache is safe
// for concurrent use.
//
// Several processes (render, up, the workers of one host) may share the
// directory. The directory is the truth and the in-memory index only
// remembers what was seen; advisory locks (flock, released by the kernel
// when a holder dies, so a crash blocks no one) keep the processes apart:
//
//   - Get looks on disk before preparing: an entry another process stored
//     is a hit.
//   - One process at a time prepares a key, holding the lock file
//     .lock-<key>; another process's Get of the key waits for it and then
//     finds the entry, rather than repeating minutes of work. Should two
//     preparations still meet (a file system without locks), the second
//     rename finds the first entry, which is checked like any other and
//     used, and the second copy is discarded.
//   - Every open Avatar holds a shared lock on its entry directory, and
//     eviction, by any process, skips entries it cannot lock exclusively
//     at once: an entry in use anywhere is never evicted. Without locks an
//     evicted entry is still only renamed aside and deleted, so an open
//     Avatar keeps reading its data (latents and masks are in memory, the
//     frame file stays open), and the next Get prepares it again.
//   - An entry's last use is its manifest's modification time, which
//     every Get touches; eviction rescans the directory, so it sees every
//     process's entries and uses and keeps their total within maxBytes.
//
// A fault of the cache itself (its directory gone or unwritable, a full
// disk, a failed rename) never fails a Get whose avatar can be prepared:
// it is logged as a warning and the avatar is prepared into a temporary
// directory of the system (os.TempDir), removed when the Avatar is closed.
type Cache struct {
	dir      string
	maxBytes int64
	log      *slog.Logger

	mu      sync.Mutex
	entries map[string]*cacheEntry
	seq     uint64 // use counter: orders this process's uses within one clock tick
}

// cacheEntry is one key's state. While ready is open the key is being
// filled by one Get; the others wait on it.
type cacheEntry struct {
	ready chan struct{}
	err   error // the fill's error, set before ready is closed
	size  int64
	used  time.Time // last use: this process's, or the manifest's mtime if later
	seq   uint64    // this process's use counter at used
	refs  int       // this process's open Avatars
}

// usedBefore orders entries by last use.
func usedBefore(a, b *cacheEntry) int {
	if c := a.used.Compare(b.used); c != 0 {
		return c
	}
	return cmp.Compare(a.seq, b.seq)
}

// CacheOption configures OpenCache.
type CacheOption func(*Cache)

// WithLogger makes the cache log what it repairs and evicts (a corrupt
// entry deleted and why, evictions) to l. The default discards.
func WithLogger(l *slog.Logger) CacheOption {
	return func(c *Cache) {
		if l != nil {
			c.log = l
		}
	}
}

// Temporary and trash directories and lock files inside the cache
// directory start with these prefixes; keys never start with a dot.
const (
	tmpPrefix   = ".tmp-"
	trashPrefix = ".trash-"
	lockPrefix  = ".lock-"
)

// OpenCache opens (creating it if needed) the cache in dir, holding at
// most maxBytes of entries; maxBytes <= 0 means no limit. It removes
// leftovers of interrupted preparations (not those another process is
// still writing) and entry directories without a manifest, and evicts
// down to maxBytes. An entry larger than maxBytes on its own is still
// returned, and evicted as soon as it is released.
func OpenCache(dir string, maxBytes int64, opts ...CacheOption) (*Cache, error) {
	c := &Cache{dir: filepath.Clean(dir), maxBytes: maxBytes, log: slog.New(slog.DiscardHandler), entries: map[string]*cacheEntry{}}
	for _, o := range opts {
		o(c)
	}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return nil, fmt.Errorf("avatar: opening cache: %w", err)
	}
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		return nil, fmt.Errorf("avatar: opening cache: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		path := filepath.Join(c.dir, name)
		switch {
		case strings.HasPrefix(name, tmpPrefix):
			c.removeUnheld(path)
		case strings.HasPrefix(name, trashPrefix):
			os.RemoveAll(path)
		case strings.HasPrefix(name, lockPrefix):
			removeStaleLock(path)
		case e.IsDir() && validKey(name) == nil:
			if _, err := os.Stat(filepath.Join(path, manifestFile)); err != nil {
				c.log.Warn("avatar cache: removing an entry without a manifest", "key", name, "err", err)
				os.RemoveAll(path)
			}
		}
	}
	c.mu.Lock()
	c.syncLocked()
	trash := c.evictLocked()
	c.mu.Unlock()
	removeAll(trash)
	return c, nil
}

// removeStaleLock removes a key's lock file left by a crashed process,
// unless a process holds it now. (Removing it while locked is safe: see
// lockFile.)
func removeStaleLock(path string) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	if tryLock(f, true) == nil {
		os.Remove(path)
	}
}

// removeUnheld removes an interrupted preparation's temporary directory
// unless its preparer, in another process, still holds it.
func (c *Cache) removeUnheld(path string) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	if errors.Is(tryLock(f, true), errLocked) {
		return
	}
	c.log.Info("avatar cache: removing an interrupted preparation", "dir", path)
	os.RemoveAll(path)
}

func closedChan() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}

// validKey accepts keys that are safe as one directory name: 1 to 128
// letters, digits, '-', '_' or '.', not starting with '.'.
func validKey(key string) error {
	if key == "" || len(key) > 128 || key[0] == '.' {
		return fmt.Errorf("avatar: invalid cache key %q", key)
	}
	for _, r := range key {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("avatar: invalid cache key %q", key)
		}
	}
	return nil
}

// dirSize sums the sizes of the files directly in dir.
func dirSize(dir string) int64 {
	ents, _ := os.ReadDir(dir)
	var n int64
	for _, e := range ents {
		if info, err := e.Info(); err == nil {
			n += info.Size()
		}
	}
	return n
}

// Get returns the prepared avatar for key, preparing it from avatarPath
// with opt and nets when the cache lacks it (cached false). key should
// come from [Key] for the same file, options and weights; Get trusts it.
// progress is passed to [Prepare] and is only called when preparing.
//
// Concurrent Gets of one key prepare it once, in this process and across
// processes sharing the directory (see [Cache]): the others wait (or
// return when their ctx ends) and then share the entry; if a preparation
// in this process failed for a reason other than its caller's
// cancellation they return that error. An entry that fails to open
// (corrupt or partial) is logged, deleted and prepared again; one that
// vanished is prepared again. The returned Avatar holds the entry until it
// is closed; held entries are never evicted. A fault of the cache is
// logged and the avatar prepared outside it (cached false).
func (c *Cache) Get(ctx context.Context, key, avatarPath string, opt Options, nets Networks, progress func(done, total int)) (a *Avatar, cached bool, err error) {
	if err := validKey(key); err != nil {
		return nil, false, err
	}
	for {
		c.mu.Lock()
		e := c.entries[key]
		if e == nil {
			e = &cacheEntry{ready: make(chan struct{}), refs: 1}
			c.entries[key] = e
			c.mu.Unlock()
			return c.fill(ctx, key, avatarPath, opt, nets, progress, e)
		}
		select {
		case <-e.ready:
		default:
			c.mu.Unlock()
			select {
			case <-e.ready:
				if e.err != nil && !errors.Is(e.err, context.Canceled) && !errors.Is(e.err, context.DeadlineExceeded) {
					return nil, false, e.err
				}
				continue
			case <-ctx.Done():
				return nil, false, fmt.Errorf("avatar: waiting for the preparation of %s: %w", key, ctx.Err())
			}
		}
		e.refs++
		c.touchLocked(e)
		c.mu.Unlock()

		a, err := c.openStored(ctx, key)
		if a != nil {
			c.hold(a, e)
			return a, true, nil
		}
		// Gone (evicted by another process) or corrupt (deleted): forget
		// it and look again.
		c.mu.Lock()
		e.refs--
		if c.entries[key] == e {
			delete(c.entries, key)
		}
		c.mu.Unlock()
		if err != nil {
			return nil, false, err
		}
	}
}

// touchLocked records a use of e now.
func (c *Cache) touchLocked(e *cacheEntry) {
	c.seq++
	e.used, e.seq = time.Now(), c.seq
}

// hold makes a, opened from e's entry, hold e until it is closed.
func (c *Cache) hold(a *Avatar, e *cacheEntry) {
	unhold := a.release
	a.release = func() {
		if unhold != nil {
			unhold() // first: this process's own eviction needs the lock
		}
		c.release(e)
	}
}

// openStored opens key's entry on disk holding its directory's shared
// lock (released by Close), and touches its manifest. It returns nil when
// there is no entry, and after logging and deleting a corrupt one; its
// only errors are ctx's.
func (c *Cache) openStored(ctx context.Context, key string) (*Avatar, error) {
	dir := filepath.Join(c.dir, key)
	h, err := holdDir(ctx, dir)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("avatar: opening the cached %s: %w", key, context.Cause(ctx))
		}
		if !errors.Is(err, fs.ErrNotExist) {
			// A broken cache directory: storing will say so.
			c.log.Debug("avatar cache: looking up an entry", "key", key, "err", err)
		}
		return nil, nil
	}
	now := time.Now()
	_ = os.Chtimes(filepath.Join(dir, manifestFile), now, now)
	a, err := Open(dir)
	if err == nil && a.Key != key {
		a.Close()
		err = corruptf("the manifest names key %q", a.Key)
	}
	if err != nil {
		h.Close()
		c.log.Warn("avatar cache: deleting a corrupt entry and preparing it again", "key", key, "err", err)
		removeAll([]string{c.trash(key)})
		return nil, nil
	}
	a.release = func() { h.Close() }
	return a, nil
}

// fill makes key's entry for e, which Get registered with one reference:
// from disk when another process stored it meanwhile, else by preparing
// it. An avatar the cache could not store is returned without e, which is
// dropped.
func (c *Cache) fill(ctx context.Context, key, avatarPath string, opt Options, nets Networks, progress func(done, total int), e *cacheEntry) (a *Avatar, cached bool, err error) {
	stored, finished := false, false
	defer func() {
		c.mu.Lock()
		switch {
		case !finished: // a panic in a network or in progress: never leave waiters hanging
			e.err = fmt.Errorf("avatar: preparing %s panicked", key)
		case err != nil:
			e.err = err
		}
		var trash []string
		if stored {
			e.size = dirSize(filepath.Join(c.dir, key))
			c.touchLocked(e)
		} else if c.entries[key] == e {
			delete(c.entries, key)
		}
		close(e.ready)
		if stored {
			trash = c.evictLocked()
		}
		c.mu.Unlock()
		removeAll(trash)
	}()
	a, cached, stored, err = c.lookOrPrepare(ctx, key, avatarPath, opt, nets, progress)
	finished = true
	if stored {
		c.hold(a, e)
	}
	return a, cached, err
}

// lookOrPrepare opens key's entry if another process stored it, else
// prepares it under the key's lock file, so that other processes wait
// for this one; stored reports that a comes from the cache directory.
func (c *Cache) lookOrPrepare(ctx context.Context, key, avatarPath string, opt Options, nets Networks, progress func(done, total int)) (a *Avatar, cached, stored bool, err error) {
	if a, err := c.openStored(ctx, key); a != nil || err != nil {
		return a, true, a != nil, err
	}
	lock, err := lockFile(ctx, filepath.Join(c.dir, lockPrefix+key))
	switch {
	case err == nil:
		defer unlockFile(lock)
		// The previous holder may have stored it.
		if a, err := c.openStored(ctx, key); a != nil || err != nil {
			return a, true, a != nil, err
		}
	case ctx.Err() != nil:
		return nil, false, false, fmt.Errorf("avatar: waiting for another process's preparation of %s: %w", key, context.Cause(ctx))
	default:
		if lock != nil {
			defer lock.Close()
		}
		// No locks here, or a broken cache directory (storing will
		// warn): concurrent preparations may meet at the rename.
		c.log.Info("avatar cache: preparing without the key's lock", "key", key, "err", err)
	}
	a, stored, err = c.prepareStore(ctx, key, avatarPath, opt, nets, progress)
	return a, false, stored, err
}

// prepareStore prepares key into a temporary directory of the cache, held
// (see holdDir) so that no other process's OpenCache removes it, and
// renames it into place. When the cache cannot store it, the avatar is
// prepared outside the cache, or used from the temporary directory when
// only the rename failed.
func (c *Cache) prepareStore(ctx context.Context, key, avatarPath string, opt Options, nets Networks, progress func(done, total int)) (a *Avatar, stored bool, err error) {
	tmp := filepath.Join(c.dir, tmpPrefix+key+"-"+randomSuffix())
	h, err := c.makeTemp(ctx, tmp)
	if err != nil {
		if ctx.Err() != nil {
			return nil, false, fmt.Errorf("avatar: preparing %s: %w", key, context.Cause(ctx))
		}
		return c.prepareOutside(ctx, key, avatarPath, opt, nets, progress, err)
	}
	kept := false // the Avatar owns tmp's hold
	defer func() {
		if !kept {
			h.Close()
			os.RemoveAll(tmp)
		}
	}()
	a, err = prepare(ctx, key, avatarPath, tmp, opt, nets, progress)
	if err != nil {
		if ctx.Err() == nil && c.inCache(err) {
			h.Close()
			os.RemoveAll(tmp)
			kept = true
			return c.prepareOutside(ctx, key, avatarPath, opt, nets, progress, err)
		}
		return nil, false, err
	}
	final := filepath.Join(c.dir, key)
	rerr := os.Rename(tmp, final)
	if rerr != nil {
		if _, serr := os.Lstat(final); serr == nil {
			// Another process stored the key meanwhile, or something
			// else sits in its place: take a valid entry, replace
			// anything else.
			b, err := c.openStored(ctx, key)
			if b != nil || err != nil {
				a.Close()
				return b, b != nil, err
			}
			rerr = os.Rename(tmp, final)
		}
	}
	kept = true
	if rerr != nil {
		c.log.Warn("avatar cache: cannot store the prepared avatar; using it uncached", "key", key, "err", rerr)
		a.release = func() {
			h.Close()
			os.RemoveAll(tmp)
		}
		return a, false, nil
	}
	a.release = func() { h.Close() } // the hold moved with the directory
	return a, true, nil
}

// makeTemp creates the temporary directory tmp and holds it. It first
// recreates the cache directory, should it have been removed.
func (c *Cache) makeTemp(ctx context.Context, tmp string) (*os.File, error) {
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return nil, err
	}
	h, err := holdDir(ctx, tmp)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	return h, nil
}

// inCache reports whether err is a file operation's on a path inside the
// cache directory: a fault of the cache, not of the avatar.
func (c *Cache) inCache(err error) bool {
	var pe *fs.PathError
	return errors.As(err, &pe) && strings.HasPrefix(pe.Path, c.dir+string(filepath.Separator))
}

// prepareOutside prepares key into a new directory under os.TempDir,
// removed when the Avatar is closed, after the cache failed with cause.
func (c *Cache) prepareOutside(ctx context.Context, key, avatarPath string, opt Options, nets Networks, progress func(done, total int), cause error) (*Avatar, bool, error) {
	c.log.Warn("avatar cache: cannot store the avatar; preparing it outside the cache", "key", key, "err", cause)
	tmp, err := os.MkdirTemp("", "musetalk-avatar-")
	if err != nil {
		return nil, false, fmt.Errorf("avatar: preparing %s outside the cache (which failed: %v): %w", key, cause, err)
	}
	kept := false
	defer func() {
		if !kept {
			os.RemoveAll(tmp)
		}
	}()
	a, err := prepare(ctx, key, avatarPath, tmp, opt, nets, progress)
	if err != nil {
		return nil, false, err
	}
	kept = true
	a.release = func() { os.RemoveAll(tmp) }
	return a, false, nil
}

func randomSuffix() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// release drops one reference to e and evicts what is now evictable.
func (c *Cache) release(e *cacheEntry) {
	c.mu.Lock()
	e.refs--
	trash := c.evictLocked()
	c.mu.Unlock()
	removeAll(trash)
}

// syncLocked brings the index up to date with the directory, which other
// processes share: their new entries are added, entries gone from disk
// are dropped, and an entry's last use becomes its manifest's
// modification time when that is later.
func (c *Cache) syncLocked() {
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		c.log.Debug("avatar cache: listing the directory", "err", err)
		return
	}
	onDisk := make(map[string]bool, len(ents))
	for _, d := range ents {
		name := d.Name()
		if !d.IsDir() || validKey(name) != nil {
			continue
		}
		st, err := os.Stat(filepath.Join(c.dir, name, manifestFile))
		if err != nil {
			continue
		}
		onDisk[name] = true
		switch e := c.entries[name]; {
		case e == nil:
			c.entries[name] = &cacheEntry{ready: closedChan(), size: dirSize(filepath.Join(c.dir, name)), used: st.ModTime()}
		case isClosed(e.ready) && st.ModTime().After(e.used):
			e.used = st.ModTime()
		}
	}
	for k, e := range c.entries {
		if isClosed(e.ready) && !onDisk[k] {
			delete(c.entries, k)
		}
	}
}

// evictLocked evicts unheld ready entries, least recently used first,
// until the total is at most maxBytes, and returns the directories to
// delete (renamed aside, so a new preparation of the key cannot collide).
// Entries another process holds are skipped.
func (c *Cache) evictLocked() []string {
	if c.maxBytes <= 0 {
		return nil
	}
	c.syncLocked()
	var total int64
	var idle []string
	for k, e := range c.entries {
		if !isClosed(e.ready) {
			continue
		}
		total += e.size
		if e.refs == 0 {
			idle = append(idle, k)
		}
	}
	slices.SortFunc(idle, func(a, b string) int { return usedBefore(c.entries[a], c.entries[b]) })
	var trash []string
	for _, k := range idle {
		if total <= c.maxBytes {
			break
		}
		size := c.entries[k].size
		path, err := c.evictEntry(k)
		if errors.Is(err, errLocked) {
			continue
		}
		total -= size
		delete(c.entries, k)
		if path != "" {
			c.log.Info("avatar cache: evicting", "key", k, "bytes", size)
			trash = append(trash, path)
		}
	}
	return trash
}

// evictEntry renames key's directory aside unless another process holds
// it (errLocked), and returns the new path ("" when the entry was gone).
func (c *Cache) evictEntry(key string) (string, error) {
	f, err := os.Open(filepath.Join(c.dir, key))
	if err != nil {
		return "", err
	}
	defer f.Close()
	if err := tryLock(f, true); errors.Is(err, errLocked) {
		return "", err
	}
	return c.trash(key), nil
}

// trash renames key's directory aside and returns the new path ("" if
// the rename failed, after logging it and deleting the directory in
// place).
func (c *Cache) trash(key string) string {
	from := filepath.Join(c.dir, key)
	to := filepath.Join(c.dir, trashPrefix+key+"-"+randomSuffix())
	if err := os.Rename(from, to); err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			c.log.Error("avatar cache: removing an entry", "key", key, "err", err)
			os.RemoveAll(from)
		}
		return ""
	}
	return to
}

func removeAll(dirs []string) {
	for _, d := range dirs {
		if d != "" {
			os.RemoveAll(d)
		}
	}
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Keys lists the keys of the entries in the directory, most recently
// used first (by any process sharing it). Entries still being prepared
// are not listed.
func (c *Cache) Keys() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.syncLocked()
	var keys []string
	for k, e := range c.entries {
		if isClosed(e.ready) {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b string) int { return usedBefore(c.entries[b], c.entries[a]) })
	return keys
}

// Size returns the total size in bytes of the entries in the directory.
func (c *Cache) Size() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.syncLocked()
	var n int64
	for _, e := range c.entries {
		if isClosed(e.ready) {
			n += e.size
		}
	}
	return n
}

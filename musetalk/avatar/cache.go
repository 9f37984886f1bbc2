package avatar

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
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
// temporary directory is removed by the next OpenCache). A Cache is safe
// for concurrent use within one process; two processes must not share a
// directory.
type Cache struct {
	dir      string
	maxBytes int64
	log      *slog.Logger

	mu      sync.Mutex
	entries map[string]*cacheEntry
	seq     uint64 // use counter: a larger value is a more recent use
}

// cacheEntry is one key's state. While ready is open the key is being
// prepared by one Get; the others wait on it.
type cacheEntry struct {
	ready chan struct{}
	err   error // preparation's error, set before ready is closed
	size  int64
	used  uint64
	refs  int
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

// Temporary and trash directories inside the cache directory start with
// these prefixes; keys never start with a dot.
const (
	tmpPrefix   = ".tmp-"
	trashPrefix = ".trash-"
)

// OpenCache opens (creating it if needed) the cache in dir, holding at
// most maxBytes of entries; maxBytes <= 0 means no limit. It removes
// leftovers of interrupted preparations and entry directories without a
// manifest, and evicts down to maxBytes. An entry's last use is its
// manifest's modification time, which every Get touches. An entry larger
// than maxBytes on its own is still returned, and evicted as soon as it is
// released.
func OpenCache(dir string, maxBytes int64, opts ...CacheOption) (*Cache, error) {
	c := &Cache{dir: dir, maxBytes: maxBytes, log: slog.New(slog.DiscardHandler), entries: map[string]*cacheEntry{}}
	for _, o := range opts {
		o(c)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("avatar: opening cache: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("avatar: opening cache: %w", err)
	}
	type found struct {
		key  string
		size int64
		used time.Time
	}
	var list []found
	for _, e := range ents {
		name := e.Name()
		path := filepath.Join(dir, name)
		if strings.HasPrefix(name, tmpPrefix) || strings.HasPrefix(name, trashPrefix) {
			c.log.Info("avatar cache: removing an interrupted preparation", "dir", path)
			os.RemoveAll(path)
			continue
		}
		if !e.IsDir() || validKey(name) != nil {
			continue
		}
		st, err := os.Stat(filepath.Join(path, manifestFile))
		if err != nil {
			c.log.Warn("avatar cache: removing an entry without a manifest", "key", name, "err", err)
			os.RemoveAll(path)
			continue
		}
		list = append(list, found{key: name, size: dirSize(path), used: st.ModTime()})
	}
	slices.SortFunc(list, func(a, b found) int { return a.used.Compare(b.used) })
	for _, f := range list {
		c.seq++
		c.entries[f.key] = &cacheEntry{ready: closedChan(), size: f.size, used: c.seq}
	}
	c.mu.Lock()
	trash := c.evictLocked()
	c.mu.Unlock()
	removeAll(trash)
	return c, nil
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
// Concurrent Gets of one key prepare it once: the others wait (or return
// when their ctx ends) and then share the entry; if the preparation
// failed for a reason other than its caller's cancellation they return
// that error. An entry that fails to open (corrupt or partial) is logged,
// deleted and prepared again. The returned Avatar holds the entry until
// it is closed; held entries are never evicted.
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
			a, err := c.prepare(ctx, key, avatarPath, opt, nets, progress, e)
			return a, false, err
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
		c.seq++
		e.used = c.seq
		c.mu.Unlock()

		dir := filepath.Join(c.dir, key)
		now := time.Now()
		_ = os.Chtimes(filepath.Join(dir, manifestFile), now, now)
		a, err := Open(dir)
		if err == nil && a.Key != key {
			a.Close()
			err = corruptf("the manifest names key %q", a.Key)
		}
		if err != nil {
			c.log.Warn("avatar cache: deleting a corrupt entry and preparing it again", "key", key, "err", err)
			c.mu.Lock()
			e.refs--
			var trash []string
			if c.entries[key] == e {
				delete(c.entries, key)
				trash = append(trash, c.trashLocked(key))
			}
			c.mu.Unlock()
			removeAll(trash)
			continue
		}
		a.release = func() { c.release(e) }
		return a, true, nil
	}
}

// prepare runs Prepare into a temporary directory for e (registered under
// key with one reference) and renames it into place.
func (c *Cache) prepare(ctx context.Context, key, avatarPath string, opt Options, nets Networks, progress func(done, total int), e *cacheEntry) (a *Avatar, err error) {
	tmp := filepath.Join(c.dir, tmpPrefix+key+"-"+randomSuffix())
	finished := false
	defer func() {
		if !finished { // a panic in a network or in progress: never leave waiters hanging
			os.RemoveAll(tmp)
			c.mu.Lock()
			delete(c.entries, key)
			e.err = fmt.Errorf("avatar: preparing %s panicked", key)
			close(e.ready)
			c.mu.Unlock()
		}
	}()
	a, err = prepare(ctx, key, avatarPath, tmp, opt, nets, progress)
	finished = true
	if err == nil {
		if rerr := os.Rename(tmp, filepath.Join(c.dir, key)); rerr != nil {
			a.Close()
			os.RemoveAll(tmp)
			a, err = nil, fmt.Errorf("avatar: storing the prepared avatar: %w", rerr)
		}
	}
	c.mu.Lock()
	if err != nil {
		delete(c.entries, key)
		e.err = err
		close(e.ready)
		c.mu.Unlock()
		return nil, err
	}
	e.size = dirSize(filepath.Join(c.dir, key))
	c.seq++
	e.used = c.seq
	close(e.ready)
	trash := c.evictLocked()
	c.mu.Unlock()
	removeAll(trash)
	a.release = func() { c.release(e) }
	return a, nil
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

// evictLocked evicts unheld ready entries, least recently used first,
// until the total is at most maxBytes, and returns the directories to
// delete (renamed aside, so a new preparation of the key cannot collide).
func (c *Cache) evictLocked() []string {
	if c.maxBytes <= 0 {
		return nil
	}
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
	slices.SortFunc(idle, func(a, b string) int { return cmp.Compare(c.entries[a].used, c.entries[b].used) })
	var trash []string
	for _, k := range idle {
		if total <= c.maxBytes {
			break
		}
		total -= c.entries[k].size
		c.log.Info("avatar cache: evicting", "key", k, "bytes", c.entries[k].size)
		delete(c.entries, k)
		trash = append(trash, c.trashLocked(k))
	}
	return trash
}

// trashLocked renames key's directory aside and returns the new path ("" if
// the rename failed, after logging it).
func (c *Cache) trashLocked(key string) string {
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

// Keys lists the cached avatar keys, most recently used first. Entries
// still being prepared are not listed.
func (c *Cache) Keys() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var keys []string
	for k, e := range c.entries {
		if isClosed(e.ready) {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b string) int { return cmp.Compare(c.entries[b].used, c.entries[a].used) })
	return keys
}

// Size returns the total size in bytes of the cached entries.
func (c *Cache) Size() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var n int64
	for _, e := range c.entries {
		if isClosed(e.ready) {
			n += e.size
		}
	}
	return n
}

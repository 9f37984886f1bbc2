package modeldir

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
)

// MissingError is what [Dir.Check] returns when files are missing. It
// wraps [fs.ErrNotExist].
type MissingError struct {
	// Dir is the weight directory.
	Dir string
	// Versions are the versions that were checked.
	Versions []string
	// Files are the missing files' slash paths in the directory.
	Files []string
}

func (e *MissingError) Error() string {
	return fmt.Sprintf("weight directory %s lacks %d file(s): %s; run `%s` to download them",
		e.Dir, len(e.Files), strings.Join(e.Files, ", "), e.FetchCommand())
}

// FetchCommand returns the command line that downloads the missing files.
func (e *MissingError) FetchCommand() string {
	return fmt.Sprintf("musetalk weights fetch --dir %s --version %s", shellQuote(e.Dir), strings.Join(e.Versions, ","))
}

// Unwrap makes errors.Is(err, fs.ErrNotExist) true.
func (e *MissingError) Unwrap() error { return fs.ErrNotExist }

// Check reports whether d holds every file the given versions need (no
// versions means [V15]): nil, or a *[MissingError] naming each missing file
// and the command that fetches them. A file that exists but cannot be
// examined is reported as such. Check looks at presence only; [Dir.Load]
// reads the files.
func (d Dir) Check(versions ...string) error {
	if len(versions) == 0 {
		versions = []string{V15}
	}
	files, err := Files(versions...)
	if err != nil {
		return err
	}
	missing := &MissingError{Dir: string(d), Versions: versions}
	for _, f := range files {
		_, err := d.Resolve(f)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			missing.Files = append(missing.Files, f.Path)
		case err != nil:
			return fmt.Errorf("checking weight directory %s: %w", d, err)
		}
	}
	if len(missing.Files) > 0 {
		return missing
	}
	return nil
}

// shellQuote quotes s for a POSIX shell when it needs quoting.
func shellQuote(s string) string {
	if s != "" && !strings.ContainsFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+=:,@", r))
	}) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

package control

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/avatargen/musetalk/protocol"
)

// keyring holds the SHA-256 digests of accepted bearer keys. Comparing
// fixed-length digests with crypto/subtle keeps the comparison's time
// independent of both the key's content and its length.
type keyring struct {
	digests [][sha256.Size]byte
}

func newKeyring(keys ...string) *keyring {
	k := &keyring{}
	for _, key := range keys {
		k.digests = append(k.digests, sha256.Sum256([]byte(key)))
	}
	return k
}

// open reports whether the ring accepts any caller (no keys configured).
func (k *keyring) open() bool { return len(k.digests) == 0 }

// accepts reports whether presented matches one of the keys. It compares
// against every key, so timing does not reveal which one matched.
func (k *keyring) accepts(presented string) bool {
	d := sha256.Sum256([]byte(presented))
	match := 0
	for i := range k.digests {
		match |= subtle.ConstantTimeCompare(d[:], k.digests[i][:])
	}
	return match == 1
}

// bearer returns the token of an "Authorization: Bearer <token>" header.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// requireKey wraps h so that it runs only for callers presenting one of
// ring's keys (any caller when the ring is open); others get 401.
func requireKey(ring *keyring, what string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ring.open() {
			h.ServeHTTP(w, r)
			return
		}
		token, ok := bearer(r)
		if !ok {
			writeError(w, errorf(http.StatusUnauthorized, protocol.CodeUnauthorized,
				"missing Authorization: Bearer header with the %s key", what))
			return
		}
		if !ring.accepts(token) {
			writeError(w, errorf(http.StatusUnauthorized, protocol.CodeUnauthorized, "the %s key is not valid", what))
			return
		}
		h.ServeHTTP(w, r)
	})
}

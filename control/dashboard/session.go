package dashboard

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// cookieName is the session cookie's name.
const cookieName = "musetalk_dashboard"

// Sessions are stateless signed cookies, so that any replica sharing the
// configuration accepts a session another replica started:
//
//	v1.<nonce>.<expiry, Unix seconds>.<HMAC-SHA256(secret, "v1.<nonce>.<expiry>")>
//
// The secret is HMAC-SHA256(key, "musetalk dashboard session v1") of the
// public API key the operator logged in with, so the cookie never holds
// the key, and removing a key from the configuration ends its sessions.
// Without keys (an open public API) the secret is random per process and
// every visitor gets a session without logging in.
//
// The CSRF token of a session is HMAC-SHA256(secret, "csrf.<nonce>"): the
// pages carry it, every POST must send it back (form field "csrf" or
// header X-CSRF-Token), and a cross-site page can neither read it nor, with
// SameSite=Strict, send the cookie. POSTs whose Origin header names
// another origin are refused as well.
//
// Logging out clears the cookie and revokes its nonce on this replica
// until the session would have expired.
type sessions struct {
	digests [][sha256.Size]byte // SHA-256 of each key, compared in constant time
	secrets [][]byte            // the signing secret of each key
	open    bool
	ttl     time.Duration
	now     func() time.Time

	mu      sync.Mutex
	revoked map[string]time.Time // nonce -> expiry
}

// session is a verified session cookie.
type session struct {
	nonce   string
	expires time.Time
	secret  []byte
	csrf    string
	issued  bool // started by this request (open dashboard)
}

func newSessions(keys []string, ttl time.Duration, now func() time.Time) (*sessions, error) {
	s := &sessions{ttl: ttl, now: now, revoked: map[string]time.Time{}}
	for _, k := range keys {
		s.digests = append(s.digests, sha256.Sum256([]byte(k)))
		m := hmac.New(sha256.New, []byte(k))
		m.Write([]byte("musetalk dashboard session v1"))
		s.secrets = append(s.secrets, m.Sum(nil))
	}
	if len(keys) == 0 {
		s.open = true
		secret := make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return nil, fmt.Errorf("making the session secret: %w", err)
		}
		s.secrets = [][]byte{secret}
	}
	return s, nil
}

// keyIndex returns which key presented is, comparing it with every key in
// constant time (as the public API does), or -1.
func (s *sessions) keyIndex(presented string) int {
	d := sha256.Sum256([]byte(presented))
	idx := -1
	for i := range s.digests {
		eq := subtle.ConstantTimeCompare(d[:], s.digests[i][:])
		idx = subtle.ConstantTimeSelect(eq, i, idx)
	}
	return idx
}

func mac(secret []byte, msg string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

var b64 = base64.RawURLEncoding

// issue starts a session signed with the secret of key idx.
func (s *sessions) issue(idx int) (*session, string, error) {
	nonce := make([]byte, 18)
	if _, err := rand.Read(nonce); err != nil {
		return nil, "", fmt.Errorf("making a session id: %w", err)
	}
	ss := &session{
		nonce:   b64.EncodeToString(nonce),
		expires: s.now().Add(s.ttl).Truncate(time.Second),
		secret:  s.secrets[idx],
	}
	payload := "v1." + ss.nonce + "." + strconv.FormatInt(ss.expires.Unix(), 10)
	ss.csrf = b64.EncodeToString(mac(ss.secret, "csrf."+ss.nonce))
	return ss, payload + "." + b64.EncodeToString(mac(ss.secret, payload)), nil
}

// verify returns the session of a cookie value, or nil when it is
// malformed, forged, signed by a key no longer configured, expired or
// logged out.
func (s *sessions) verify(value string) *session {
	parts := strings.Split(value, ".")
	if len(parts) != 4 || parts[0] != "v1" {
		return nil
	}
	exp, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil {
		return nil
	}
	got, err := b64.DecodeString(parts[3])
	if err != nil {
		return nil
	}
	payload := strings.Join(parts[:3], ".")
	var secret []byte
	for _, sec := range s.secrets {
		if hmac.Equal(got, mac(sec, payload)) {
			secret = sec
		}
	}
	expires := time.Unix(exp, 0)
	if secret == nil || !s.now().Before(expires) {
		return nil
	}
	s.mu.Lock()
	_, revoked := s.revoked[parts[1]]
	s.mu.Unlock()
	if revoked {
		return nil
	}
	return &session{nonce: parts[1], expires: expires, secret: secret,
		csrf: b64.EncodeToString(mac(secret, "csrf."+parts[1]))}
}

// revoke ends a session on this replica.
func (s *sessions) revoke(ss *session) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for n, exp := range s.revoked {
		if !now.Before(exp) {
			delete(s.revoked, n)
		}
	}
	s.revoked[ss.nonce] = ss.expires
}

// checkCSRF reports whether r carries ss's CSRF token.
func (ss *session) checkCSRF(r *http.Request) bool {
	token := r.Header.Get("X-CSRF-Token")
	if token == "" {
		token = r.PostFormValue("csrf")
	}
	return token != "" && subtle.ConstantTimeCompare([]byte(token), []byte(ss.csrf)) == 1
}

// sameOrigin reports whether a POST comes from a page of this origin: its
// Origin header, when the browser sent one, names this host. (Browsers
// send Origin on every cross-site POST.)
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host)
}

// secure reports whether the cookie should be Secure: the request came
// over TLS, here or at a proxy in front.
func secure(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

func (d *Dashboard) setCookie(w http.ResponseWriter, r *http.Request, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: value, Path: Prefix, MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secure(r),
	})
}

// requireSession runs h for requests with a valid session; POSTs must also
// carry its CSRF token and come from this origin. Without one, pages
// redirect to the login page and the JSON routes answer 401 (the script
// then goes to the login page). An open dashboard starts a session for any
// visitor instead.
func (d *Dashboard) requireSession(h func(http.ResponseWriter, *http.Request, *session), api bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		var ss *session
		if c, err := r.Cookie(cookieName); err == nil {
			ss = d.sessions.verify(c.Value)
		}
		if ss == nil && d.sessions.open {
			var value string
			var err error
			if ss, value, err = d.sessions.issue(0); err != nil {
				d.internalError(w, r, err)
				return
			}
			ss.issued = true
			d.setCookie(w, r, value, int(d.cfg.SessionTTL/time.Second))
		}
		if ss == nil {
			if api || r.Method != http.MethodGet {
				d.refuse(w, r, http.StatusUnauthorized, "Your dashboard session has ended: log in again.")
				return
			}
			http.Redirect(w, r, Prefix+"login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		if r.Method == http.MethodPost {
			if !sameOrigin(r) {
				d.refuse(w, r, http.StatusForbidden, "This request came from another site and was refused.")
				return
			}
			if !ss.checkCSRF(r) {
				d.refuse(w, r, http.StatusForbidden, "This form is out of date (its CSRF token does not match your session): reload the page and try again.")
				return
			}
		}
		h(w, r, ss)
	})
}

// safeNext returns next when it is a dashboard path, else the fleet page,
// so that the login page cannot redirect anywhere else.
func safeNext(next string) string {
	if strings.HasPrefix(next, Prefix) && !strings.HasPrefix(next, "//") && !strings.ContainsAny(next, "\\\r\n") {
		return next
	}
	return Prefix + "fleet"
}

// loginView is the login page's model.
type loginView struct {
	Next    string
	Message string
	Notice  string
}

func (d *Dashboard) handleLoginPage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	next := safeNext(r.URL.Query().Get("next"))
	if d.sessions.open {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	if c, err := r.Cookie(cookieName); err == nil && d.sessions.verify(c.Value) != nil {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	v := loginView{Next: next}
	if r.URL.Query().Get("notice") == "logged-out" {
		v.Notice = "You are logged out."
	}
	d.render(w, r, http.StatusOK, "login", &view{Title: "Log in", Data: v})
}

// handleLogin checks the key in constant time and starts a session.
func (d *Dashboard) handleLogin(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	next := safeNext(r.PostFormValue("next"))
	if d.sessions.open {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	v := loginView{Next: next}
	if !sameOrigin(r) {
		v.Message = "This login came from another site and was refused."
		d.render(w, r, http.StatusForbidden, "login", &view{Title: "Log in", Data: v})
		return
	}
	key := strings.TrimSpace(r.PostFormValue("key"))
	if key == "" {
		v.Message = "Enter a public API key (one of MUSETALK_API_KEYS)."
		d.render(w, r, http.StatusBadRequest, "login", &view{Title: "Log in", Data: v})
		return
	}
	idx := d.sessions.keyIndex(key)
	if idx < 0 {
		d.log.WarnContext(r.Context(), "dashboard: login refused: wrong key", "remote", r.RemoteAddr)
		v.Message = "That key is not one of this control plane's public API keys. Nothing was changed."
		d.render(w, r, http.StatusUnauthorized, "login", &view{Title: "Log in", Data: v})
		return
	}
	_, value, err := d.sessions.issue(idx)
	if err != nil {
		d.internalError(w, r, err)
		return
	}
	d.setCookie(w, r, value, int(d.cfg.SessionTTL/time.Second))
	d.log.InfoContext(r.Context(), "dashboard: operator logged in", "remote", r.RemoteAddr)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (d *Dashboard) handleLogout(w http.ResponseWriter, r *http.Request, ss *session) {
	d.sessions.revoke(ss)
	d.setCookie(w, r, "", -1)
	target := Prefix + "login?notice=logged-out"
	if d.sessions.open {
		target = Prefix + "fleet"
	}
	if wantsJSON(r) {
		writeJSON(w, http.StatusOK, actionResult{OK: true, Message: "Logged out.", Location: target})
		return
	}
	http.Redirect(w, r, target, http.StatusSeeOther)
}

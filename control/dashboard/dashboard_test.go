package dashboard_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/protocol"
)

// cookie returns the dashboard's session cookie from an answer.
func cookie(resp *http.Response) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == "musetalk_dashboard" {
			return c
		}
	}
	return nil
}

func TestLoginRefusesAWrongKey(t *testing.T) {
	t.Parallel()
	e := start(t, publicKey)
	b := e.client()
	for _, key := range []string{"wrong-key", internalKey, publicKey + "x", " "} {
		resp, page := b.login(key)
		if resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("login with %q: %d, want 401 or 400", key, resp.StatusCode)
		}
		if cookie(resp) != nil {
			t.Fatalf("login with %q set a session cookie", key)
		}
		if !strings.Contains(page, `id="login-error"`) {
			t.Fatalf("login with %q: no error message on the page:\n%s", key, page)
		}
	}
	// Without a session every page goes to the login page, and the JSON
	// endpoint answers 401.
	resp, _ := b.do("GET", "/dashboard/fleet", nil)
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/dashboard/login?next=") {
		t.Fatalf("fleet without a session: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := b.do("GET", "/dashboard/api/fleet", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("live fleet without a session: %d, want 401", resp.StatusCode)
	}
}

func TestLoginStartsASignedSession(t *testing.T) {
	t.Parallel()
	e := start(t, "other-key-0b9e2c", publicKey)
	e.heartbeat("salad-1", protocol.Heartbeat{Provider: "salad", GPUClass: "RTX_4090"})
	b := e.client()
	resp, _ := b.login(publicKey)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/dashboard/fleet" {
		t.Fatalf("login: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	c := cookie(resp)
	if c == nil || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/dashboard/" || c.Secure {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/dashboard/, not Secure over plain HTTP", c)
	}
	if strings.Contains(c.Value, publicKey) {
		t.Fatal("the session cookie holds the key")
	}
	resp, page := b.do("GET", "/dashboard/fleet", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, `id="worker-salad-1"`) {
		t.Fatalf("fleet: %d\n%s", resp.StatusCode, page)
	}
	for h, want := range map[string]string{"Cache-Control": "no-store", "X-Frame-Options": "DENY"} {
		if got := resp.Header.Get(h); got != want {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("Content-Security-Policy = %q", csp)
	}
	// A forged or altered cookie is no session.
	forged := e.client()
	u, _ := url.Parse(e.ts.URL + "/dashboard/")
	v := []byte(c.Value)
	v[len(v)-2] ^= 1
	forged.c.Jar.SetCookies(u, []*http.Cookie{{Name: c.Name, Value: string(v)}})
	if resp, _ := forged.do("GET", "/dashboard/fleet", nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("fleet with a forged cookie: %d, want 303 to the login page", resp.StatusCode)
	}
}

func TestSessionEndsWithItsKey(t *testing.T) {
	t.Parallel()
	a := start(t, publicKey)
	b := a.client()
	resp, _ := b.login(publicKey)
	c := cookie(resp)
	// Another control plane with the same key accepts the session (replicas
	// share no state); one whose keys no longer include it does not.
	for _, tc := range []struct {
		keys []string
		want int
	}{{[]string{publicKey}, http.StatusOK}, {[]string{"rotated-key-5d2f7a"}, http.StatusSeeOther}} {
		other := start(t, tc.keys...)
		cl := other.client()
		u, _ := url.Parse(other.ts.URL + "/dashboard/")
		cl.c.Jar.SetCookies(u, []*http.Cookie{{Name: c.Name, Value: c.Value}})
		if resp, _ := cl.do("GET", "/dashboard/queue", nil); resp.StatusCode != tc.want {
			t.Fatalf("keys %v: queue with the session: %d, want %d", tc.keys, resp.StatusCode, tc.want)
		}
	}
}

func TestActionsNeedTheCSRFToken(t *testing.T) {
	t.Parallel()
	e := start(t, publicKey)
	job := e.submit(publicKey, protocol.SubmitRequest{})
	b := e.client()
	b.login(publicKey)
	path := "/dashboard/jobs/" + job.ID + "/cancel"
	token := b.csrf("/dashboard/jobs/" + job.ID)
	for _, tc := range []struct {
		name    string
		form    url.Values
		headers []string
	}{
		{"no token", url.Values{}, nil},
		{"wrong token", url.Values{"csrf": {token + "x"}}, nil},
		{"another site", url.Values{"csrf": {token}}, []string{"Origin", "https://evil.example"}},
	} {
		resp, _ := b.do("POST", path, tc.form, tc.headers...)
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("%s: %d, want 403", tc.name, resp.StatusCode)
		}
		if got := e.job(publicKey, job.ID).State; got != protocol.JobQueued {
			t.Fatalf("%s: job is %s", tc.name, got)
		}
	}
	// A plain form POST (no script) is redirected back with a notice.
	resp, _ := b.do("POST", path, url.Values{"csrf": {token}}, "Origin", e.ts.URL)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/dashboard/jobs/"+job.ID+"?notice=cancelled" {
		t.Fatalf("cancel: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if got := e.job(publicKey, job.ID).State; got != protocol.JobCancelled {
		t.Fatalf("job is %s after cancel", got)
	}
	// The script's POST gets JSON, and a refusal says why.
	resp, body := b.do("POST", path, url.Values{}, "X-CSRF-Token", token, "Accept", "application/json")
	var out struct {
		OK      bool   `json:"ok"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil || resp.StatusCode != http.StatusOK || !out.OK {
		t.Fatalf("cancelling again: %d %s", resp.StatusCode, body)
	}
	resp, body = b.do("POST", "/dashboard/jobs/"+job.ID+"/retry", url.Values{}, "X-CSRF-Token", token, "Accept", "application/json")
	if resp.StatusCode != http.StatusConflict || !strings.Contains(body, "only a failed job can be retried") {
		t.Fatalf("retrying a cancelled job: %d %s", resp.StatusCode, body)
	}
}

func TestLogoutEndsTheSession(t *testing.T) {
	t.Parallel()
	e := start(t, publicKey)
	b := e.client()
	resp, _ := b.login(publicKey)
	c := cookie(resp)
	token := b.csrf("/dashboard/fleet")
	resp, _ = b.do("POST", "/dashboard/logout", url.Values{"csrf": {token}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/dashboard/login?notice=logged-out" {
		t.Fatalf("logout: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if gone := cookie(resp); gone == nil || gone.MaxAge >= 0 {
		t.Fatalf("logout did not clear the cookie: %+v", gone)
	}
	// The old cookie, replayed, is refused on this replica.
	replay := e.client()
	u, _ := url.Parse(e.ts.URL + "/dashboard/")
	replay.c.Jar.SetCookies(u, []*http.Cookie{{Name: c.Name, Value: c.Value}})
	if resp, _ := replay.do("GET", "/dashboard/fleet", nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("fleet with a logged-out cookie: %d, want 303", resp.StatusCode)
	}
}

func TestOpenDashboardNeedsNoLogin(t *testing.T) {
	t.Parallel()
	e := start(t) // no public API keys
	job := e.submit("", protocol.SubmitRequest{})
	b := e.client()
	if resp, _ := b.do("GET", "/dashboard/login", nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login page of an open dashboard: %d, want 303", resp.StatusCode)
	}
	resp, page := b.do("GET", "/dashboard/queue", nil)
	if resp.StatusCode != http.StatusOK || cookie(resp) == nil || !strings.Contains(page, "open: no API keys") {
		t.Fatalf("queue: %d, cookie %v", resp.StatusCode, cookie(resp))
	}
	// Actions still need the session's CSRF token.
	if resp, _ := b.do("POST", "/dashboard/jobs/"+job.ID+"/cancel", url.Values{}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cancel without a token: %d, want 403", resp.StatusCode)
	}
	token := b.csrf("/dashboard/queue")
	if resp, _ := b.do("POST", "/dashboard/jobs/"+job.ID+"/cancel", url.Values{"csrf": {token}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("cancel: %d", resp.StatusCode)
	}
}

func TestPagesShowTheStore(t *testing.T) {
	t.Parallel()
	e := start(t, publicKey)
	e.heartbeat("vast-7", protocol.Heartbeat{Provider: "vast", GPUClass: "RTX_3090", WorkerType: protocol.WorkerTransient,
		SelfCheck: &protocol.SelfCheck{Engine: "musetalk", Device: "cuda", Error: "engine musetalk: no GPU"}, CachedAvatars: []string{"a1", "a2"}})
	job := e.submit(publicKey, protocol.SubmitRequest{Priority: 5})
	a := e.claim("vast-7")
	e.progress(a, "generate", 40, 100)
	failed := e.submit(publicKey, protocol.SubmitRequest{})
	e.heartbeat("salad-2", protocol.Heartbeat{Provider: "salad", GPUClass: "RTX_4090"})
	e.fail(e.claim("salad-2"), "broken input")
	b := e.client()
	b.login(publicKey)

	_, fleet := b.do("GET", "/dashboard/fleet", nil)
	for _, want := range []string{"transient", "vast", "RTX_3090", `id="worker-vast-7"`, "engine musetalk: no GPU", "40/100", ">2<"} {
		if !strings.Contains(fleet, want) {
			t.Errorf("fleet page lacks %q", want)
		}
	}
	_, queue := b.do("GET", "/dashboard/queue", nil)
	for _, want := range []string{`id="depth-running">1<`, `id="depth-failed">1<`, "broken input", `<svg class="chart"`, "/dashboard/jobs/" + failed.ID + "/retry"} {
		if !strings.Contains(queue, want) {
			t.Errorf("queue page lacks %q", want)
		}
	}
	resp, page := b.do("GET", "/dashboard/jobs/"+job.ID, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("job page: %d", resp.StatusCode)
	}
	for _, want := range []string{`id="job-state">running<`, `data-stage="generate"`, `id="cancel-job"`, `<svg class="timeline"`, "vast-7"} {
		if !strings.Contains(page, want) {
			t.Errorf("job page lacks %q", want)
		}
	}
	// The live endpoint has every region, with hashes.
	resp, body := b.do("GET", "/dashboard/api/jobs/"+job.ID, nil)
	var live struct {
		Regions map[string]string `json:"regions"`
		Hashes  map[string]string `json:"hashes"`
	}
	if err := json.Unmarshal([]byte(body), &live); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("live job: %d %s", resp.StatusCode, body)
	}
	for _, r := range []string{"summary", "progress", "attempts", "result", "actions"} {
		if _, ok := live.Regions[r]; !ok || live.Hashes[r] == "" {
			t.Errorf("live job lacks region %q", r)
		}
	}
	if resp, _ := b.do("GET", "/dashboard/jobs/no-such-job", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown job: %d, want 404", resp.StatusCode)
	}
	// Retry through the dashboard, then the public API shows it queued.
	token := b.csrf("/dashboard/queue")
	if resp, body := b.do("POST", "/dashboard/jobs/"+failed.ID+"/retry", url.Values{}, "X-CSRF-Token", token, "Accept", "application/json"); resp.StatusCode != http.StatusOK {
		t.Fatalf("retry: %d %s", resp.StatusCode, body)
	}
	if got := e.job(publicKey, failed.ID); got.State != protocol.JobQueued || got.Failures != 0 {
		t.Fatalf("after retry: %s, %d failures", got.State, got.Failures)
	}
}

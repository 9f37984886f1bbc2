package dashboard

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"math"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"
)

// view is what every page template receives.
type view struct {
	Title  string
	Nav    string // the page's entry in the navigation
	Live   string // the JSON endpoint the script polls; "" for none
	CSRF   string
	Open   bool // the public API (and so the dashboard) has no keys
	Notice string
	Now    time.Time
	Data   any
	// Regions are the page's live parts, rendered before the page, and
	// Hashes tell the script which version of each it shows.
	Regions map[string]template.HTML
	Hashes  map[string]string
}

// page is one dashboard page: its template, the regions the script
// refreshes, and how its model is read.
type page struct {
	name    string
	nav     string
	regions []string
	title   func(r *http.Request) string
	live    func(r *http.Request) string
	load    func(d *Dashboard, r *http.Request) (any, error)
}

var (
	fleetPage = &page{
		name: "fleet", nav: "fleet", regions: []string{"summary", "workers"},
		title: func(*http.Request) string { return "Fleet" },
		live:  func(*http.Request) string { return Prefix + "api/fleet" },
		load:  func(d *Dashboard, r *http.Request) (any, error) { return d.loadFleet(r.Context()) },
	}
	queuePage = &page{
		name: "queue", nav: "queue", regions: []string{"depth", "charts", "jobs"},
		title: func(*http.Request) string { return "Queue" },
		live:  func(*http.Request) string { return Prefix + "api/queue" },
		load:  func(d *Dashboard, r *http.Request) (any, error) { return d.loadQueue(r.Context()) },
	}
	jobPage = &page{
		name: "job", nav: "queue", regions: []string{"summary", "progress", "attempts", "result", "actions"},
		title: func(r *http.Request) string { return "Job " + r.PathValue("id") },
		live:  func(r *http.Request) string { return Prefix + "api/jobs/" + r.PathValue("id") },
		load:  func(d *Dashboard, r *http.Request) (any, error) { return d.loadJob(r.Context(), r.PathValue("id")) },
	}
)

// pageHandler renders a whole page.
func (d *Dashboard) pageHandler(p *page) func(http.ResponseWriter, *http.Request, *session) {
	return func(w http.ResponseWriter, r *http.Request, ss *session) {
		model, err := p.load(d, r)
		if err != nil {
			d.pageError(w, r, err)
			return
		}
		v := d.newView(r, ss, p, model)
		regions, err := d.renderRegions(p, v)
		if err != nil {
			d.internalError(w, r, err)
			return
		}
		v.Regions, v.Hashes = map[string]template.HTML{}, map[string]string{}
		for name, html := range regions {
			v.Regions[name] = template.HTML(html) // rendered by html/template
			v.Hashes[name] = regionHash(html)
		}
		d.render(w, r, http.StatusOK, p.name, v)
	}
}

// renderRegions renders each of a page's live regions.
func (d *Dashboard) renderRegions(p *page, v *view) (map[string]string, error) {
	out := map[string]string{}
	t := d.pages[p.name]
	for _, name := range p.regions {
		var b bytes.Buffer
		if err := t.ExecuteTemplate(&b, p.name+"."+name, v); err != nil {
			return nil, fmt.Errorf("rendering %s.%s: %w", p.name, name, err)
		}
		out[name] = b.String()
	}
	return out, nil
}

// regionHash identifies a version of a region's HTML.
func regionHash(html string) string {
	sum := sha256.Sum256([]byte(html))
	return hex.EncodeToString(sum[:8])
}

// liveResult is the JSON the pages poll: the HTML of each region and its
// hash.
type liveResult struct {
	Title       string            `json:"title"`
	GeneratedAt time.Time         `json:"generated_at"`
	Regions     map[string]string `json:"regions"`
	Hashes      map[string]string `json:"hashes"`
}

// liveHandler renders a page's regions as JSON.
func (d *Dashboard) liveHandler(p *page) func(http.ResponseWriter, *http.Request, *session) {
	return func(w http.ResponseWriter, r *http.Request, ss *session) {
		model, err := p.load(d, r)
		if err != nil {
			d.pageError(w, r, err)
			return
		}
		v := d.newView(r, ss, p, model)
		regions, err := d.renderRegions(p, v)
		if err != nil {
			d.internalError(w, r, err)
			return
		}
		out := liveResult{Title: v.Title, GeneratedAt: v.Now, Regions: regions, Hashes: map[string]string{}}
		for name, html := range regions {
			out.Hashes[name] = regionHash(html)
		}
		writeJSON(w, http.StatusOK, out)
	}
}

func (d *Dashboard) newView(r *http.Request, ss *session, p *page, model any) *view {
	return &view{Title: p.title(r), Nav: p.nav, Live: p.live(r), CSRF: ss.csrf, Open: d.sessions.open,
		Notice: notices[r.URL.Query().Get("notice")], Now: d.now(), Data: model}
}

// notices are the messages a redirect after a form POST (without the
// script) may ask a page to show; only these, so that a link cannot put
// words on the page.
var notices = map[string]string{
	"cancelled": "The job was cancelled.",
	"retried":   "The job was queued again.",
	"drained":   "The worker was asked to drain.",
	"undrained": "The worker's drain request was cleared.",
}

// parseTemplates reads the layout and each page's template.
func parseTemplates() (map[string]*template.Template, error) {
	base, err := template.New("base").Funcs(funcs).ParseFS(files, "templates/layout.html")
	if err != nil {
		return nil, fmt.Errorf("parsing the layout: %w", err)
	}
	names, err := fs.Glob(files, "templates/*.html")
	if err != nil {
		return nil, err
	}
	out := map[string]*template.Template{}
	for _, n := range names {
		name := strings.TrimSuffix(path.Base(n), ".html")
		if name == "layout" {
			continue
		}
		t, err := template.Must(base.Clone()).ParseFS(files, n)
		if err != nil {
			return nil, fmt.Errorf("parsing %s: %w", n, err)
		}
		out[name] = t
	}
	return out, nil
}

// render writes a whole page.
func (d *Dashboard) render(w http.ResponseWriter, r *http.Request, status int, name string, v *view) {
	if v.Now.IsZero() {
		v.Now = d.now()
	}
	var b bytes.Buffer
	if err := d.pages[name].ExecuteTemplate(&b, "layout", v); err != nil {
		d.log.ErrorContext(r.Context(), "dashboard: rendering a page failed", "page", name, "error", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

// renderError writes an error page (or JSON for the script).
func (d *Dashboard) renderError(w http.ResponseWriter, r *http.Request, status int, message string) {
	if wantsJSON(r) {
		writeJSON(w, status, actionResult{Message: message})
		return
	}
	d.render(w, r, status, "error", &view{Title: http.StatusText(status), Data: message})
}

// pageError answers a failed page load: a Refusal as it is, anything else
// as an internal error.
func (d *Dashboard) pageError(w http.ResponseWriter, r *http.Request, err error) {
	if rf, ok := err.(*Refusal); ok {
		d.renderError(w, r, rf.Status, rf.Message)
		return
	}
	d.internalError(w, r, err)
}

// refuse answers a request the dashboard will not serve.
func (d *Dashboard) refuse(w http.ResponseWriter, r *http.Request, status int, message string) {
	d.renderError(w, r, status, message)
}

func (d *Dashboard) internalError(w http.ResponseWriter, r *http.Request, err error) {
	d.log.ErrorContext(r.Context(), "dashboard: request failed", "path", r.URL.Path, "error", err)
	d.renderError(w, r, http.StatusInternalServerError, "Internal error: the control plane's log has the details.")
}

// wantsJSON reports whether the caller is the dashboard's script.
func wantsJSON(r *http.Request) bool {
	return strings.HasPrefix(r.URL.Path, Prefix+"api/") || strings.Contains(r.Header.Get("Accept"), "application/json")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// funcs are the templates' helpers.
var funcs = template.FuncMap{
	"age":      age,
	"ago":      func(now, t time.Time) string { return age(now.Sub(t)) + " ago" },
	"clock":    func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
	"clockp":   func(t *time.Time) string { return clockp(t) },
	"bytes":    humanBytes,
	"pct":      func(f float64) string { return strconv.Itoa(int(math.Floor(f*100))) + "%" },
	"rate":     func(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) },
	"add":      func(a, b int) int { return a + b },
	"short":    short,
	"join":     strings.Join,
	"progress": progressFraction,
}

// age writes a duration the way an operator reads it: 4s, 3m 12s, 2h 5m, 3d 4h.
func age(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := int64(d / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm %ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh %dm", s/3600, s%3600/60)
	}
	return fmt.Sprintf("%dd %dh", s/86400, s%86400/3600)
}

func clockp(t *time.Time) string {
	if t == nil {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// short abbreviates a long id for tight columns to its last 8
// characters: job ids are UUIDv7, whose leading digits are a timestamp
// that jobs submitted together share.
func short(id string) string {
	if len(id) <= 13 {
		return id
	}
	return "…" + id[len(id)-8:]
}

package b2test

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// readUpload reads an upload body and checks it against X-Bz-Content-Sha1,
// returning the data and its SHA1.
func readUpload(r *http.Request) ([]byte, string, *apiError) {
	if r.ContentLength < 0 {
		return nil, "", errf(http.StatusLengthRequired, "bad_request", "Content-Length is required")
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, r.ContentLength+1))
	if err != nil {
		return nil, "", errf(http.StatusBadRequest, "bad_request", "reading request body: %v", err)
	}
	if int64(len(body)) != r.ContentLength {
		return nil, "", errf(http.StatusBadRequest, "bad_request", "body has %d bytes, Content-Length says %d", len(body), r.ContentLength)
	}
	claimed := r.Header.Get("X-Bz-Content-Sha1")
	verify := true
	switch {
	case claimed == "":
		return nil, "", errf(http.StatusBadRequest, "bad_request", "X-Bz-Content-Sha1 is required")
	case claimed == "hex_digits_at_end":
		if len(body) < 40 {
			return nil, "", errf(http.StatusBadRequest, "bad_request", "body too short to end in a hex SHA1")
		}
		claimed = string(body[len(body)-40:])
		body = body[:len(body)-40]
	case claimed == "do_not_verify":
		claimed = sha1Hex(body)
	case strings.HasPrefix(claimed, "unverified:"):
		claimed = strings.TrimPrefix(claimed, "unverified:")
		verify = false
	}
	if !isHexSHA1(claimed) {
		return nil, "", errf(http.StatusBadRequest, "bad_request", "X-Bz-Content-Sha1 %q is not a hex SHA1", claimed)
	}
	if verify && !strings.EqualFold(claimed, sha1Hex(body)) {
		return nil, "", errf(http.StatusBadRequest, "bad_request", "Sha1 did not match data received")
	}
	return body, strings.ToLower(claimed), nil
}

// uploadFile handles b2_upload_file; rest is "<bucketId>/<url id>".
func (s *Server) uploadFile(w http.ResponseWriter, r *http.Request, rest string) *apiError {
	if r.Method != http.MethodPost {
		return errf(http.StatusMethodNotAllowed, "method_not_allowed", "b2_upload_file takes POST")
	}
	release, aerr := s.checkUploadToken(r, "upload")
	if aerr != nil {
		return aerr
	}
	defer release()
	bucketID, _, _ := strings.Cut(rest, "/")
	name, err := url.QueryUnescape(r.Header.Get("X-Bz-File-Name"))
	if err != nil {
		return errf(http.StatusBadRequest, "bad_request", "X-Bz-File-Name is not URL-encoded: %v", err)
	}
	if aerr := validName(name); aerr != nil {
		return aerr
	}
	info := map[string]string{}
	for k, vs := range r.Header {
		if ik, ok := strings.CutPrefix(k, "X-Bz-Info-"); ok && len(vs) > 0 {
			v, err := url.QueryUnescape(vs[0])
			if err != nil {
				return errf(http.StatusBadRequest, "bad_request", "header %s is not URL-encoded", k)
			}
			info[strings.ToLower(ik)] = v
		}
	}
	if len(info) > 10 {
		return errf(http.StatusBadRequest, "bad_request", "at most 10 X-Bz-Info headers")
	}
	data, sha, aerr := readUpload(r)
	if aerr != nil {
		return aerr
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" || ct == "b2/x-auto" {
		ct = "application/octet-stream"
	}
	s.mu.Lock()
	known := false
	for _, b := range s.buckets {
		known = known || b.id == bucketID
	}
	if !known {
		s.mu.Unlock()
		return errf(http.StatusBadRequest, "bad_bucket_id", "no bucket with id %q", bucketID)
	}
	f := &file{name: name, bucketID: bucketID, contentType: ct, action: "upload", sha1: sha, info: info, data: data}
	s.addFileLocked(f)
	resp := s.fileJSON(f)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// uploadPart handles b2_upload_part; rest is "<fileId>/<url id>".
func (s *Server) uploadPart(w http.ResponseWriter, r *http.Request, rest string) *apiError {
	if r.Method != http.MethodPost {
		return errf(http.StatusMethodNotAllowed, "method_not_allowed", "b2_upload_part takes POST")
	}
	release, aerr := s.checkUploadToken(r, "part")
	if aerr != nil {
		return aerr
	}
	defer release()
	fileID, _, _ := strings.Cut(rest, "/")
	n, err := strconv.Atoi(r.Header.Get("X-Bz-Part-Number"))
	if err != nil || n < 1 || n > 10000 {
		return errf(http.StatusBadRequest, "bad_request", "X-Bz-Part-Number must be 1 to 10000, got %q", r.Header.Get("X-Bz-Part-Number"))
	}
	data, sha, aerr := readUpload(r)
	if aerr != nil {
		return aerr
	}
	s.mu.Lock()
	f := s.files[fileID]
	if f == nil || f.action != "start" {
		s.mu.Unlock()
		return errf(http.StatusBadRequest, "bad_request", "no unfinished large file with id %q", fileID)
	}
	ts := s.nowLocked()
	f.parts[n] = &part{sha1: sha, data: data, ts: ts}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"fileId": fileID, "partNumber": n,
		"contentLength": len(data), "contentSha1": sha, "uploadTimestamp": ts})
	return nil
}

// download handles b2_download_file_by_name (rest "<bucket>/<name>") and
// b2_download_file_by_id (?fileId=), GET and HEAD, with one byte range.
func (s *Server) download(w http.ResponseWriter, r *http.Request, op string, fault *Fault) *apiError {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return errf(http.StatusMethodNotAllowed, "method_not_allowed", "downloads take GET or HEAD")
	}
	if aerr := s.checkAccount(r); aerr != nil {
		return aerr
	}
	s.mu.Lock()
	var f *file
	if op == "b2_download_file_by_id" {
		if g := s.files[r.URL.Query().Get("fileId")]; g != nil && g.action == "upload" {
			f = g
		}
	} else {
		esc := strings.TrimPrefix(r.URL.EscapedPath(), "/file/")
		bucketName, escName, _ := strings.Cut(esc, "/")
		name, err := url.QueryUnescape(escName)
		bn, berr := url.PathUnescape(bucketName)
		if err == nil && berr == nil {
			f = s.currentLocked(bn, name)
		}
	}
	var (
		data                      []byte
		id, name, sha, ct, stampS string
		info                      map[string]string
	)
	if f != nil {
		data, id, name, sha, ct, info = f.data, f.id, f.name, f.sha1, f.contentType, cloneInfo(f.info)
		stampS = strconv.FormatInt(f.ts, 10)
	}
	s.mu.Unlock()
	if f == nil {
		return errf(http.StatusNotFound, "not_found", "File with such name does not exist.")
	}
	size := int64(len(data))
	start, end := int64(0), size-1
	status := http.StatusOK
	if h := r.Header.Get("Range"); h != "" {
		a, b, ok := parseRange(h, size)
		if !ok {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", size))
			return errf(http.StatusRequestedRangeNotSatisfiable, "range_not_satisfiable", "range %q is outside the file's %d bytes", h, size)
		}
		start, end, status = a, b, http.StatusPartialContent
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, size))
	}
	body := data[start : end+1]
	hd := w.Header()
	hd.Set("Content-Type", ct)
	hd.Set("Content-Length", strconv.Itoa(len(body)))
	hd.Set("Accept-Ranges", "bytes")
	hd.Set("X-Bz-File-Id", id)
	hd.Set("X-Bz-File-Name", escapeName(name))
	hd.Set("X-Bz-Content-Sha1", sha)
	hd.Set("X-Bz-Upload-Timestamp", stampS)
	for k, v := range info {
		hd.Set("X-Bz-Info-"+k, url.QueryEscape(v))
	}
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return nil
	}
	if fault != nil && fault.Corrupt && len(body) > 0 {
		body = slices.Clone(body)
		body[len(body)/2] ^= 0x10
	}
	truncate := fault != nil && fault.Truncate
	if truncate {
		body = body[:min(max(fault.TruncateAfter, 0), int64(len(body)))]
	}
	var bps int64
	if fault != nil {
		bps = fault.BytesPerSecond
	}
	if err := writeBody(w, r, body, bps); err != nil {
		return nil
	}
	if truncate {
		http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler) // closes the connection mid-body
	}
	return nil
}

// writeBody writes b, at most bps bytes a second when bps > 0.
func writeBody(w http.ResponseWriter, r *http.Request, b []byte, bps int64) error {
	if bps <= 0 {
		_, err := w.Write(b)
		return err
	}
	rc := http.NewResponseController(w)
	step := max(bps/10, 1)
	start := time.Now()
	for sent := int64(0); sent < int64(len(b)); {
		n := min(step, int64(len(b))-sent)
		due := start.Add(time.Duration(float64(sent+n) / float64(bps) * float64(time.Second)))
		if err := sleepCtx(r.Context(), time.Until(due)); err != nil {
			return err
		}
		if _, err := w.Write(b[sent : sent+n]); err != nil {
			return err
		}
		rc.Flush()
		sent += n
	}
	return nil
}

// parseRange parses a single "bytes=a-b", "bytes=a-" or "bytes=-n" range,
// clamped to size. ok is false when it cannot be satisfied (or is malformed).
func parseRange(h string, size int64) (start, end int64, ok bool) {
	spec, found := strings.CutPrefix(h, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false
	}
	a, b, found := strings.Cut(spec, "-")
	if !found {
		return 0, 0, false
	}
	if a == "" {
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || n <= 0 || size == 0 {
			return 0, 0, false
		}
		return max(size-n, 0), size - 1, true
	}
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil || start < 0 || start >= size {
		return 0, 0, false
	}
	end = size - 1
	if b != "" {
		e, err := strconv.ParseInt(b, 10, 64)
		if err != nil || e < start {
			return 0, 0, false
		}
		end = min(e, size-1)
	}
	return start, end, true
}

// escapeName URL-encodes a file name, keeping slashes, as B2 expects.
func escapeName(name string) string {
	return strings.ReplaceAll(url.QueryEscape(name), "%2F", "/")
}

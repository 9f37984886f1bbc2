package b2test

import (
	"cmp"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// fileJSON is B2's file object.
type fileJSON struct {
	AccountID       string            `json:"accountId"`
	Action          string            `json:"action"`
	BucketID        string            `json:"bucketId"`
	ContentLength   int64             `json:"contentLength"`
	ContentSha1     string            `json:"contentSha1"`
	ContentType     string            `json:"contentType"`
	FileID          string            `json:"fileId"`
	FileInfo        map[string]string `json:"fileInfo"`
	FileName        string            `json:"fileName"`
	UploadTimestamp int64             `json:"uploadTimestamp"`
}

func (s *Server) fileJSON(f *file) fileJSON {
	size := int64(len(f.data))
	if f.action == "start" {
		size = 0
	}
	return fileJSON{
		AccountID: s.accountID, Action: f.action, BucketID: f.bucketID,
		ContentLength: size, ContentSha1: f.sha1, ContentType: f.contentType,
		FileID: f.id, FileInfo: cloneInfo(f.info), FileName: f.name, UploadTimestamp: f.ts,
	}
}

type bucketJSON struct {
	AccountID      string            `json:"accountId"`
	BucketID       string            `json:"bucketId"`
	BucketName     string            `json:"bucketName"`
	BucketType     string            `json:"bucketType"`
	BucketInfo     map[string]string `json:"bucketInfo"`
	LifecycleRules []any             `json:"lifecycleRules"`
	Revision       int               `json:"revision"`
}

func (s *Server) bucketJSON(b *bucket) bucketJSON {
	return bucketJSON{
		AccountID: s.accountID, BucketID: b.id, BucketName: b.name, BucketType: b.typ,
		BucketInfo: map[string]string{}, LifecycleRules: []any{}, Revision: b.revision,
	}
}

func sha1Hex(b []byte) string {
	h := sha1.Sum(b)
	return hex.EncodeToString(h[:])
}

func isHexSHA1(s string) bool {
	if len(s) != 40 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// baseURL is the URL clients reached this server at.
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// authorize handles b2_authorize_account; ver is "v1".."v4".
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, ver string) *apiError {
	const prefix = "Basic "
	h := r.Header.Get("Authorization")
	ok := false
	if strings.HasPrefix(h, prefix) {
		if raw, err := base64.StdEncoding.DecodeString(h[len(prefix):]); err == nil {
			id, key, _ := strings.Cut(string(raw), ":")
			ok = id == s.KeyID && key == s.AppKey
		}
	}
	if !ok {
		return errf(http.StatusUnauthorized, "unauthorized", "application key id or application key is not valid")
	}
	s.mu.Lock()
	tok := s.newTokenLocked("account", "", "")
	s.mu.Unlock()
	base := baseURL(r)
	caps := []string{"listBuckets", "listFiles", "readFiles", "writeFiles", "deleteFiles", "shareFiles", "writeBuckets"}
	if ver == "v1" || ver == "v2" {
		writeJSON(w, http.StatusOK, map[string]any{
			"accountId": s.accountID, "authorizationToken": tok,
			"apiUrl": base, "downloadUrl": base, "s3ApiUrl": base,
			"absoluteMinimumPartSize": s.cfg.MinPartSize, "minimumPartSize": s.cfg.RecommendedPartSize,
			"recommendedPartSize": s.cfg.RecommendedPartSize,
			"allowed":             map[string]any{"capabilities": caps, "bucketId": nil, "bucketName": nil, "namePrefix": nil},
		})
		return nil
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"accountId": s.accountID, "authorizationToken": tok,
		"applicationKeyExpirationTimestamp": nil,
		"apiInfo": map[string]any{"storageApi": map[string]any{
			"absoluteMinimumPartSize": s.cfg.MinPartSize, "recommendedPartSize": s.cfg.RecommendedPartSize,
			"apiUrl": base, "downloadUrl": base, "s3ApiUrl": base, "infoType": "storageApi",
			"capabilities": caps, "bucketId": nil, "bucketName": nil, "namePrefix": nil,
		}},
	})
	return nil
}

func isAPIOp(op string) bool {
	switch op {
	case "b2_list_buckets", "b2_create_bucket", "b2_get_upload_url", "b2_start_large_file",
		"b2_get_upload_part_url", "b2_finish_large_file", "b2_cancel_large_file", "b2_list_parts",
		"b2_list_unfinished_large_files", "b2_list_file_names", "b2_list_file_versions",
		"b2_delete_file_version", "b2_hide_file", "b2_get_file_info":
		return true
	}
	return false
}

// api handles a JSON API call whose account token has been checked.
func (s *Server) api(op string, r *http.Request) (any, *apiError) {
	var req struct {
		AccountID       string            `json:"accountId"`
		BucketID        string            `json:"bucketId"`
		BucketName      string            `json:"bucketName"`
		BucketType      string            `json:"bucketType"`
		FileID          string            `json:"fileId"`
		FileName        string            `json:"fileName"`
		ContentType     string            `json:"contentType"`
		FileInfo        map[string]string `json:"fileInfo"`
		PartSha1Array   []string          `json:"partSha1Array"`
		StartFileName   string            `json:"startFileName"`
		StartFileID     string            `json:"startFileId"`
		StartPartNumber int               `json:"startPartNumber"`
		MaxFileCount    int               `json:"maxFileCount"`
		MaxPartCount    int               `json:"maxPartCount"`
		Prefix          string            `json:"prefix"`
		NamePrefix      string            `json:"namePrefix"`
		Delimiter       string            `json:"delimiter"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	bucketByID := func() (*bucket, *apiError) {
		for _, b := range s.buckets {
			if b.id == req.BucketID {
				return b, nil
			}
		}
		return nil, errf(http.StatusBadRequest, "bad_bucket_id", "no bucket with id %q", req.BucketID)
	}
	largeFile := func() (*file, *apiError) {
		f := s.files[req.FileID]
		if f == nil || f.action != "start" {
			return nil, errf(http.StatusBadRequest, "bad_request", "no unfinished large file with id %q", req.FileID)
		}
		return f, nil
	}
	switch op {
	case "b2_list_buckets":
		if req.AccountID != s.accountID {
			return nil, errf(http.StatusUnauthorized, "unauthorized", "wrong accountId")
		}
		out := []bucketJSON{}
		for _, b := range s.buckets {
			if (req.BucketName == "" || b.name == req.BucketName) && (req.BucketID == "" || b.id == req.BucketID) {
				out = append(out, s.bucketJSON(b))
			}
		}
		slices.SortFunc(out, func(a, b bucketJSON) int { return cmp.Compare(a.BucketName, b.BucketName) })
		return map[string]any{"buckets": out}, nil

	case "b2_create_bucket":
		if req.AccountID != s.accountID {
			return nil, errf(http.StatusUnauthorized, "unauthorized", "wrong accountId")
		}
		if req.BucketName == "" {
			return nil, errf(http.StatusBadRequest, "bad_request", "bucketName is required")
		}
		if _, ok := s.buckets[req.BucketName]; ok {
			return nil, errf(http.StatusBadRequest, "duplicate_bucket_name", "bucket name is already in use")
		}
		typ := req.BucketType
		if typ == "" {
			typ = "allPrivate"
		}
		return s.bucketJSON(s.createBucketLocked(req.BucketName, typ)), nil

	case "b2_get_upload_url":
		b, err := bucketByID()
		if err != nil {
			return nil, err
		}
		s.seq++
		path := fmt.Sprintf("/b2api/v3/b2_upload_file/%s/u%d", b.id, s.seq)
		tok := s.newTokenLocked("upload", b.id, path)
		return map[string]any{"bucketId": b.id, "uploadUrl": baseURL(r) + path, "authorizationToken": tok}, nil

	case "b2_start_large_file":
		b, err := bucketByID()
		if err != nil {
			return nil, err
		}
		if err := validName(req.FileName); err != nil {
			return nil, err
		}
		if len(req.FileInfo) > 10 {
			return nil, errf(http.StatusBadRequest, "bad_request", "at most 10 fileInfo entries")
		}
		if h, ok := req.FileInfo["large_file_sha1"]; ok && !isHexSHA1(h) {
			return nil, errf(http.StatusBadRequest, "bad_request", "large_file_sha1 %q is not a hex SHA1", h)
		}
		ct := req.ContentType
		if ct == "" || ct == "b2/x-auto" {
			ct = "application/octet-stream"
		}
		f := &file{name: req.FileName, bucketID: b.id, contentType: ct, action: "start",
			sha1: "none", info: lowerKeys(req.FileInfo), parts: map[int]*part{}}
		s.addFileLocked(f)
		return s.fileJSON(f), nil

	case "b2_get_upload_part_url":
		f, err := largeFile()
		if err != nil {
			return nil, err
		}
		s.seq++
		path := fmt.Sprintf("/b2api/v3/b2_upload_part/%s/p%d", f.id, s.seq)
		tok := s.newTokenLocked("part", f.id, path)
		return map[string]any{"fileId": f.id, "uploadUrl": baseURL(r) + path, "authorizationToken": tok}, nil

	case "b2_finish_large_file":
		f, err := largeFile()
		if err != nil {
			return nil, err
		}
		return s.finishLocked(f, req.PartSha1Array)

	case "b2_cancel_large_file":
		f, err := largeFile()
		if err != nil {
			return nil, err
		}
		delete(s.files, f.id)
		return map[string]any{"fileId": f.id, "accountId": s.accountID, "bucketId": f.bucketID, "fileName": f.name}, nil

	case "b2_list_parts":
		f, err := largeFile()
		if err != nil {
			return nil, err
		}
		max := req.MaxPartCount
		if max <= 0 || max > 1000 {
			max = 1000
		}
		nums := make([]int, 0, len(f.parts))
		for n := range f.parts {
			if n >= req.StartPartNumber {
				nums = append(nums, n)
			}
		}
		slices.Sort(nums)
		parts := []map[string]any{}
		var next any
		for i, n := range nums {
			if i == max {
				next = n
				break
			}
			p := f.parts[n]
			parts = append(parts, map[string]any{"fileId": f.id, "partNumber": n,
				"contentLength": len(p.data), "contentSha1": p.sha1, "uploadTimestamp": p.ts})
		}
		return map[string]any{"parts": parts, "nextPartNumber": next}, nil

	case "b2_list_unfinished_large_files":
		b, err := bucketByID()
		if err != nil {
			return nil, err
		}
		var fs []*file
		for _, f := range s.files {
			if f.bucketID == b.id && f.action == "start" && strings.HasPrefix(f.name, req.NamePrefix) && f.id >= req.StartFileID {
				fs = append(fs, f)
			}
		}
		slices.SortFunc(fs, func(a, b *file) int { return cmp.Compare(a.id, b.id) })
		max := clampCount(req.MaxFileCount, 100)
		out := []fileJSON{}
		var next any
		for i, f := range fs {
			if i == max {
				next = f.id
				break
			}
			out = append(out, s.fileJSON(f))
		}
		return map[string]any{"files": out, "nextFileId": next}, nil

	case "b2_list_file_names", "b2_list_file_versions":
		b, err := bucketByID()
		if err != nil {
			return nil, err
		}
		return s.listLocked(b, op == "b2_list_file_versions", req.StartFileName, req.StartFileID,
			req.Prefix, req.Delimiter, clampCount(req.MaxFileCount, 100)), nil

	case "b2_delete_file_version":
		f := s.files[req.FileID]
		if f == nil || f.name != req.FileName {
			return nil, errf(http.StatusBadRequest, "file_not_present", "File not present: %s %s", req.FileName, req.FileID)
		}
		delete(s.files, f.id)
		return map[string]any{"fileId": f.id, "fileName": f.name}, nil

	case "b2_hide_file":
		b, err := bucketByID()
		if err != nil {
			return nil, err
		}
		if s.currentLocked(b.name, req.FileName) == nil {
			return nil, errf(http.StatusBadRequest, "no_such_file", "no visible file named %q", req.FileName)
		}
		f := &file{name: req.FileName, bucketID: b.id, contentType: "application/x-bz-hide-marker",
			action: "hide", sha1: "none", info: map[string]string{}}
		s.addFileLocked(f)
		return s.fileJSON(f), nil

	case "b2_get_file_info":
		f := s.files[req.FileID]
		if f == nil {
			return nil, errf(http.StatusNotFound, "not_found", "no file with id %q", req.FileID)
		}
		return s.fileJSON(f), nil
	}
	return nil, errf(http.StatusNotFound, "not_found", "unknown operation %q", op)
}

func clampCount(n, def int) int {
	if n <= 0 {
		return def
	}
	return min(n, 10000)
}

func lowerKeys(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[strings.ToLower(k)] = v
	}
	return out
}

// finishLocked turns an unfinished large file into an upload.
func (s *Server) finishLocked(f *file, shas []string) (any, *apiError) {
	if len(shas) < 2 {
		return nil, errf(http.StatusBadRequest, "bad_request", "large files must have at least 2 parts, got %d", len(shas))
	}
	if len(shas) != len(f.parts) {
		return nil, errf(http.StatusBadRequest, "bad_request", "partSha1Array has %d entries but %d parts were uploaded", len(shas), len(f.parts))
	}
	var data []byte
	for i, want := range shas {
		n := i + 1
		p := f.parts[n]
		switch {
		case p == nil:
			return nil, errf(http.StatusBadRequest, "bad_request", "part %d was never uploaded", n)
		case !strings.EqualFold(p.sha1, want):
			return nil, errf(http.StatusBadRequest, "bad_request", "part %d: partSha1Array has %s, the part's SHA1 is %s", n, want, p.sha1)
		case n < len(shas) && int64(len(p.data)) < s.cfg.MinPartSize:
			return nil, errf(http.StatusBadRequest, "bad_request", "part %d is %d bytes, smaller than the minimum part size %d", n, len(p.data), s.cfg.MinPartSize)
		}
		data = append(data, p.data...)
	}
	if h, ok := f.info["large_file_sha1"]; ok && !strings.EqualFold(h, sha1Hex(data)) {
		return nil, errf(http.StatusBadRequest, "bad_request", "large_file_sha1 %s does not match the SHA1 of the parts, %s", h, sha1Hex(data))
	}
	f.data = data
	f.parts = nil
	f.action = "upload"
	f.ts = s.nowLocked()
	return s.fileJSON(f), nil
}

// listLocked answers b2_list_file_names (versions false: the newest
// version of each name, if not hidden) and b2_list_file_versions.
func (s *Server) listLocked(b *bucket, versions bool, startName, startID, prefix, delim string, max int) any {
	var fs []*file
	for _, f := range s.files {
		if f.bucketID != b.id || !strings.HasPrefix(f.name, prefix) {
			continue
		}
		if !versions && f.action == "start" {
			continue
		}
		fs = append(fs, f)
	}
	// By name, then newest first.
	slices.SortFunc(fs, func(a, b *file) int {
		if c := cmp.Compare(a.name, b.name); c != 0 {
			return c
		}
		return cmp.Compare(b.ts, a.ts)
	})
	if !versions {
		var cur []*file
		for i, f := range fs {
			if (i == 0 || fs[i-1].name != f.name) && f.action == "upload" {
				cur = append(cur, f)
			}
		}
		fs = cur
	}
	// Skip to the start position.
	i := 0
	for i < len(fs) && fs[i].name < startName {
		i++
	}
	if versions && startID != "" {
		for j := i; j < len(fs) && fs[j].name == startName; j++ {
			if fs[j].id == startID {
				i = j
				break
			}
		}
	}
	out := []fileJSON{}
	var nextName, nextID any
	lastFolder := ""
	for ; i < len(fs); i++ {
		f := fs[i]
		if delim != "" {
			if k := strings.Index(f.name[len(prefix):], delim); k >= 0 {
				folder := f.name[:len(prefix)+k+len(delim)]
				if folder == lastFolder {
					continue
				}
				if len(out) == max {
					nextName = f.name
					break
				}
				lastFolder = folder
				out = append(out, fileJSON{Action: "folder", FileName: folder, FileInfo: map[string]string{}})
				continue
			}
		}
		if len(out) == max {
			nextName, nextID = f.name, f.id
			break
		}
		out = append(out, s.fileJSON(f))
	}
	if versions {
		return map[string]any{"files": out, "nextFileName": nextName, "nextFileId": nextID}
	}
	return map[string]any{"files": out, "nextFileName": nextName}
}

package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/avatargen/musetalk/protocol"
)

// maxJSONBody bounds every JSON request body.
const maxJSONBody = 1 << 20

// apiError is an error with the HTTP status and protocol code it answers
// with. Its message is shown to the caller, so it must never carry a
// secret or an internal detail.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.message }

var _ error = (*apiError)(nil)

func errorf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

func badRequest(format string, args ...any) *apiError {
	return errorf(http.StatusBadRequest, protocol.CodeBadRequest, format, args...)
}

func notFound(format string, args ...any) *apiError {
	return errorf(http.StatusNotFound, protocol.CodeNotFound, format, args...)
}

func conflict(format string, args ...any) *apiError {
	return errorf(http.StatusConflict, protocol.CodeConflict, format, args...)
}

func tooLarge(format string, args ...any) *apiError {
	return errorf(http.StatusRequestEntityTooLarge, protocol.CodeTooLarge, format, args...)
}

// writeJSON writes v as the JSON answer with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError writes the protocol.ErrorBody for e.
func writeError(w http.ResponseWriter, e *apiError) {
	if e.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="musetalk"`)
	}
	writeJSON(w, e.status, protocol.ErrorBody{Error: protocol.ErrorDetail{Code: e.code, Message: e.message}})
}

// decodeOpts relaxes decodeJSON.
type decodeOpts uint8

const (
	allowEmpty   decodeOpts = 1 << iota // an empty body leaves dst as it is
	allowUnknown                        // unknown fields are ignored (forward compatibility)
)

// decodeJSON reads one JSON object from r's body into dst, whatever its
// Content-Type (deployed workers differ in what they send), limited to
// maxJSONBody bytes, rejecting fields of the wrong type, trailing data,
// and, unless opts allow them, unknown fields and an empty body. The errors
// name the problem and, where there is one, the field.
func decodeJSON(w http.ResponseWriter, r *http.Request, dst any, opts decodeOpts) error {
	body := http.MaxBytesReader(w, r.Body, maxJSONBody)
	dec := json.NewDecoder(body)
	if opts&allowUnknown == 0 {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(dst); err != nil {
		if errors.Is(err, io.EOF) && opts&allowEmpty != 0 {
			return nil
		}
		return jsonError(err, "request body")
	}
	if err := dec.Decode(new(json.RawMessage)); !errors.Is(err, io.EOF) {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			return jsonError(err, "request body")
		}
		return badRequest("request body: unexpected data after the JSON object")
	}
	return nil
}

// decodeJSONBytes decodes one JSON object held in b (a form field called
// what) with the same strictness as decodeJSON.
func decodeJSONBytes(b []byte, dst any, what string) error {
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return jsonError(err, what)
	}
	if err := dec.Decode(new(json.RawMessage)); !errors.Is(err, io.EOF) {
		return badRequest("%s: unexpected data after the JSON object", what)
	}
	return nil
}

// jsonError turns a json decoding error into a 4xx naming the problem.
func jsonError(err error, what string) *apiError {
	var (
		syntax *json.SyntaxError
		typ    *json.UnmarshalTypeError
		mb     *http.MaxBytesError
	)
	switch {
	case errors.As(err, &mb):
		return tooLarge("%s: larger than the limit of %d bytes", what, mb.Limit)
	case errors.Is(err, io.EOF):
		return badRequest("%s: empty; want a JSON object", what)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("%s: malformed JSON: unexpected end of input", what)
	case errors.As(err, &syntax):
		return badRequest("%s: malformed JSON at byte %d: %s", what, syntax.Offset, syntax.Error())
	case errors.As(err, &typ):
		if typ.Field == "" {
			return badRequest("%s: want %s, got JSON %s", what, jsonKind(typ.Type.Kind().String()), typ.Value)
		}
		return badRequest("%s: field %q: want %s, got JSON %s", what, typ.Field, jsonKind(typ.Type.Kind().String()), typ.Value)
	}
	// encoding/json reports unknown fields only by message.
	if msg := err.Error(); strings.HasPrefix(msg, "json: unknown field ") {
		return badRequest("%s: unknown field %s", what, strings.TrimPrefix(msg, "json: unknown field "))
	}
	return badRequest("%s: malformed JSON: %s", what, strings.TrimPrefix(err.Error(), "json: "))
}

// jsonKind names a Go kind the way a JSON author thinks of it.
func jsonKind(kind string) string {
	switch kind {
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "an integer"
	case "float32", "float64":
		return "a number"
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "slice", "array":
		return "an array"
	case "struct", "map":
		return "an object"
	}
	return kind
}

func isJSONType(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

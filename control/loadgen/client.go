package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/avatargen/musetalk/protocol"
)

// Limits of the generator's client.
const (
	maxAnswer   = 1 << 20 // bytes of an answer's body read
	callTimeout = time.Minute
)

// conn is one simulated caller's connection to the control plane: a
// plain HTTP/1.1 client over one kept-alive TCP (or TLS) connection that
// it reuses, with buffers that it reuses too. It costs a fraction of
// net/http's client (no goroutines per connection, few allocations), so
// that the generator, which shares the machine with the control plane,
// takes as little of it as it can. It is not safe for concurrent use;
// each loop has its own.
type conn struct {
	base    *url.URL
	host    string // the Host header
	auth    string // "Bearer <key>", or ""
	tlsConf *tls.Config

	c    net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	req  bytes.Buffer
	resp bytes.Buffer
}

func newConn(base *url.URL, key string) *conn {
	c := &conn{base: base, host: base.Host}
	if key != "" {
		c.auth = "Bearer " + key
	}
	if base.Scheme == "https" {
		c.tlsConf = &tls.Config{ServerName: base.Hostname()}
	}
	return c
}

// parseBase checks a control plane's base URL.
func parseBase(s string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimRight(s, "/"))
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("%q is not an http:// or https:// URL", s)
	}
	return u, nil
}

// callError is an answer with an unexpected status.
type callError struct {
	Status int
	Code   string
	Msg    string
}

func (e *callError) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.Code, e.Msg)
	}
	return fmt.Sprintf("HTTP %d", e.Status)
}

// stale reports whether err is the control plane's 409 saying the attempt
// is no longer current (stale_token or conflict).
func stale(err error) bool {
	var ce *callError
	return errors.As(err, &ce) && ce.Status == http.StatusConflict &&
		(ce.Code == protocol.CodeStaleToken || ce.Code == protocol.CodeConflict)
}

// postJSON sends v as JSON and decodes a 2xx answer into out (when not
// nil). It returns the answer's status; 204 is not an error.
func (c *conn) postJSON(ctx context.Context, path string, v, out any) (int, error) {
	c.req.Reset()
	if err := json.NewEncoder(&c.req).Encode(v); err != nil {
		return 0, fmt.Errorf("encoding the request: %w", err)
	}
	return c.do(ctx, http.MethodPost, path, "application/json", c.req.Bytes(), nil, out)
}

// header is one extra request header.
type header struct{ name, value string }

// do sends one request and reads the whole answer, decoding a 2xx body
// into out (when not nil). A connection that fails is closed; the next
// call dials again.
func (c *conn) do(ctx context.Context, method, path, contentType string, body []byte, hdr []header, out any) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if c.c == nil {
		if err := c.dial(ctx); err != nil {
			return 0, err
		}
	}
	stop := context.AfterFunc(ctx, func() { c.c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	c.c.SetDeadline(time.Now().Add(callTimeout))
	status, keep, err := c.roundTrip(method, path, contentType, body, hdr)
	if err != nil || !keep {
		c.close()
	}
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, err
	}
	switch {
	case status == http.StatusNoContent:
		return status, nil
	case status/100 == 2:
		if out != nil {
			if err := json.Unmarshal(c.resp.Bytes(), out); err != nil {
				return status, fmt.Errorf("decoding the answer: %w", err)
			}
		}
		return status, nil
	}
	e := &callError{Status: status}
	var eb protocol.ErrorBody
	if json.Unmarshal(c.resp.Bytes(), &eb) == nil {
		e.Code, e.Msg = eb.Error.Code, eb.Error.Message
	} else {
		e.Msg = strings.TrimSpace(string(c.resp.Bytes()[:min(c.resp.Len(), 200)]))
	}
	return status, e
}

func (c *conn) dial(ctx context.Context) error {
	addr := c.base.Host
	if c.base.Port() == "" {
		addr = net.JoinHostPort(c.base.Hostname(), map[bool]string{true: "443", false: "80"}[c.tlsConf != nil])
	}
	d := net.Dialer{Timeout: 30 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	if c.tlsConf != nil {
		tc := tls.Client(nc, c.tlsConf)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return err
		}
		nc = tc
	}
	c.c = nc
	if c.br == nil {
		c.br, c.bw = bufio.NewReaderSize(nc, 8<<10), bufio.NewWriterSize(nc, 8<<10)
	} else {
		c.br.Reset(nc)
		c.bw.Reset(nc)
	}
	return nil
}

func (c *conn) close() {
	if c.c != nil {
		c.c.Close()
		c.c = nil
	}
}

// roundTrip writes the request and reads the answer's status and body
// into c.resp. keep is false when the connection cannot be used again.
func (c *conn) roundTrip(method, path, contentType string, body []byte, hdr []header) (status int, keep bool, err error) {
	w := c.bw
	w.WriteString(method)
	w.WriteByte(' ')
	w.WriteString(c.base.Path)
	w.WriteString(path)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(c.host)
	w.WriteString("\r\nUser-Agent: musetalk-bench\r\n")
	if c.auth != "" {
		w.WriteString("Authorization: ")
		w.WriteString(c.auth)
		w.WriteString("\r\n")
	}
	if contentType != "" {
		w.WriteString("Content-Type: ")
		w.WriteString(contentType)
		w.WriteString("\r\n")
	}
	for _, h := range hdr {
		w.WriteString(h.name)
		w.WriteString(": ")
		w.WriteString(h.value)
		w.WriteString("\r\n")
	}
	w.WriteString("Content-Length: ")
	w.WriteString(strconv.Itoa(len(body)))
	w.WriteString("\r\n\r\n")
	w.Write(body)
	if err := w.Flush(); err != nil {
		return 0, false, fmt.Errorf("sending the request: %w", err)
	}
	return c.readAnswer(method)
}

// readAnswer reads one HTTP/1.1 answer: its status line, the headers it
// needs (Content-Length, Transfer-Encoding, Connection) and the body into
// c.resp (at most maxAnswer bytes are kept).
func (c *conn) readAnswer(method string) (status int, keep bool, err error) {
	line, err := c.line()
	if err != nil {
		return 0, false, fmt.Errorf("reading the answer: %w", err)
	}
	// "HTTP/1.1 200 OK"
	proto, rest, ok := strings.Cut(line, " ")
	code, _, _ := strings.Cut(rest, " ")
	if !ok || !strings.HasPrefix(proto, "HTTP/1.") {
		return 0, false, fmt.Errorf("reading the answer: malformed status line %q", line)
	}
	if status, err = strconv.Atoi(code); err != nil || status < 100 {
		return 0, false, fmt.Errorf("reading the answer: malformed status line %q", line)
	}
	keep = proto == "HTTP/1.1"
	length, chunked := int64(-1), false
	for {
		h, err := c.line()
		if err != nil {
			return 0, false, fmt.Errorf("reading the answer's headers: %w", err)
		}
		if h == "" {
			break
		}
		name, value, _ := strings.Cut(h, ":")
		value = strings.TrimSpace(value)
		switch {
		case strings.EqualFold(name, "Content-Length"):
			if length, err = strconv.ParseInt(value, 10, 64); err != nil || length < 0 {
				return 0, false, fmt.Errorf("reading the answer: bad Content-Length %q", value)
			}
		case strings.EqualFold(name, "Transfer-Encoding"):
			chunked = strings.EqualFold(value, "chunked")
		case strings.EqualFold(name, "Connection"):
			if strings.EqualFold(value, "close") {
				keep = false
			}
		}
	}
	c.resp.Reset()
	switch {
	case status == http.StatusNoContent || status == http.StatusNotModified || status < 200 || method == http.MethodHead:
	case chunked:
		err = c.readChunked()
	case length >= 0:
		err = c.readBody(length)
	default: // to the end of the connection
		_, err = c.resp.ReadFrom(io.LimitReader(c.br, maxAnswer))
		keep = false
	}
	if err != nil {
		return 0, false, fmt.Errorf("reading the answer's body: %w", err)
	}
	return status, keep, nil
}

// line reads one CRLF-terminated line without its end.
func (c *conn) line() (string, error) {
	b, err := c.br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return "", errors.New("header line too long")
		}
		return "", err
	}
	return string(bytes.TrimRight(b, "\r\n")), nil
}

// readBody reads n bytes of body, keeping them in c.resp while it holds
// fewer than maxAnswer bytes.
func (c *conn) readBody(n int64) error {
	keep := min(n, max(maxAnswer-int64(c.resp.Len()), 0))
	if _, err := io.CopyN(&c.resp, c.br, keep); err != nil {
		return err
	}
	if n > keep {
		if _, err := io.CopyN(io.Discard, c.br, n-keep); err != nil {
			return err
		}
	}
	return nil
}

func (c *conn) readChunked() error {
	for {
		line, err := c.line()
		if err != nil {
			return err
		}
		size, _, _ := strings.Cut(line, ";")
		n, err := strconv.ParseInt(strings.TrimSpace(size), 16, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("bad chunk size %q", line)
		}
		if n == 0 {
			for { // trailers, then the empty line
				if t, err := c.line(); err != nil || t == "" {
					return err
				}
			}
		}
		if err := c.readBody(n); err != nil {
			return err
		}
		if _, err := c.line(); err != nil { // the chunk's CRLF
			return err
		}
	}
}

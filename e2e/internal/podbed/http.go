package podbed

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// RemotePort is where StartRemote listens, in the namespace podman runs in
// (the pods reach it at their gateway address).
const RemotePort = "9090"

// StartRemote starts the original destination of the pods' outbound
// connections: an HTTP server on RemotePort in the namespace at nsPath,
// answering "remote via=<the X-Ii-Proxy header> peer=<source address>". It
// stops when owner ends; t is the test whose failure a setup error is.
func StartRemote(t, owner testing.TB, nsPath string) {
	t.Helper()
	var ln net.Listener
	require.NoError(t, InNetns(nsPath, func() (err error) {
		ln, err = net.Listen("tcp", ":"+RemotePort)
		return err
	}))
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		peer, _, _ := net.SplitHostPort(req.RemoteAddr)
		fmt.Fprintf(w, "remote via=%s peer=%s", req.Header.Get("X-Ii-Proxy"), peer)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	owner.Cleanup(func() { _ = srv.Close() })
}

// Reply is an HTTP answer: its headers, its body without surrounding white
// space, and the client's own address (Get only).
type Reply struct {
	Headers http.Header
	Body    string
	Local   string
}

// Header is the first value of header k.
func (r Reply) Header(k string) string { return r.Headers.Get(k) }

// Get makes one HTTP GET from the namespace at nsPath: the connection is
// dialled on a thread switched into it, with no keep-alive. A status other
// than 200 is an error.
func Get(nsPath, url string) (Reply, error) {
	var local string
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := InNetns(nsPath, func() (err error) {
			c, err = (&net.Dialer{Timeout: 3 * time.Second}).DialContext(ctx, network, addr)
			return err
		})
		if err == nil {
			local, _, _ = net.SplitHostPort(c.LocalAddr().String())
		}
		return c, err
	}}
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return Reply{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return Reply{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return Reply{}, fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return Reply{Headers: resp.Header, Body: strings.TrimSpace(string(body)), Local: local}, nil
}

// ParseCurl reads curl -D - output: the headers, a blank line, the body.
func ParseCurl(out string) Reply {
	r := Reply{Headers: http.Header{}}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if line == "" {
			break
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			r.Headers.Add(strings.TrimSpace(k), strings.TrimSpace(v))
		}
	}
	var rest bytes.Buffer
	for sc.Scan() {
		rest.WriteString(sc.Text() + "\n")
	}
	r.Body = strings.TrimSpace(rest.String())
	return r
}

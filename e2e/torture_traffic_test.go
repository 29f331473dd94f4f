package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Two helper roles of this test binary (roles_test.go's extraRoles):
//
//	torture-flood: workers that open short connections to E2E_ADDRS in
//	  turn, sending E2E_SEND, until stdin closes; one line per
//	  connection: "<start unix ns> <duration ns> <reply or ERR reason>".
//	torture-probe: one connection to each of E2E_ADDRS at once, same lines.
const (
	envAddrs   = "E2E_ADDRS"
	envWorkers = "E2E_WORKERS"
	envDial    = "E2E_DIAL" // dial timeout, a Go duration
)

func init() {
	extraRoles["torture-flood"] = tortureFloodRole
	extraRoles["torture-probe"] = tortureProbeRole
}

func tortureFloodRole() error {
	addrs := strings.Split(os.Getenv(envAddrs), ",")
	workers, err := strconv.Atoi(os.Getenv(envWorkers))
	if err != nil || workers < 1 {
		return fmt.Errorf("%s=%q: %v", envWorkers, os.Getenv(envWorkers), err)
	}
	dial, err := time.ParseDuration(os.Getenv(envDial))
	if err != nil {
		return err
	}
	send := os.Getenv(envSend)
	out := &lineWriter{w: bufio.NewWriter(os.Stdout)}
	stop := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()
	go func() {
		for range time.Tick(50 * time.Millisecond) {
			out.flush()
		}
	}()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				out.line(oneConn(net.Dialer{Timeout: dial}, addrs[i%len(addrs)], send))
			}
		}(w)
	}
	wg.Wait()
	out.flush()
	return nil
}

func tortureProbeRole() error {
	dial, err := time.ParseDuration(os.Getenv(envDial))
	if err != nil {
		return err
	}
	out := &lineWriter{w: bufio.NewWriter(os.Stdout)}
	var wg sync.WaitGroup
	for _, addr := range strings.Split(os.Getenv(envAddrs), ",") {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out.line(addr + " " + oneConn(net.Dialer{Timeout: dial}, addr, os.Getenv(envSend)))
		}()
	}
	wg.Wait()
	out.flush()
	return nil
}

// oneConn makes one connection with request (roles_test.go) and renders it
// as a flood line.
func oneConn(d net.Dialer, addr, send string) string {
	start := time.Now()
	reply, err := request(d, addr, send)
	took := time.Since(start)
	text := strings.TrimSpace(reply)
	if err != nil {
		text = "ERR " + err.Error()
	}
	return fmt.Sprintf("%d %d %s", start.UnixNano(), took.Nanoseconds(), strings.ReplaceAll(text, "\n", " "))
}

type lineWriter struct {
	mu sync.Mutex
	w  *bufio.Writer
}

func (l *lineWriter) line(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintln(l.w, s)
}

func (l *lineWriter) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	_ = l.w.Flush()
}

// direction is one kind of connection the suite judges: inbound from the
// client to the pod's port 80, outbound from the app (UID 1000) to the
// remote's 8080. Both ask the proxy to forward (FWD), so a proxy whose own
// upstream is captured again shows as a loop.
type direction struct {
	name     string
	captured string // the landing when the rules capture it
	direct   string // the landing when nothing captures it
}

var (
	inbound = direction{"inbound", "proxy:15006 orig=pod:80 peer=client > app:80 peer=pass", "app:80 peer=client"}
	// The app connects from the pod's address on the remote's link.
	outbound = direction{"outbound", "proxy:15001 orig=remote:8080 peer=podr > remote:8080 peer=podr", "remote:8080 peer=podr"}
)

// Verdicts of one connection.
const (
	vCaptured = "captured" // through the proxy, and the proxy's upstream not captured again
	vDirect   = "direct"   // reached the app or the remote without the proxy: an escape under capture
	vLoop     = "loop"     // the proxy's own upstream was captured again
	vTimeout  = "timeout"  // black-holed (no answer within the dial timeout)
	vError    = "error"    // refused, reset, or the proxy's upstream failed: closed, not escaped
	vWrong    = "wrong"    // landed anywhere else
)

// judge gives the verdict on a rendered landing.
func judge(d direction, landing string) string {
	switch {
	case strings.HasPrefix(landing, "ERR timeout"):
		return vTimeout
	case strings.HasPrefix(landing, "ERR "):
		return vError
	case strings.Count(landing, "proxy:") > 1:
		return vLoop
	case landing == d.captured:
		return vCaptured
	case landing == d.direct:
		return vDirect
	case strings.HasPrefix(landing, "proxy:") && strings.Contains(landing, "> error"):
		if strings.Contains(landing, "timeout") {
			return vTimeout
		}
		return vError
	}
	return vWrong
}

// floodConn is one connection of a flood.
type floodConn struct {
	start   int64 // unix ns
	took    time.Duration
	dir     direction
	landing string
	verdict string
}

// flood is a running torture-flood helper.
type flood struct {
	dir   direction
	stdin io.WriteCloser
	done  chan struct{}
	mu    sync.Mutex
	conns []floodConn
	bad   []string // lines that did not parse
	wait  func() error
}

// startFlood starts a flood of dir's connections, in both families, from
// nsName as u, with workers at once.
func startFlood(t *testing.T, nsName string, u user, dir direction, addrList []string, workers int) *flood {
	t.Helper()
	cmd := helperCmd("torture-flood", u, envAddrs+"="+strings.Join(addrList, ","), envSend+"=FWD",
		envWorkers+"="+strconv.Itoa(workers), envDial+"=2s")
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	require.NoError(t, startIn(nsName, cmd), "start the %s flood in %s", dir.name, nsName)
	f := &flood{dir: dir, stdin: stdin, done: make(chan struct{}), wait: cmd.Wait}
	go func() {
		defer close(f.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c, ok := parseFloodLine(dir, sc.Text())
			f.mu.Lock()
			if ok {
				f.conns = append(f.conns, c)
			} else {
				f.bad = append(f.bad, sc.Text())
			}
			f.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Process.Kill()
		<-f.done
		_ = cmd.Wait()
		if t.Failed() && stderr.Len() > 0 {
			t.Logf("%s flood stderr: %s", dir.name, stderr.String())
		}
	})
	return f
}

// stop ends the flood (in-flight connections finish) and returns every
// connection it made.
func (f *flood) stop() []floodConn {
	_ = f.stdin.Close()
	select {
	case <-f.done:
	case <-time.After(15 * time.Second):
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conns
}

func parseFloodLine(dir direction, line string) (floodConn, bool) {
	fields := strings.SplitN(line, " ", 3)
	if len(fields) != 3 {
		return floodConn{}, false
	}
	start, err1 := strconv.ParseInt(fields[0], 10, 64)
	took, err2 := strconv.ParseInt(fields[1], 10, 64)
	if err1 != nil || err2 != nil {
		return floodConn{}, false
	}
	landing := fields[2]
	if !strings.HasPrefix(landing, "ERR ") {
		landing = render(landing)
	}
	return floodConn{start: start, took: time.Duration(took), dir: dir, landing: landing, verdict: judge(dir, landing)}, true
}

// probeResult is where the four probe connections of a state landed.
type probeResult struct {
	verdicts map[string]string // "inbound ipv4" -> verdict
	landings map[string]string
}

func (p probeResult) String() string {
	var parts []string
	for _, d := range []direction{inbound, outbound} {
		for _, f := range families {
			k := d.name + " " + string(f)
			parts = append(parts, fmt.Sprintf("%s: %s", k, p.landings[k]))
		}
	}
	return strings.Join(parts, "; ")
}

// probe makes one inbound and one outbound connection per family, all at
// once, and judges them.
func probe(b *bed) probeResult {
	res := probeResult{verdicts: map[string]string{}, landings: map[string]string{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range []struct {
		dir  direction
		ns   string
		as   user
		to   string
		port string
	}{
		{inbound, b.client, rootUser, "pod", "80"},
		{outbound, b.pod, appUser, "remote", "8080"},
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			addrsByFamily := map[string]family{}
			var list []string
			for _, f := range families {
				a := net.JoinHostPort(addrs[p.to][f], p.port)
				addrsByFamily[a] = f
				list = append(list, a)
			}
			cmd := helperCmd("torture-probe", p.as, envAddrs+"="+strings.Join(list, ","), envSend+"=FWD", envDial+"=1s")
			var out, stderr syncBuffer
			cmd.Stdout, cmd.Stderr = &out, &stderr
			err := startIn(p.ns, cmd)
			if err == nil {
				err = cmd.Wait()
			}
			mu.Lock()
			defer mu.Unlock()
			for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
				addr, rest, _ := strings.Cut(line, " ")
				f, ok := addrsByFamily[addr]
				if !ok {
					continue
				}
				c, ok := parseFloodLine(p.dir, rest)
				if ok {
					k := p.dir.name + " " + string(f)
					res.verdicts[k], res.landings[k] = c.verdict, c.landing
				}
			}
			for _, f := range families {
				k := p.dir.name + " " + string(f)
				if _, ok := res.verdicts[k]; !ok {
					res.verdicts[k], res.landings[k] = vWrong, fmt.Sprintf("probe failed: %v %s", err, stderr.String())
				}
			}
		}()
	}
	wg.Wait()
	return res
}

// want is the verdict a probe must get under c.
func (c ttConfig) want() string {
	if c.captures() {
		return vCaptured
	}
	return vDirect
}

// safeUnder reports whether every probe landed as under one of cfgs, or
// failed closed (timeout, refused): never an escape or a loop that none of
// them allows. It returns the offending probe otherwise.
func (p probeResult) safeUnder(cfgs ...ttConfig) (bool, string) {
	for k, v := range p.verdicts {
		if v == vTimeout || v == vError {
			continue
		}
		ok := false
		for _, c := range cfgs {
			ok = ok || v == c.want()
		}
		if !ok {
			return false, fmt.Sprintf("%s %s (%s)", k, v, p.landings[k])
		}
	}
	return true, ""
}

// all reports whether every probe got verdict v.
func (p probeResult) all(v string) bool {
	for _, got := range p.verdicts {
		if got != v {
			return false
		}
	}
	return len(p.verdicts) == 4
}

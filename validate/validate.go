package validate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Probe configures one validation run.
type Probe struct {
	// CapturePorts are the ports the rules redirect to: the outbound (-p)
	// and the inbound (-z) capture port. Run listens on each, on the
	// loopback address of every family it probes.
	CapturePorts []uint16
	// Port is the probe's original destination port (--iptables-probe-port).
	Port uint16
	// Timeout bounds the whole run (--probe-timeout).
	Timeout time.Duration
	// IPv6 probes [::6] from [::1] too, after 127.0.0.6 from 127.0.0.1.
	IPv6 bool
}

// Error is a failed validation.
type Error struct {
	// Family is "ipv4" or "ipv6".
	Family string
	// Target is the address the probe connected to, e.g. 127.0.0.6:15002.
	Target string
	// Reason says what happened.
	Reason string
	// Missing says what must be there for the probe to pass.
	Missing string
}

func (e *Error) Error() string {
	return fmt.Sprintf("validation failed (%s): probe to %s: %s; missing: %s", e.Family, e.Target, e.Reason, e.Missing)
}

// family is what differs between the families' probes.
type family struct {
	name     string
	network  string
	loopback netip.Addr // where the listeners are and the probe comes from
	target   netip.Addr // the passthrough address the probe connects to
}

var (
	ipv4 = family{"ipv4", "tcp4", netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.6")}
	ipv6 = family{"ipv6", "tcp6", netip.MustParseAddr("::1"), netip.MustParseAddr("::6")}
)

// missingRules is what a probe that is not redirected lacks.
const missingRules = "the nat rules that send the proxy's own connections over lo to the inbound capture port " +
	"(OUTPUT -j ISTIO_OUTPUT; ISTIO_OUTPUT -o lo ! -d <localhost> -p tcp -m owner --uid-owner <proxy uid> -j ISTIO_IN_REDIRECT; " +
	"ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports <inbound port>), or a probe run as the proxy UID"

// Run probes IPv4, then IPv6 when asked, and returns nil when every
// family passes, else the first *Error (or the context's error).
func Run(ctx context.Context, p Probe) error {
	if len(p.CapturePorts) == 0 || p.Port == 0 || p.Timeout <= 0 {
		return errors.New("validate: capture ports, probe port and timeout are required")
	}
	ctx, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()
	fams := []family{ipv4}
	if p.IPv6 {
		fams = append(fams, ipv6)
	}
	for _, f := range fams {
		if err := probe(ctx, p, f); err != nil {
			return err
		}
	}
	return nil
}

// accepted is what a listener saw of one connection.
type accepted struct {
	listener uint16
	origPort uint16
	err      error
}

func probe(ctx context.Context, p Probe, f family) error {
	target := netip.AddrPortFrom(f.target, p.Port).String()
	fail := func(reason, missing string) error {
		return &Error{Family: f.name, Target: target, Reason: reason, Missing: missing}
	}
	if f == ipv6 && !hasLocalAddr(f.target) {
		return fail("::6 is not an address of this namespace", "::6/128 on lo (a run that writes the IPv6 rules adds it)")
	}
	results := make(chan accepted, 16)
	var listening, refused []string
	for _, port := range p.CapturePorts {
		addr := netip.AddrPortFrom(f.loopback, port).String()
		var lc net.ListenConfig
		l, err := lc.Listen(ctx, f.network, addr)
		if err != nil {
			refused = append(refused, fmt.Sprintf("%s (%v)", addr, err))
			continue
		}
		defer l.Close()
		listening = append(listening, addr)
		go serve(l.(*net.TCPListener), port, results)
	}
	if len(listening) == 0 {
		return fail("cannot listen on "+strings.Join(refused, ", "),
			"a free capture port: run the validation before the proxy starts")
	}

	var lastErr error
	for {
		c, err := dial(ctx, f, target)
		if err != nil {
			if lastErr == nil || ctx.Err() == nil {
				lastErr = err // not the attempt the deadline cut short
			}
			if ctx.Err() != nil {
				return fail(describe(lastErr, ctx.Err()), missingRules)
			}
			select {
			case <-ctx.Done():
				return fail(describe(lastErr, ctx.Err()), missingRules)
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		// Connected: one of our listeners must have accepted it.
		select {
		case r := <-results:
			c.Close()
			switch {
			case r.err != nil:
				return fail(fmt.Sprintf("redirected to port %d, but its original destination cannot be read: %v", r.listener, r.err),
					"conntrack's original destination (SO_ORIGINAL_DST)")
			case r.origPort != p.Port:
				return fail(fmt.Sprintf("redirected to port %d with original destination port %d", r.listener, r.origPort),
					fmt.Sprintf("a redirect that keeps the original destination port %d", p.Port))
			}
			return nil
		case <-time.After(min(time.Second, time.Until(deadline(ctx)))):
			c.Close()
			return fail(fmt.Sprintf("connected to %s, but none of the listeners on %s accepted it", c.RemoteAddr(), strings.Join(listening, ", ")),
				missingRules)
		}
	}
}

// dial connects from the family's loopback address, so the probe's
// source is never the passthrough address the rules exempt.
func dial(ctx context.Context, f family, target string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: f.loopback.AsSlice()}, Timeout: time.Second}
	return d.DialContext(ctx, f.network, target)
}

func deadline(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

// serve accepts connections until the listener closes and reports each
// one's original destination; it answers with the port, as Istio's does.
func serve(l *net.TCPListener, port uint16, results chan<- accepted) {
	for {
		c, err := l.AcceptTCP()
		if err != nil {
			return
		}
		r := accepted{listener: port}
		r.origPort, r.err = originalPort(c)
		_, _ = c.Write([]byte(strconv.Itoa(int(r.origPort))))
		c.Close()
		select {
		case results <- r:
		default: // nobody waits: a stray connection
		}
	}
}

// describe says why the last connection attempt failed.
func describe(err, ctxErr error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused: no rule redirected it to a capture port"
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH):
		return "unreachable: " + err.Error()
	case err == nil:
		return ctxErr.Error()
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "no answer before the timeout"
	}
	return err.Error()
}

// hasLocalAddr reports whether a is an address of this namespace.
func hasLocalAddr(a netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, ia := range addrs {
		if n, ok := ia.(*net.IPNet); ok {
			if b, ok := netip.AddrFromSlice(n.IP); ok && b.Unmap() == a {
				return true
			}
		}
	}
	return false
}

// Package validate proves that the capture rules work, the way Istio's
// istio-validation initContainer does: it listens on the capture ports of
// the proxy (the outbound and the inbound port) on the loopback address,
// connects from loopback to 127.0.0.6 (and [::6] when IPv6 is probed) on
// the probe port, nowhere listened on, and succeeds only when one of its
// listeners accepts that connection with the probe port as its original
// destination (SO_ORIGINAL_DST). That is exactly what the nat rules do to
// the proxy's own connections over lo: ISTIO_OUTPUT sends them to
// ISTIO_IN_REDIRECT, which redirects them to the inbound capture port.
//
// Contract:
//   - Run must be called by a process of the proxy's UID: the rules
//     recognise the proxy by the socket's owner. Any other UID is not
//     redirected, and the probe fails; so does the proxy's GID under
//     another UID, whose lo traffic the UID's rule returns first.
//   - Run must run before the proxy listens on the capture ports: a port
//     it cannot listen on is reported.
//   - Run works in the network namespace of the calling thread. It creates
//     every socket on the calling goroutine (its goroutines only accept on
//     listeners already open), so a caller may run it on a thread locked
//     into another namespace.
//   - Run changes nothing: it opens sockets and closes them again.
//   - A failure is an *Error naming the family, the address probed, what
//     happened and what is missing. The command maps it to exit code 126,
//     Istio's code for a failed validation.
//
// It is the only package besides iptables that does socket I/O; capture
// stays pure.
package validate

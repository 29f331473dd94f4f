//go:build linux

package main

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The data path: new outbound TCP connections per second through
// REDIRECT. Each case is a pod namespace (nsPod) programmed with
//
//	-p 15001 -u 1337 -m REDIRECT -i '*' -x <N /24s> -b '' --ipv6=false
//
// (the bench runs as root, so its connections are captured), a listener
// on 127.0.0.1:15001 there, and client threads switched into the
// namespace that connect to 192.0.2.x:80 (not excluded: the nat OUTPUT
// chain walks past every exclusion and REDIRECTs to 15001) and close at
// once with a reset, so that no TIME_WAIT socket holds a port. Every
// connection stays inside the namespace. The cases alternate in
// -conn-rounds rounds so that load drifts hit them all.

var dataPathSizes = []int{10, 1000, 5000, 10000}

// dpCase is one data-path case and its running counts.
type dpCase struct {
	backend string
	n       int
	ns      ns
	ln      *listener
	ok      int64
	failed  int64
	elapsed time.Duration
	rates   []float64     // conn/s in each round
	cpu     time.Duration // the bench's CPU time over the rounds
	lastErr error         // of a failed connect
}

// rate is the median of the case's per-round rates: a burst of load from
// elsewhere spoils a round, not the figure.
func (c *dpCase) rate() float64 { return medianFloat(c.rates) }

// relative is the median over rounds of c's rate over base's in the same
// round, so that both sides of each ratio saw the same load.
func (c *dpCase) relative(base *dpCase) float64 {
	var rs []float64
	for r := range min(len(c.rates), len(base.rates)) {
		if base.rates[r] > 0 {
			rs = append(rs, c.rates[r]/base.rates[r])
		}
	}
	return medianFloat(rs)
}

func dataPathSection(t *tally) (err error) {
	fmt.Println()
	fmt.Printf("### Data path: new outbound TCP connections per second through REDIRECT\n\n")
	fmt.Printf("%s per case in %d rounds, the cases alternating; %d client threads; conn/s is the median over rounds, "+
		"each ratio the median of the per-round ratios. CPU µs/conn: the bench's own user+sys time (clients, listener and the kernel's work in their context) per connection, less sensitive to other load than conn/s.\n\n", *connTime, *connRounds, *clients)
	var cases []*dpCase
	defer func() {
		for _, c := range cases {
			if c.ln != nil {
				c.ln.stop()
			}
			c.ns.delete()
		}
	}()
	for _, size := range dataPathSizes {
		for _, backend := range []string{"iptables (nft)", "native"} {
			if size > 5000 && backend != "native" {
				continue // the target is native's; iptables at 5,000 already shows its slope
			}
			progress("data path: set up %s with %d excluded CIDRs", backend, size)
			c, err := setUpDataPath(backend, size)
			if c != nil {
				cases = append(cases, c)
			}
			if err != nil {
				return err
			}
		}
	}
	slice := *connTime / time.Duration(*connRounds)
	for r := range *connRounds {
		progress("data path: round %d of %d", r+1, *connRounds)
		for i := range cases {
			c := cases[(i+r)%len(cases)] // each round starts with another case
			var r0, r1 unix.Rusage
			unix.Getrusage(unix.RUSAGE_SELF, &r0)
			ok, failed, el, lastErr, err := connectFor(c.ns, slice)
			unix.Getrusage(unix.RUSAGE_SELF, &r1)
			c.cpu += cpuTime(r1) - cpuTime(r0)
			if err != nil {
				return fmt.Errorf("data path %s with %d excluded CIDRs: %w", c.backend, c.n, err)
			}
			c.ok += ok
			c.failed += failed
			c.elapsed += el
			c.rates = append(c.rates, float64(ok)/el.Seconds())
			if lastErr != nil {
				c.lastErr = lastErr
			}
		}
	}
	for _, c := range cases {
		if err := c.check(); err != nil {
			return fmt.Errorf("data path %s with %d excluded CIDRs: %w", c.backend, c.n, err)
		}
		if c.failed > 0 {
			progress("data path: %s with %d excluded CIDRs: %d of %d connects failed, the last with %v", c.backend, c.n, c.failed, c.ok+c.failed, c.lastErr)
		}
	}

	find := func(backend string, n int) *dpCase {
		for _, c := range cases {
			if c.backend == backend && c.n == n {
				return c
			}
		}
		return nil
	}
	var cells [][]string
	for _, size := range dataPathSizes {
		ipt, nat := find("iptables (nft)", size), find("native", size)
		row := []string{thousands(size), "–", "–", "–", "–", "–"}
		if ipt != nil {
			row[1], row[4] = kilo(ipt.rate()), ipt.cpuPerConn()
		}
		if nat != nil {
			row[2], row[5] = kilo(nat.rate()), nat.cpuPerConn()
		}
		if ipt != nil && nat != nil {
			row[3] = fmt.Sprintf("%.2f", nat.relative(ipt))
		}
		cells = append(cells, row)
	}
	markdown(os.Stdout, "r", []string{"excluded CIDRs (-x)", "iptables (nft) conn/s", "native conn/s", "native/iptables",
		"iptables CPU µs/conn", "native CPU µs/conn"}, cells)

	fmt.Println()
	// Each target is judged on conn/s; the same figure from CPU time per
	// connection is shown beside it, for a machine that is not quiet.
	ipt10, nat10 := find("iptables (nft)", 10), find("native", 10)
	vsIptables := nat10.relative(ipt10)
	targets := [][]string{{"native vs iptables at 10 CIDRs", fmt.Sprintf("%.3f×", vsIptables), fmt.Sprintf("%.3f×", nat10.cheaper(ipt10)), "≥ 1×",
		t.judge(criterion{name: "native slower", figure: vsIptables, limit: 1, min: true})}}
	worst, worstAt, worstCPU := 1.0, 0, 1.0
	for _, size := range dataPathSizes[1:] {
		c := find("native", size)
		rel, relCPU := c.relative(nat10), c.cheaper(nat10)
		targets = append(targets, []string{fmt.Sprintf("native, 10 → %s CIDRs", thousands(size)), percent(rel), percent(relCPU), "", ""})
		if rel < worst {
			worst, worstAt = rel, size
		}
		worstCPU = min(worstCPU, relCPU)
	}
	worstText := "no drop"
	if worstAt > 0 {
		worstText = fmt.Sprintf("%s (at %s)", percent(worst), thousands(worstAt))
	}
	worstCPUText := "no drop"
	if worstCPU < 1 {
		worstCPUText = percent(worstCPU)
	}
	targets = append(targets, []string{fmt.Sprintf("native within 10%% from 10 to %s CIDRs", thousands(dataPathSizes[len(dataPathSizes)-1])),
		worstText, worstCPUText, "≥ -10%", t.judge(criterion{name: "native drops", figure: worst, limit: 0.9, min: true})})
	markdown(os.Stdout, "lrrll", []string{"data-path target", "conn/s", "by CPU µs/conn", "target", "result"}, targets)
	return nil
}

// percent spells a ratio as a change: 0.95 is -5.0%.
func percent(r float64) string { return fmt.Sprintf("%+.1f%%", 100*(r-1)) }

// cheaper is how much faster c is than base by CPU time per connection
// (base's over c's): above 1 when c costs less.
func (c *dpCase) cheaper(base *dpCase) float64 {
	if c.ok == 0 || base.ok == 0 || c.cpu == 0 {
		return 0
	}
	return (float64(base.cpu) / float64(base.ok)) / (float64(c.cpu) / float64(c.ok))
}

func kilo(rate float64) string { return fmt.Sprintf("%.1fk", rate/1000) }

func cpuTime(r unix.Rusage) time.Duration {
	return time.Duration(r.Utime.Nano() + r.Stime.Nano())
}

// cpuPerConn is the bench's CPU time (clients and listener, user+sys, the
// kernel's work on their behalf included) per successful connection: less
// sensitive to other load on the machine than conn/s.
func (c *dpCase) cpuPerConn() string {
	if c.ok == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f", float64(c.cpu.Nanoseconds())/float64(c.ok)/1000)
}

// setUpDataPath makes the pod namespace of one case, applies the tool
// there and starts the listener. The case is returned with whatever it
// holds so far, for the caller to remove, even on error.
func setUpDataPath(backend string, size int) (*dpCase, error) {
	list, err := excludedCIDRs(size)
	if err != nil {
		return nil, err
	}
	n, err := newNS(nsPod)
	if err != nil {
		return nil, err
	}
	c := &dpCase{backend: backend, n: size, ns: n}
	args := []string{*bin, "-p", "15001", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", list, "-b", "", "--ipv6=false"}
	if backend == "native" {
		args = append(args, native)
	}
	if _, err := startIn(n, args, nil, nil); err != nil {
		return c, err
	}
	c.ln, err = listen(n)
	return c, err
}

// check asserts what the counts claim: every successful connect reached
// the listener (so it went through the REDIRECT), and an excluded
// destination is not captured.
func (c *dpCase) check() error {
	if c.ok == 0 {
		return fmt.Errorf("no connection succeeded (%d failed)", c.failed)
	}
	deadline := time.Now().Add(2 * time.Second)
	for c.ln.accepted.Load() < c.ok && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	// A connect that gave up (SO_SNDTIMEO) may still have been
	// established and accepted: it counts as failed, not as a stray.
	if got := c.ln.accepted.Load(); got < c.ok || got > c.ok+c.failed {
		return fmt.Errorf("%d connects succeeded and %d failed, but %d reached 127.0.0.1:15001", c.ok, c.failed, got)
	}
	return inNS(c.ns, func() error {
		captured, err := connects([4]byte{1, 0, 0, 1}, 200*time.Millisecond)
		if err != nil {
			return err
		}
		if captured {
			return errors.New("excluded destination 1.0.0.1:80 was captured")
		}
		return nil
	})
}

// connects reports whether a TCP connection to dst:80 is established
// within wait (from the calling thread's namespace).
func connects(dst [4]byte, wait time.Duration) (bool, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return false, fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	err = unix.Connect(fd, &unix.SockaddrInet4{Port: 80, Addr: dst})
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, unix.EINPROGRESS) {
		return false, nil
	}
	return established(fd, wait)
}

// established waits up to wait for a pending connect on fd.
func established(fd int, wait time.Duration) (bool, error) {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	for {
		n, err := unix.Poll(pfd, int(wait.Milliseconds()))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("poll: %w", err)
		}
		if n == 0 {
			return false, nil
		}
		soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return false, fmt.Errorf("getsockopt SO_ERROR: %w", err)
		}
		return soErr == 0, nil
	}
}

// listener accepts and closes connections on 127.0.0.1:15001 of a
// namespace, counting them.
type listener struct {
	fd       int
	accepted atomic.Int64
	wg       sync.WaitGroup
}

// acceptors is how many threads block in accept.
const acceptors = 2

func listen(n ns) (*listener, error) {
	l := &listener{fd: -1}
	err := inNS(n, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		l.fd = fd
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return fmt.Errorf("setsockopt SO_REUSEADDR: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: 15001, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			return fmt.Errorf("bind 127.0.0.1:15001: %w", err)
		}
		if err := unix.Listen(fd, 4096); err != nil {
			return fmt.Errorf("listen 127.0.0.1:15001: %w", err)
		}
		return nil
	})
	if err != nil {
		if l.fd >= 0 {
			unix.Close(l.fd)
		}
		return nil, fmt.Errorf("listen in %s: %w", n.name, err)
	}
	for range acceptors {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				nfd, _, err := unix.Accept4(l.fd, unix.SOCK_CLOEXEC)
				if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ECONNABORTED) {
					continue
				}
				if err != nil {
					return // shut down
				}
				unix.Close(nfd)
				l.accepted.Add(1)
			}
		}()
	}
	return l, nil
}

// stop wakes the acceptors (shutdown makes a blocked accept fail) and
// closes the socket.
func (l *listener) stop() {
	unix.Shutdown(l.fd, unix.SHUT_RDWR)
	l.wg.Wait()
	unix.Close(l.fd)
}

// connectFor runs -clients threads in n that connect to 192.0.2.x:80 and
// reset at once, for d, and returns the connects that succeeded and
// failed, the time they took, and the error of a failed one.
func connectFor(n ns, d time.Duration) (ok, failed int64, elapsed time.Duration, lastErr error, err error) {
	var (
		wg    sync.WaitGroup
		ready sync.WaitGroup
		start = make(chan struct{})
		okN   atomic.Int64
		failN atomic.Int64
		errMu sync.Mutex
		first error
		last  atomic.Value
		until time.Time
	)
	for i := range *clients {
		wg.Add(1)
		ready.Add(1)
		go func() {
			defer wg.Done()
			signalled := false
			err := inNS(n, func() error {
				ready.Done()
				signalled = true
				<-start
				var good, bad int64
				defer func() { okN.Add(good); failN.Add(bad) }()
				linger := &unix.Linger{Onoff: 1, Linger: 0}
				timeout := &unix.Timeval{Sec: 1}
				for k := i; time.Now().Before(until); k += *clients {
					fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
					if err != nil {
						return fmt.Errorf("socket: %w", err)
					}
					unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, linger)
					unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, timeout)
					err = unix.Connect(fd, &unix.SockaddrInet4{Port: 80, Addr: [4]byte{192, 0, 2, byte(1 + k%254)}})
					if errors.Is(err, unix.EINTR) {
						var up bool
						up, err = established(fd, time.Second)
						if err == nil && !up {
							err = unix.ETIMEDOUT
						}
					}
					unix.Close(fd)
					if err == nil {
						good++
					} else {
						bad++
						last.Store(err)
					}
				}
				return nil
			})
			if !signalled {
				ready.Done()
			}
			if err != nil {
				errMu.Lock()
				first = errors.Join(first, err)
				errMu.Unlock()
			}
		}()
	}
	ready.Wait()
	begin := time.Now()
	until = begin.Add(d)
	close(start)
	wg.Wait()
	elapsed = time.Since(begin)
	lastErr, _ = last.Load().(error)
	return okN.Load(), failN.Load(), elapsed, lastErr, first
}

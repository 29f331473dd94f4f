package main

import (
	"net/netip"
	"path/filepath"
	"strings"
)

// procDir returns "/proc/PID/" (or "/proc/PID/task/TID/") when netns is
// /proc/PID/ns/net (or /proc/PID/task/TID/ns/net), else "". PID may be
// self.
func procDir(netns string) string {
	rest, ok := strings.CutPrefix(netns, "/proc/")
	if !ok {
		return ""
	}
	rest, ok = strings.CutSuffix(rest, "/ns/net")
	if !ok {
		return ""
	}
	parts := strings.Split(rest, "/")
	switch {
	case len(parts) == 1 && parts[0] != "":
	case len(parts) == 3 && parts[0] != "" && parts[1] == "task" && parts[2] != "" && strings.Trim(parts[2], "0123456789") == "":
	default:
		return ""
	}
	return "/proc/" + rest + "/"
}

// resolvConfPath is the resolv.conf a process in the namespace at netns
// reads ("" the current one): for /proc/PID/ns/net, that process's own
// /etc/resolv.conf (through /proc/PID/root, the pod's file in a CNI call);
// for a named namespace, what `ip netns exec NAME` shows:
// /etc/netns/NAME/resolv.conf when it exists, else /etc/resolv.conf.
func resolvConfPath(netns string, exists func(string) bool) string {
	if dir := procDir(netns); dir != "" {
		return dir + "root/etc/resolv.conf"
	}
	if netns != "" {
		if p := filepath.Join("/etc/netns", filepath.Base(netns), "resolv.conf"); exists(p) {
			return p
		}
	}
	return "/etc/resolv.conf"
}

// parseResolvConf returns the addresses of the nameserver lines, in
// order, and the nameserver values that cannot be captured (a link-local
// address with a zone, a name, garbage). Comment lines start with # or ;.
func parseResolvConf(text string) (servers, skipped []string) {
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		f := strings.Fields(line)
		if f[0] != "nameserver" || len(f) < 2 {
			continue
		}
		a, err := netip.ParseAddr(f[1])
		if err != nil || a.Zone() != "" || a.IsUnspecified() {
			skipped = append(skipped, f[1])
			continue
		}
		servers = append(servers, a.Unmap().String())
	}
	return servers, skipped
}

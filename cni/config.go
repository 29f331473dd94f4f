package cni

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/mesh-init/istio-iptables/capture"
	"github.com/mesh-init/istio-iptables/iptables"
)

// PluginType is the "type" of our conflist entry and the binary's name.
const PluginType = "istio-iptables-cni"

// The defaults of the keys outside "capture".
const (
	DefaultProxyContainer = "istio-proxy"
	DefaultAPITimeout     = 5 * time.Second
	DefaultLockWait       = 10 * time.Second
	DefaultTimeout        = 20 * time.Second
)

// NetConf is our entry of a conflist, as the runtime passes it on stdin.
type NetConf struct {
	types.PluginConf
	// Capture holds the command's capture options, keyed by the long flag
	// (see Options); a key left out has the command's default. Values are
	// JSON strings as typed on the command line; numbers, booleans and
	// arrays (joined with ",") are accepted too.
	Capture map[string]Value `json:"capture,omitempty"`
	// ExcludeNamespaces are pod namespaces never captured (kube-system).
	ExcludeNamespaces []string `json:"excludeNamespaces,omitempty"`
	// Kubernetes configures the pod lookup; without a kubeconfig every pod
	// outside ExcludeNamespaces is captured with the node defaults.
	Kubernetes Kubernetes `json:"kubernetes,omitempty"`
	// LockWait bounds the wait for the namespace's lock and the xtables
	// lock, a Go duration; default 10s.
	LockWait string `json:"lockWait,omitempty"`
	// Timeout bounds a whole ADD, DEL or CHECK in the namespace; default 20s.
	Timeout string `json:"timeout,omitempty"`
	// LogLevel is debug, info (default), warn or error; logs go to stderr.
	LogLevel string `json:"logLevel,omitempty"`
}

// Kubernetes is the "kubernetes" object of our entry.
type Kubernetes struct {
	// Kubeconfig is the path of a kubeconfig the plugin reads pods with
	// (get on pods); "" turns the lookup off.
	Kubeconfig string `json:"kubeconfig,omitempty"`
	// ProxyContainer names the sidecar whose presence marks a pod for
	// capture; default istio-proxy.
	ProxyContainer string `json:"proxyContainer,omitempty"`
	// Timeout bounds the lookup, a Go duration; default 5s.
	Timeout string `json:"timeout,omitempty"`
}

// Value is one option's value as the command line would take it.
type Value string

// UnmarshalJSON accepts a string, a number, a boolean, or an array of
// strings and numbers (joined with commas).
func (v *Value) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*v = Value(s)
		return nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal(b, &list); err == nil {
		items := make([]string, 0, len(list))
		for _, it := range list {
			var one Value
			if err := one.UnmarshalJSON(it); err != nil || bytes.HasPrefix(bytes.TrimSpace(it), []byte("[")) {
				return fmt.Errorf("list item %s is not a string or number", it)
			}
			items = append(items, string(one))
		}
		*v = Value(strings.Join(items, ","))
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err == nil {
		*v = Value(n.String())
		return nil
	}
	var t bool
	if err := json.Unmarshal(b, &t); err == nil {
		*v = Value(fmt.Sprint(t))
		return nil
	}
	return fmt.Errorf("%s is not a string, number, boolean or list", b)
}

// Option is one key of "capture": the command's long flag, its short
// flag, and the capture.Config field it sets.
type Option struct {
	Key, Short string
	field      func(*capture.Config) *string
}

// Options lists every key "capture" takes, in the command's order. Two
// keys are not capture.Config fields: iptables-mode and native-nftables
// pick the backend. The command's validation flags (--run-validation,
// --skip-rule-apply, the probe's) belong to the pod's istio-validation
// container; --netns, --dry-run, --cleanup-only, --wait and --timeout
// are CNI_NETNS, the commands, lockWait and timeout.
var Options = []Option{
	{"envoy-port", "-p", func(c *capture.Config) *string { return &c.ProxyPort }},
	{"inbound-capture-port", "-z", func(c *capture.Config) *string { return &c.InboundCapturePort }},
	{"inbound-tunnel-port", "-e", func(c *capture.Config) *string { return &c.InboundTunnelPort }},
	{"proxy-uid", "-u", func(c *capture.Config) *string { return &c.ProxyUID }},
	{"proxy-gid", "-g", func(c *capture.Config) *string { return &c.ProxyGID }},
	{"istio-inbound-interception-mode", "-m", func(c *capture.Config) *string { return &c.InboundInterceptionMode }},
	{"istio-inbound-ports", "-b", func(c *capture.Config) *string { return &c.InboundPortsInclude }},
	{"istio-local-exclude-ports", "-d", func(c *capture.Config) *string { return &c.InboundPortsExclude }},
	{"istio-service-cidr", "-i", func(c *capture.Config) *string { return &c.OutboundIPRangesInclude }},
	{"istio-service-exclude-cidr", "-x", func(c *capture.Config) *string { return &c.OutboundIPRangesExclude }},
	{"istio-outbound-ports", "-q", func(c *capture.Config) *string { return &c.OutboundPortsInclude }},
	{"istio-local-outbound-ports-exclude", "-o", func(c *capture.Config) *string { return &c.OutboundPortsExclude }},
	{"kube-virt-interfaces", "-k", func(c *capture.Config) *string { return &c.KubeVirtInterfaces }},
	{"istio-exclude-interfaces", "-c", func(c *capture.Config) *string { return &c.ExcludeInterfaces }},
	{"istio-inbound-tproxy-mark", "-t", func(c *capture.Config) *string { return &c.InboundTProxyMark }},
	{"istio-inbound-tproxy-route-table", "-r", func(c *capture.Config) *string { return &c.InboundTProxyRouteTable }},
	{"ipv6", "", func(c *capture.Config) *string { return &c.IPv6 }},
	{"redirect-dns", "", func(c *capture.Config) *string { return &c.RedirectDNS }},
	{"capture-all-dns", "", func(c *capture.Config) *string { return &c.CaptureAllDNS }},
	{"dns-servers", "", func(c *capture.Config) *string { return &c.DNSServers }},
	{"drop-invalid", "", func(c *capture.Config) *string { return &c.DropInvalid }},
	{"istio-outbound-owner-groups", "", func(c *capture.Config) *string { return &c.OwnerGroupsInclude }},
	{"istio-outbound-owner-groups-exclude", "", func(c *capture.Config) *string { return &c.OwnerGroupsExclude }},
	{"istio-outbound-ipv4-loopback-cidr", "", func(c *capture.Config) *string { return &c.HostIPv4LoopbackCIDR }},
	{"proxy-mark", "", func(c *capture.Config) *string { return &c.ProxyMark }},
	{"iptables-mode", "", nil},
	{"native-nftables", "", nil},
}

// Settings is a parsed, validated entry.
type Settings struct {
	// Capture is the node's default capture configuration.
	Capture capture.Config
	// Backend is the iptables backend (iptables-mode, native-nftables).
	Backend           iptables.BackendMode
	ExcludeNamespaces []string
	Kubeconfig        string
	ProxyContainer    string
	APITimeout        time.Duration
	LockWait, Timeout time.Duration
	LogLevel          slog.Level
}

// ParseConf reads our entry from the runtime's stdin. It returns every
// problem at once (errors.Join), each naming the key.
func ParseConf(stdin []byte) (*NetConf, Settings, error) {
	var conf NetConf
	if err := json.Unmarshal(stdin, &conf); err != nil {
		return nil, Settings{}, fmt.Errorf("parse the network configuration: %w", err)
	}
	s, err := conf.Settings()
	return &conf, s, err
}

// Settings validates the entry.
func (n *NetConf) Settings() (Settings, error) {
	var errs []error
	s := Settings{
		Capture:           capture.DefaultConfig(),
		Backend:           iptables.BackendAuto,
		ExcludeNamespaces: n.ExcludeNamespaces,
		Kubeconfig:        n.Kubernetes.Kubeconfig,
		ProxyContainer:    n.Kubernetes.ProxyContainer,
	}
	if s.ProxyContainer == "" {
		s.ProxyContainer = DefaultProxyContainer
	}
	keys := make([]string, 0, len(n.Capture))
	for k := range n.Capture {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := string(n.Capture[k])
		i := slices.IndexFunc(Options, func(o Option) bool { return o.Key == k })
		switch {
		case i < 0:
			errs = append(errs, fmt.Errorf("capture.%s: unknown key (the keys are the command's long flags; see docs/cni.md)", k))
		case k == "iptables-mode":
			m := iptables.BackendMode(strings.TrimSpace(v))
			if m == iptables.BackendNative || m.Validate() != nil {
				errs = append(errs, fmt.Errorf("capture.iptables-mode: %q is not auto, nft or legacy", v))
			} else if s.Backend != iptables.BackendNative {
				s.Backend = m
			}
		case k == "native-nftables":
			switch strings.TrimSpace(v) {
			case "true":
				s.Backend = iptables.BackendNative
			case "false", "":
			default:
				errs = append(errs, fmt.Errorf("capture.native-nftables: %q is not true or false", v))
			}
		default:
			*Options[i].field(&s.Capture) = v
		}
	}
	if err := s.Capture.Validate(); err != nil {
		errs = append(errs, renameFlags(err, func(key string) string { return "capture." + key }))
	}
	dur := func(key, v string, def time.Duration) time.Duration {
		if strings.TrimSpace(v) == "" {
			return def
		}
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || d <= 0 || d > 10*time.Minute {
			errs = append(errs, fmt.Errorf("%s: %q is not a duration in (0, 10m] such as 5s", key, v))
			return def
		}
		return d
	}
	s.APITimeout = dur("kubernetes.timeout", n.Kubernetes.Timeout, DefaultAPITimeout)
	s.LockWait = dur("lockWait", n.LockWait, DefaultLockWait)
	s.Timeout = dur("timeout", n.Timeout, DefaultTimeout)
	if s.Timeout < s.LockWait {
		errs = append(errs, fmt.Errorf("timeout: %s is shorter than lockWait %s", s.Timeout, s.LockWait))
	}
	switch strings.ToLower(n.LogLevel) {
	case "", "info":
		s.LogLevel = slog.LevelInfo
	case "debug":
		s.LogLevel = slog.LevelDebug
	case "warn":
		s.LogLevel = slog.LevelWarn
	case "error":
		s.LogLevel = slog.LevelError
	default:
		errs = append(errs, fmt.Errorf("logLevel: %q is not debug, info, warn or error", n.LogLevel))
	}
	for _, ns := range s.ExcludeNamespaces {
		if strings.TrimSpace(ns) == "" {
			errs = append(errs, errors.New("excludeNamespaces: an empty name"))
		}
	}
	return s, errors.Join(errs...)
}

// Excluded reports whether pods of namespace ns are left alone.
func (s Settings) Excluded(ns string) bool { return slices.Contains(s.ExcludeNamespaces, ns) }

// renameFlags rewrites capture's errors, which name command-line flags
// ("-b: ..."), to name what the user wrote instead (name(key)).
func renameFlags(err error, name func(key string) string) error {
	var out []error
	for _, e := range unjoin(err) {
		var fe *capture.FieldError
		if errors.As(e, &fe) {
			key := strings.TrimPrefix(fe.Flag, "--")
			for _, o := range Options {
				if o.Short != "" && o.Short == fe.Flag {
					key = o.Key
				}
			}
			out = append(out, fmt.Errorf("%s: %s", name(key), fe.Msg))
			continue
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

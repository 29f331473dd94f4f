package cni

import (
	"fmt"
	"slices"
	"strings"

	"github.com/mesh-init/istio-iptables/capture"
)

// Pod is what the decision reads of a pod: from the API server, or, without
// a kubeconfig, only the namespace and name of CNI_ARGS (Known false).
type Pod struct {
	Namespace, Name string
	// Known: the pod was read from the API server; the fields below are
	// filled.
	Known bool
	// Containers and InitContainers are the container names (a native
	// sidecar is an init container).
	Containers, InitContainers []string
	Annotations                map[string]string
}

// Istio's pod annotations the plugin reads.
const (
	AnnotationInject           = "sidecar.istio.io/inject"
	AnnotationStatus           = "sidecar.istio.io/status"
	AnnotationInterceptionMode = "sidecar.istio.io/interceptionMode"
)

// ProxyOwnPorts are the proxy's own inbound ports that istio-cni always
// adds to excludeInboundPorts (merged metrics, health, Prometheus).
const ProxyOwnPorts = "15020,15021,15090"

// Annotation is one of Istio's traffic annotations and the capture option
// it overrides.
type Annotation struct {
	Name, Key string
}

// Annotations are Istio's per-pod traffic annotations, each applied over
// the node default of its key (the value replaces it).
var Annotations = []Annotation{
	{AnnotationInterceptionMode, "istio-inbound-interception-mode"},
	{"traffic.sidecar.istio.io/includeOutboundIPRanges", "istio-service-cidr"},
	{"traffic.sidecar.istio.io/excludeOutboundIPRanges", "istio-service-exclude-cidr"},
	{"traffic.sidecar.istio.io/includeInboundPorts", "istio-inbound-ports"},
	{"traffic.sidecar.istio.io/excludeInboundPorts", "istio-local-exclude-ports"},
	{"traffic.sidecar.istio.io/includeOutboundPorts", "istio-outbound-ports"},
	{"traffic.sidecar.istio.io/excludeOutboundPorts", "istio-local-outbound-ports-exclude"},
	{"traffic.sidecar.istio.io/kubevirtInterfaces", "kube-virt-interfaces"},
	{"traffic.sidecar.istio.io/excludeInterfaces", "istio-exclude-interfaces"},
}

// Decision is what ADD does with a pod.
type Decision struct {
	Capture bool
	// Reason says why, for the log and for CHECK.
	Reason string
	// Config is the pod's capture configuration when Capture is set.
	Config capture.Config
}

// Decide says whether the pod is captured and how:
//   - a pod of an excluded namespace never is;
//   - a pod not read from the API (no kubeconfig) is, with the node
//     defaults;
//   - sidecar.istio.io/inject: "false" or interceptionMode NONE opts out;
//   - otherwise it is captured when it has the proxy container, or the
//     injection annotations (sidecar.istio.io/status, which the injector
//     writes, or sidecar.istio.io/inject: "true"), with Istio's traffic
//     annotations over the node defaults. A bad annotation value is an
//     error naming the annotation: the pod is not started uncaptured.
func (s Settings) Decide(pod Pod) (Decision, error) {
	id := pod.Namespace + "/" + pod.Name
	switch {
	case s.Excluded(pod.Namespace):
		return Decision{Reason: fmt.Sprintf("namespace %q is excluded", pod.Namespace)}, nil
	case !pod.Known:
		return Decision{Capture: true, Reason: "no Kubernetes lookup configured: every pod outside excludeNamespaces is captured", Config: s.Capture}, nil
	case strings.EqualFold(pod.Annotations[AnnotationInject], "false"):
		return Decision{Reason: fmt.Sprintf("pod %s has %s: \"false\"", id, AnnotationInject)}, nil
	case strings.EqualFold(strings.TrimSpace(pod.Annotations[AnnotationInterceptionMode]), "NONE"):
		return Decision{Reason: fmt.Sprintf("pod %s has %s: NONE", id, AnnotationInterceptionMode)}, nil
	}
	var why string
	_, status := pod.Annotations[AnnotationStatus]
	switch {
	case slices.Contains(pod.Containers, s.ProxyContainer) || slices.Contains(pod.InitContainers, s.ProxyContainer):
		why = fmt.Sprintf("pod %s has the %s container", id, s.ProxyContainer)
	case status:
		why = fmt.Sprintf("pod %s has the %s annotation", id, AnnotationStatus)
	case strings.EqualFold(pod.Annotations[AnnotationInject], "true"):
		why = fmt.Sprintf("pod %s has %s: \"true\"", id, AnnotationInject)
	default:
		return Decision{Reason: fmt.Sprintf("pod %s has no %s container and no injection annotation", id, s.ProxyContainer)}, nil
	}
	cfg := s.Capture
	var applied []string
	for _, a := range Annotations {
		v, ok := pod.Annotations[a.Name]
		if !ok {
			continue
		}
		if a.Name == AnnotationInterceptionMode {
			v = strings.ToUpper(strings.TrimSpace(v))
		}
		if a.Key == "istio-local-exclude-ports" {
			// As istio-cni: the proxy's own ports stay excluded.
			v = strings.TrimRight(strings.TrimSpace(v), ",")
			if v != "" {
				v += ","
			}
			v += ProxyOwnPorts
		}
		*option(a.Key).field(&cfg) = v
		applied = append(applied, a.Name)
	}
	if err := cfg.Validate(); err != nil {
		return Decision{}, fmt.Errorf("pod %s: %w", id, renameFlags(err, annotationOf(applied)))
	}
	if len(applied) > 0 {
		why += "; annotations " + strings.Join(applied, ", ")
	}
	return Decision{Capture: true, Reason: why, Config: cfg}, nil
}

// annotationOf names a key by the annotation that set it, or as the node
// default.
func annotationOf(applied []string) func(key string) string {
	return func(key string) string {
		for _, a := range Annotations {
			if a.Key == key && slices.Contains(applied, a.Name) {
				return "annotation " + a.Name
			}
		}
		return "node default capture." + key
	}
}

func option(key string) Option {
	for _, o := range Options {
		if o.Key == key {
			return o
		}
	}
	panic("cni: no option " + key)
}

package cni

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Lookup reads pods from the API server named by a kubeconfig, through
// client-go's REST client with a scheme of core/v1 alone: the typed
// clientset would link every API group's types and double the binary.
type Lookup struct {
	rest    rest.Interface
	timeout time.Duration
}

// NewLookup reads the kubeconfig; every request is bounded by timeout.
func NewLookup(kubeconfig string, timeout time.Duration) (*Lookup, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("read the kubeconfig %s: %w", kubeconfig, err)
	}
	cfg.Timeout = timeout
	cfg.UserAgent = PluginType
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("register core/v1: %w", err)
	}
	cfg.APIPath = "/api"
	cfg.GroupVersion = &corev1.SchemeGroupVersion
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	c, err := rest.RESTClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("make a client from %s: %w", kubeconfig, err)
	}
	return &Lookup{rest: c, timeout: timeout}, nil
}

// Pod reads one pod.
func (l *Lookup) Pod(ctx context.Context, namespace, name string) (Pod, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	var p corev1.Pod
	if err := l.rest.Get().Namespace(namespace).Resource("pods").Name(name).Do(ctx).Into(&p); err != nil {
		return Pod{}, fmt.Errorf("get pod %s/%s from the API server: %w", namespace, name, err)
	}
	pod := Pod{Namespace: namespace, Name: name, Known: true, Annotations: p.Annotations}
	for _, c := range p.Spec.Containers {
		pod.Containers = append(pod.Containers, c.Name)
	}
	for _, c := range p.Spec.InitContainers {
		pod.InitContainers = append(pod.InitContainers, c.Name)
	}
	return pod, nil
}

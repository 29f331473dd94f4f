# istio-iptables build and test targets. Everything runs with the Go toolchain
# on PATH; kernel tests need root and create (and remove) their own network
# namespaces.
GO        ?= go
BIN       ?= bin/istio-iptables
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)

.PHONY: build test unit e2e e2e-native e2e-mutate bench update-golden lint

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/istio-iptables

# test: every test, the kernel and end-to-end ones included (they skip with a
# message when not root).
test:
	$(GO) test -count=1 -timeout 30m ./...
	$(MAKE) e2e-native
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) e2e-runtime e2e-cni; else echo "e2e-runtime and e2e-cni skipped: need root"; fi

# e2e-native: the whole end-to-end package again, every install made with
# --native-nftables (the same landing places are expected).
e2e-native:
	E2E_NATIVE_NFTABLES=1 $(GO) test -count=1 -timeout 30m ./e2e/

# e2e-runtime: root; podman plays each examples/kubernetes/*.yaml with the
# project's image (image-oci), an nginx app and an haproxy proxy
# (hack/runtime-images.sh, cached in .cache/runtime), all inside a network
# namespace made for it, and checks real connections (e2e/runtime). The
# last line is "e2e-runtime: N passed, M failed", N and M counting checks.
.PHONY: e2e-runtime
e2e-runtime: image-oci
	hack/runtime-images.sh
	$(GO) test -c -o .cache/runtime/e2e-runtime.test ./e2e/runtime
	cd e2e/runtime && E2E_RUNTIME=1 ../../.cache/runtime/e2e-runtime.test -test.v -test.timeout 20m

# e2e-cni: root; the CNI plugin's end-to-end tests (e2e/cni, docs/cni.md):
# libcni ADD/CHECK/drift/DEL and the median ADD of 50 fresh namespaces; the
# pod lookup against a real kube-apiserver and etcd (hack/kube-apiserver.sh
# builds it once per machine, 6-13 min on 2 cores, into
# /var/cache/istio-iptables-test); podman's CNI backend playing
# examples/kubernetes/cni/pod-cni.yaml with e2e-runtime's images.
.PHONY: e2e-cni build-cni
e2e-cni: image-oci
	hack/runtime-images.sh
	hack/kube-apiserver.sh >/dev/null
	E2E_CNI=1 $(GO) test -count=1 -timeout 30m -v ./e2e/cni/

# build-cni: the static CNI plugin, bin/istio-iptables-cni.
build-cni:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w -X main.buildVersion=$(VERSION) -X main.buildCommit=$(COMMIT)' -o bin/istio-iptables-cni ./cmd/istio-iptables-cni

# unit: the pure tests only (no kernel, no root).
unit:
	$(GO) test -count=1 -short ./capture/... ./dryrun/... ./cmd/... ./iptables/... ./cni/...

e2e:
	$(GO) test -count=1 -timeout 30m -v ./e2e/...

# e2e-mutate: for each single-run configuration, drop one rule of the plan at
# a time and require some connection of the matrix to land elsewhere (~2 min).
e2e-mutate:
	E2E_MUTATE=1 $(GO) test -count=1 -timeout 30m -run TestMutations -v ./e2e/

# torture: root; issue 14's torture suite against $(BIN) (docs/torture.md):
# swaps under a connection flood, signals, concurrent runs, lying binaries,
# foreign state, all judged by the kernel state and real connections. Trial
# counts: TORTURE_SWAPS=100 TORTURE_SIGNALS=50 TORTURE_RACES=25
# TORTURE_FAULTS=3; TORTURE_ONLY=a,b,c,d,e picks categories; TORTURE_BUDGET
# (12m) bounds the trials. The last line is "torture: N passed, M failed".
.PHONY: torture
TORTURE_REPORT ?= $(or $(TMPDIR),/tmp)/istio-iptables-torture.txt
torture: build
	@rm -f $(TORTURE_REPORT); \
	E2E_TORTURE=1 TORTURE_BIN=$(abspath $(BIN)) TORTURE_REPORT=$(TORTURE_REPORT) \
		$(GO) test -count=1 -timeout 20m -run '^TestTorture$$' ./e2e/; rc=$$?; \
	if [ -s $(TORTURE_REPORT) ]; then cat $(TORTURE_REPORT); else echo "torture: the suite wrote no report"; echo "torture: 0 passed, 1 failed"; rc=1; fi; \
	exit $$rc

update-golden:
	$(GO) test ./capture/... -run Golden -update

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...
	$(GO) mod tidy -diff

# bench: root; issue 19's speed targets in one run (a few minutes): markdown
# tables for docs/performance.md, each apply paired with the floor (a bare
# iptables-nft-restore) over BENCH_RUNS runs in fresh network namespaces,
# and the data path's conn/s; the last line is "bench: N targets met, M
# missed" (exit 0 either way). BENCH_FLAGS adds flags (-conn-time 1s,
# -sections apply,scale,datapath).
BENCH_RUNS  ?= 30
BENCH_FLAGS ?=
bench: build
	@$(GO) run ./cmd/istio-iptables-bench -bin $(BIN) -runs $(BENCH_RUNS) $(BENCH_FLAGS)

# image: the FROM-scratch image with a container tool and a registry
# (Dockerfile; docker buildx --platform linux/amd64,linux/arm64 makes both).
# The offline builds below need neither. See docs/image.md.
IMAGE      ?= istio-iptables:$(VERSION)
IMAGE_TOOL ?= $(if $(shell command -v docker),docker,buildah)
ARCHES     ?= amd64 arm64
IMAGE_ARCH ?= amd64

.PHONY: image image-test image-oci image-index image-contents binaries

image:
	$(IMAGE_TOOL) build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t $(IMAGE) .

# binaries: the static binary for each of ARCHES, bin/linux-ARCH/istio-iptables.
binaries:
	@for a in $(ARCHES); do \
		echo "CGO_ENABLED=0 GOOS=linux GOARCH=$$a go build -o bin/linux-$$a/istio-iptables"; \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$a $(GO) build -trimpath -ldflags '$(LDFLAGS)' \
			-o bin/linux-$$a/istio-iptables ./cmd/istio-iptables || exit 1; \
	done

# image-oci: root; the amd64 image, built offline with buildah from Debian's
# packages, as the OCI layout .cache/image/oci, reference latest, and as the
# oci-archive .cache/image/istio-iptables-amd64.tar (named
# localhost/istio-iptables:dev). podman 4.3 names a layout's image after its
# path, and .cache is no valid name: `podman load -i` the archive, or
#   cd .cache/image && podman pull oci:oci:latest   # localhost/oci:latest
image-oci:
	$(MAKE) binaries ARCHES=amd64
	VERSION=$(VERSION) COMMIT=$(COMMIT) hack/image-build.sh amd64

# image-index: root; the image for each of ARCHES and an OCI index naming
# them all, in .cache/image/oci (references latest = amd64, amd64, arm64,
# index).
image-index:
	$(MAKE) binaries ARCHES='$(ARCHES)'
	VERSION=$(VERSION) COMMIT=$(COMMIT) hack/image-build.sh $(ARCHES)

# image-contents: every file of the IMAGE_ARCH image with the Debian package
# and version it comes from.
image-contents:
	@$(MAKE) -s binaries ARCHES=$(IMAGE_ARCH) >/dev/null
	@VERSION=$(VERSION) hack/image-rootfs.sh $(IMAGE_ARCH) bin/linux-$(IMAGE_ARCH)/istio-iptables .cache/image/rootfs-$(IMAGE_ARCH)
	@cat .cache/image/rootfs-$(IMAGE_ARCH).contents

# image-test: root; builds both images and the index offline, checks the
# arm64 one against the amd64 one, and runs the amd64 image's own binaries in
# a throwaway network namespace under the init container's capabilities.
# Prints the size line; fails above IMAGE_LIMIT_MB.
image-test:
	$(MAKE) binaries ARCHES='$(ARCHES)'
	VERSION=$(VERSION) COMMIT=$(COMMIT) hack/image-test.sh $(ARCHES)

# fuzz: every fuzz target for FUZZTIME each (default 20s, about 3 min in
# all). An input that fails is written by go test to
# <package>/testdata/fuzz/<Target>/ and runs as a seed in every go test from
# then on: commit it with the fix. FUZZ_TARGETS=pkg:Target... picks some.
# Minimizing each new input is capped (FUZZMINTIME): with many arguments,
# as FuzzConfigRoundTrip has, it otherwise eats most of the time.
FUZZTIME     ?= 20s
FUZZMINTIME  ?= 2s
FUZZ_TARGETS ?= capture:FuzzParsePorts capture:FuzzParseCIDRs capture:FuzzParseIDs capture:FuzzParseIfaces \
	capture:FuzzValidateField capture:FuzzConfigRoundTrip \
	iptables:FuzzParseSpec iptables:FuzzParseSave iptables:FuzzRenderValidated

.PHONY: fuzz
fuzz:
	@failed=""; log=$$(mktemp); for t in $(FUZZ_TARGETS); do \
		pkg=./$${t%%:*}; name=$${t#*:}; \
		echo "== $$pkg $$name ($(FUZZTIME))"; \
		if $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINTIME) $$pkg >$$log 2>&1; then \
			cat $$log; \
		else \
			cat $$log; \
			if grep -q 'context deadline exceeded' $$log && ! grep -q 'Failing input written' $$log; then \
				echo "   (go's fuzz coordinator stopped with 'context deadline exceeded' and no failing input: golang/go#75804, fixed in go1.27; not a finding)"; \
			else failed="$$failed $$name"; fi; \
		fi; \
	done; rm -f $$log; \
	if [ -n "$$failed" ]; then echo "fuzz: failed:$$failed"; exit 1; fi

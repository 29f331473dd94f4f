# istio-iptables image: FROM scratch, with the static binary and iptables in
# both flavours (nft and legacy), both families, and nothing else: no shell,
# no package manager. See docs/image.md.
#
# The build stage runs on the build machine's platform and assembles the
# root filesystem for the target one from Debian's packages
# (hack/image-rootfs.sh: apt-get download, dpkg-deb -x, only the files
# iptables loads), so one command makes both architectures:
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     --build-arg VERSION=v0.1.0 --build-arg COMMIT=$(git rev-parse --short HEAD) -t istio-iptables .
# make image-index builds the same images offline with buildah, without this
# file (hack/image-build.sh).
ARG BUILDER_IMAGE=golang:1.26-bookworm

FROM --platform=$BUILDPLATFORM ${BUILDER_IMAGE} AS build
ARG TARGETARCH
ARG VERSION=dev
ARG COMMIT=unknown
# readelf (binutils) reads the libraries each ELF file needs; the golang
# images have it already.
RUN command -v readelf >/dev/null || { apt-get update -qq && \
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends binutils >/dev/null; }
WORKDIR /src
# Modules first: a source change reuses the download layer. The cache mounts
# keep modules and compiled packages between builds, out of every layer.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=linux GOARCH=${TARGETARCH:-amd64} go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/istio-iptables ./cmd/istio-iptables
RUN CACHE=/tmp/image VERSION=${VERSION} hack/image-rootfs.sh "${TARGETARCH:-amd64}" /out/istio-iptables /rootfs \
 && cat /rootfs.contents

FROM scratch
ARG VERSION=dev
ARG COMMIT=unknown
LABEL org.opencontainers.image.title="istio-iptables" \
      org.opencontainers.image.description="istio-init in Go: the static binary and iptables (nft and legacy), FROM scratch" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}" \
      org.opencontainers.image.base.name="scratch"
COPY --from=build /rootfs/ /
ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin
# Runs as root: the pod grants it NET_ADMIN and NET_RAW, nothing else.
USER 0:0
ENTRYPOINT ["/usr/local/bin/istio-iptables"]

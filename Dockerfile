# istio-iptables image: the static binary on a small Debian with iptables in
# both flavours (nft and legacy), as an istio-init initContainer needs.
#
# Base images are build arguments: Docker users get the official images,
# offline builds pass local ones (hack/image-test.sh does).
#   docker build --build-arg VERSION=v0.1.0 --build-arg COMMIT=$(git rev-parse --short HEAD) -t istio-iptables .
ARG BUILDER_IMAGE=golang:1.26-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILDER_IMAGE} AS build
ARG VERSION=dev
ARG COMMIT=unknown
WORKDIR /src
# Modules first: a source change reuses the download layer. The cache mounts
# keep modules and compiled packages between builds, out of every layer.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /istio-iptables ./cmd/istio-iptables

FROM ${RUNTIME_IMAGE}
ARG VERSION=dev
ARG COMMIT=unknown
LABEL org.opencontainers.image.title="istio-iptables" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}"
# Debian's iptables package carries both flavours and their twins:
# iptables-nft*, iptables-legacy*, ip6tables-*, *-save, *-restore.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iptables \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /istio-iptables /usr/local/bin/istio-iptables
# Runs as root: the pod grants it NET_ADMIN and NET_RAW, nothing else.
ENTRYPOINT ["/usr/local/bin/istio-iptables"]

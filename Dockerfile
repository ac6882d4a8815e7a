# Tern in a container: a static binary on an empty base image.
#
#   make docker                      # or: docker build -t tern .
#   docker run -p 1883:1883 -v tern-data:/data tern
#
# The broker listens on 0.0.0.0:1883 inside the container, so clients
# reach it from outside: anonymous clients are refused there (only loopback
# listeners accept them), so mount a password file (tern passwd) and a
# configuration naming it, or pass --allow-anonymous for a trial:
#
#   docker run -p 1883:1883 -v tern-data:/data -v $PWD/tern.yaml:/etc/tern/tern.yaml:ro \
#     tern serve --config /etc/tern/tern.yaml

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
# gnet with Tern's patch, named by a replace directive in go.mod
COPY third_party ./third_party
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
ARG DATE=unknown
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT} -X main.date=${DATE}" \
      -o /out/tern ./cmd/tern \
 && mkdir -p /out/data

# scratch: no shell, no libc, no package manager — nothing but the broker
# and the CA certificates a TLS client of the broker (tern pub --tls) needs.
FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/tern /usr/local/bin/tern
COPY LICENSE /LICENSE
# A fixed unprivileged uid/gid (no /etc/passwd in scratch): own the data
# directory so a fresh named volume is writable by the broker.
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
VOLUME ["/data"]
# MQTT, MQTT over TLS; add -p for WebSocket or the admin listener if configured.
EXPOSE 1883 8883
ENTRYPOINT ["/usr/local/bin/tern"]
CMD ["serve", "--data", "/data", "--listen", "0.0.0.0:1883"]

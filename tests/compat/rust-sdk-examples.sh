#!/usr/bin/env bash
# Envoy compatibility, judged from outside: the example filters of the proxy-wasm Rust SDK,
# built unchanged from a checkout of github.com/proxy-wasm/proxy-wasm-rust-sdk, run through
# RustyGate; each check is what a client (or the log, or /metrics) shows in Envoy according to
# the example's README and envoy.yaml. Examples missing from the checkout are skipped.
#
#   SDK_DIR=/path/to/proxy-wasm-rust-sdk tests/compat/rust-sdk-examples.sh
#
# Not part of `make test`: the checkout is not in this repository (the suite's own filters,
# tests/guests, exercise every ABI group). Needs the release build (`cargo build --release -p
# rustygate`, or GATEWAY=...), the wasm32-wasip1 target, curl and python3. Exits 1 if a check
# fails.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
: "${SDK_DIR:?set SDK_DIR to a checkout of proxy-wasm-rust-sdk}"
GATEWAY=${GATEWAY:-$ROOT/target/release/rustygate}
BIN_PORT=${BIN_PORT:-19600}
GW_PORT=${GW_PORT:-19610}
ADMIN_PORT=${ADMIN_PORT:-19611}
# shellcheck source=checks.sh
source "$ROOT/tests/compat/checks.sh"

EXAMPLES=(hello_world http_auth_random http_body http_config http_headers metrics
  http_parallel_call http_dispatch_timeout http_headers_retry envoy_filter_metadata)

# Builds one example in its own target directory; prints the path of its .wasm.
build() {
  local manifest=$SDK_DIR/examples/$1/Cargo.toml target=$RUN/target/$1
  [ -f "$manifest" ] || return 1
  cargo build -q --release --target wasm32-wasip1 --manifest-path "$manifest" --target-dir "$target" >&2
  find "$target/wasm32-wasip1/release" -maxdepth 1 -name '*.wasm' | head -1
}

built=()
{
  gateway_head
  cat <<EOF
  - { name: clustera, endpoints: [ { url: "http://127.0.0.1:$BIN_PORT" } ] }
  - { name: clusterb, endpoints: [ { url: "http://127.0.0.1:$BIN_PORT" } ] }
filters:
EOF
  for ex in "${EXAMPLES[@]}"; do
    if wasm=$(build "$ex"); then
      built+=("$ex")
      case $ex in
        # As in the examples' envoy.yaml files.
        hello_world) echo "  - { name: $ex, module: $wasm, root_id: hello_world, vm_id: hello_world_vm }" ;;
        http_config) echo "  - { name: $ex, module: $wasm, configuration: hello }" ;;
        *) echo "  - { name: $ex, module: $wasm }" ;;
      esac
    else
      echo "skip  $ex: not in this checkout" >&2
    fi
  done
  echo "routes:"
  for ex in "${built[@]}"; do
    printf '  - { name: %s, match: { headers: [ { name: x-example, exact: %s } ] }, cluster: httpbin, filters: [%s] }\n' "$ex" "$ex" "$ex"
  done
} > "$RUN/gateway.yaml"

start_servers

if has http_auth_random; then
  # The call's byte decides: even first (granted), odd next (denied).
  expect "http_auth_random: granted" 200 "$(call http_auth_random "$(url /get)")"
  expect "http_auth_random: granted response has Powered-By" proxy-wasm "$(header powered-by)"
  expect "http_auth_random: denied" 403 "$(call http_auth_random "$(url /get)")"
  expect "http_auth_random: denied body" "Access forbidden." "$(body)"
  expect "http_auth_random: the local reply passed its response phase" proxy-wasm "$(header powered-by)"
fi

if has http_body; then
  expect "http_body: status" 200 "$(call http_body "$(url /secret)")"
  expect "http_body: redacted" "Original message body (25 bytes) redacted." "$(body | head -1)"
  expect "http_body: the removed content-length stays removed" "" "$(header content-length)"
  expect "http_body: other bodies untouched" 200 "$(call http_body "$(url /base64/SGVsbG8sIAo=)")"
  expect "http_body: other bodies untouched (body)" "Hello, " "$(body)"
fi

if has http_config; then
  call http_config "$(url /get)" > /dev/null
  expect "http_config: header from the plugin configuration" hello "$(header custom-header)"
fi

if has http_headers; then
  expect "http_headers: /hello answered locally" 200 "$(call http_headers "$(url /hello)")"
  expect "http_headers: Hello header" World "$(header hello)"
  expect "http_headers: Powered-By header" proxy-wasm "$(header powered-by)"
  expect "http_headers: body" "Hello, World!" "$(body)"
  expect "http_headers: other paths go upstream" 200 "$(call http_headers "$(url /get)")"
  logged "http_headers: request headers logged" '-> :path: /get'
  logged "http_headers: response headers logged" '<- :status: 200'
  logged "http_headers: on_log ran" 'completed.'
fi

if has metrics; then
  call metrics -H "x-envoy-wasm-metric: counter" -H "x-envoy-wasm-metric-value: 3" "$(url /get)" > /dev/null
  call metrics -H "x-envoy-wasm-metric: gauge" -H "x-envoy-wasm-metric-value: 42" "$(url /get)" > /dev/null
  metrics=$(curl -s "http://127.0.0.1:$ADMIN_PORT/metrics")
  expect "metrics: counter on /metrics" 1 "$(grep -c '^rustygate_filter_wasm_counter{filter="metrics"} 3$' <<< "$metrics" || true)"
  expect "metrics: gauge on /metrics" 1 "$(grep -c '^rustygate_filter_wasm_gauge{filter="metrics"} 42$' <<< "$metrics" || true)"
fi

if has http_parallel_call; then
  expect "http_parallel_call: answered from two calls" 200 "$(call http_parallel_call "$(url /get)")"
  expect "http_parallel_call: body" "Hello, World!" "$(body)"
  expect "http_parallel_call: Powered-By" proxy-wasm "$(header powered-by)"
fi

if has http_dispatch_timeout; then
  start=$(date +%s%N)
  expect "http_dispatch_timeout: resumed after the call timed out" 200 "$(call http_dispatch_timeout "$(url /timeout)")"
  ms=$((($(date +%s%N) - start) / 1000000))
  if ((ms >= 900 && ms < 4000)); then ok "http_dispatch_timeout: took the call's 1 s timeout (${ms} ms)"; else bad "http_dispatch_timeout: took ${ms} ms"; fi
  # The README's log: Envoy's own 504 for the call.
  logged "http_dispatch_timeout: the call's :status" 'http call response :status: 504'
  logged "http_dispatch_timeout: the call's content-length" 'http call response content-length: 24'
  logged "http_dispatch_timeout: the call's body" 'upstream request timeout'
fi

if has http_headers_retry; then
  expect "http_headers_retry: cluster b's answer sent back" 302 "$(call http_headers_retry "$(url /status/302)")"
  logged "http_headers_retry: second call made" 'retrying original request to new cluster'
  logged "http_headers_retry: cluster b's answer" 'sending cluster b response back'
fi

if has envoy_filter_metadata; then
  # No Lua filter set the metadata: the request goes on.
  expect "envoy_filter_metadata: without metadata the request goes upstream" 200 "$(call envoy_filter_metadata "$(url /get)")"
fi

if has hello_world; then
  logged "hello_world: on_vm_start" 'Hello, World!'
  # Its tick period is 5 s.
  for _ in $(seq 70); do grep -q 'lucky number' "$RUN/gateway.log" && break; sleep 0.1; done
  logged "hello_world: on_tick" 'lucky number'
fi

finish

#!/usr/bin/env bash
# Envoy compatibility, judged from outside: the example filter of the proxy-wasm C++ SDK
# (github.com/proxy-wasm/proxy-wasm-cpp-sdk, `example/http_wasm_example.cc`), its source
# unchanged, built from a checkout and run through RustyGate; each check is what a client (or
# the log) shows in Envoy for that example.
#
#   SDK_DIR=/path/to/proxy-wasm-cpp-sdk tests/compat/cpp-sdk-examples.sh
#
# The SDK's own build uses emscripten, which these machines do not have; this script builds the
# same sources with clang++ for WASI instead (Debian's wasi-libc and libc++ for wasm32, which it
# installs if missing): a reactor module that exports `malloc` and leaves the proxy-wasm host
# functions as `env` imports, as emscripten's standalone build does. The other examples need
# RE2 or protobuf and are not built. Not part of `make test`: the checkout is not in this
# repository (the suite's C filter, tests/guests/c, covers the C ABI). Needs the release build
# (`cargo build --release -p rustygate`, or GATEWAY=...), curl and python3. Exits 1 if a check
# fails.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
: "${SDK_DIR:?set SDK_DIR to a checkout of proxy-wasm-cpp-sdk}"
GATEWAY=${GATEWAY:-$ROOT/target/release/rustygate}
CXX=${CXX:-clang++}
BIN_PORT=${BIN_PORT:-19640}
GW_PORT=${GW_PORT:-19650}
ADMIN_PORT=${ADMIN_PORT:-19651}
# shellcheck source=checks.sh
source "$ROOT/tests/compat/checks.sh"

if ! ls /usr/lib/wasm32-wasi/libc++.a /usr/lib/wasm32-wasi/libc++abi.a >/dev/null 2>&1; then
  SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
  # libc++-dev-wasm32 brings the libc++abi of the same LLVM release.
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq wasi-libc libc++-dev-wasm32 libclang-rt-dev-wasm32 >/dev/null
fi

# The SDK keeps its sources at the top of the checkout (older releases) or under source/.
sdk_source() { for d in "$SDK_DIR" "$SDK_DIR/source"; do [ -f "$d/$1" ] && { echo "$d/$1"; return 0; }; done; return 1; }

built=()
example=$SDK_DIR/example/http_wasm_example.cc
if [ -f "$example" ] && intrinsics=$(sdk_source proxy_wasm_intrinsics.cc); then
  mkdir -p "$RUN/wasm"
  if "$CXX" --target=wasm32-wasi -O2 -std=c++17 -fno-exceptions -mexec-model=reactor \
    -I"$(dirname "$intrinsics")" -I"$SDK_DIR" \
    -fvisibility=hidden -Wl,--export-dynamic -Wl,--allow-undefined -Wl,--export=malloc -Wl,--export=free \
    -Wl,--strip-debug \
    -o "$RUN/wasm/http_wasm_example.wasm" "$example" "$intrinsics" >&2; then
    built+=(http_wasm_example)
  else
    echo "skip  http_wasm_example: does not build with $CXX for wasm32-wasi" >&2
  fi
else
  echo "skip  http_wasm_example: not in this checkout" >&2
fi

# The example registers its factories under the root id "my_root_id", which the plugin's
# root_id must name (the SDK reads it back as the plugin_root_id property).
{
  gateway_head
  echo "filters:"
  if has http_wasm_example; then
    echo "  - { name: http_wasm_example, module: $RUN/wasm/http_wasm_example.wasm, root_id: my_root_id }"
  fi
  echo "routes:"
  if has http_wasm_example; then
    echo "  - { name: http_wasm_example, match: { headers: [ { name: x-example, exact: http_wasm_example } ] }, cluster: httpbin, filters: [http_wasm_example] }"
  fi
} > "$RUN/gateway.yaml"

start_servers

if has http_wasm_example; then
  # The stand-in answers /base64/X with X decoded: an 18-byte body of our choosing.
  status=$(call http_wasm_example "$(url "/base64/$(printf 0123456789ABCDEFGH | base64)")")
  expect "http_wasm_example: status" 200 "$status"
  expect "http_wasm_example: header added" FOO "$(header x-wasm-custom)"
  expect "http_wasm_example: content-type replaced" "text/plain; charset=utf-8" "$(header content-type)"
  expect "http_wasm_example: content-length removed" "" "$(header content-length)"
  # setBuffer(response body, 0, 12, "Hello, world"): Envoy drops the first 12 bytes and
  # prepends the new ones.
  expect "http_wasm_example: the body's first 12 bytes replaced" "Hello, worldCDEFGH" "$(body)"
  logged "http_wasm_example: onCreate logged" 'onCreate [0-9]'
  logged "http_wasm_example: request headers listed" ':path -> /base64/'
  logged "http_wasm_example: response headers listed" ':status -> 200'
  logged "http_wasm_example: onDone logged" 'onDone [0-9]'
  logged "http_wasm_example: onLog logged" 'onLog [0-9]'
  logged "http_wasm_example: onDelete logged" 'onDelete [0-9]'
  # A body on the request reaches onRequestBody, which logs it at error level (the example's
  # choice, not a gateway error).
  call http_wasm_example -XPOST --data 'posted-body' "$(url /anything)" > /dev/null
  logged "http_wasm_example: request body logged" 'onRequestBody posted-body'
  expected_errors='onRequestBody posted-body'
fi

finish

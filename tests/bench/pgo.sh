#!/usr/bin/env bash
# Profile-guided release build of the gateway (`make build-pgo`, docs/benchmarks.md).
#
# Why: with filters on a route, a request runs through far more distinct code (the wasm engine's
# entry and exit, the proxy-wasm host functions, the chain) than without, and on this class of
# machine the first filter's cost is mostly instruction-cache misses, not instructions. A
# profile tells LLVM which blocks are hot, so it lays them out together and moves the cold ones
# (errors, limits, slow paths) out of the way.
#
# Three steps, each in its own target directory so the plain release build is left alone:
#   1. build with -Cprofile-generate (instrumented);
#   2. train: the instrumented gateway serves the load benchmarks' routes (no filter, one and
#      three no-op filters, the shipped secure chain, the wasm balancer) under wrk, then stops
#      gracefully so that it writes its profile. Besides the benchmarks' small HTTP/1.1 GETs,
#      each route also gets 16 KiB responses, 16 KiB request bodies and HTTP/2 (h2c, h2load):
#      code a profile never saw is laid out as cold, so traffic missing from training would run
#      slower than in a plain release build;
#   3. merge the profiles with the toolchain's llvm-profdata and build with -Cprofile-use.
# The result is target/pgo/rustygate. Needs nginx, wrk and h2load (make bench-deps), the guests
# and the shipped filters (make guests filters), and rustup's llvm-tools component.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SHARED=$ROOT/../shared/bench
CARGO=${CARGO:-cargo}
SECONDS_PER_ROUTE=${SECONDS_PER_ROUTE:-5}
SECONDS_PER_EXTRA=${SECONDS_PER_EXTRA:-2}
H2_REQUESTS=${H2_REQUESTS:-30000}
HOST=$(rustc -vV | sed -n 's/^host: //p')
OUT=$ROOT/target/pgo
PROFILES=$OUT/profiles
PROFDATA=$(ls "$(rustc --print sysroot)"/lib/rustlib/"$HOST"/bin/llvm-profdata 2>/dev/null || true)
if [ -z "$PROFDATA" ]; then rustup component add llvm-tools; PROFDATA=$(rustc --print sysroot)/lib/rustlib/$HOST/bin/llvm-profdata; fi

# Up to date: nothing the binary or its training depends on changed since it was built.
if [ -x "$OUT/rustygate" ] && [ -z "${FORCE:-}" ] && [ -z "$(find "$ROOT/host" "$ROOT/Cargo.toml" \
    "$ROOT/Cargo.lock" "$ROOT"/config/bench*.yaml "$0" -newer "$OUT/rustygate" -print -quit)" ]; then
  echo "pgo: $OUT/rustygate is up to date (FORCE=1 rebuilds it)"
  exit 0
fi

# --target keeps RUSTFLAGS off build scripts and proc macros, which would otherwise be
# instrumented too and write profiles of the build itself.
rm -rf "$PROFILES"; mkdir -p "$PROFILES"
RUSTFLAGS="-Cprofile-generate=$PROFILES" \
  "$CARGO" build --release --locked -p rustygate --target "$HOST" --target-dir "$OUT/generate"

source "$ROOT/tests/bench/backend.sh"
TOKEN=$("$ROOT/examples/mint-token.sh" bench 86400)
head -c 16384 /dev/zero > "$RUN/16k.bin"
printf 'wrk.method = "POST"\nwrk.body = string.rep("x", 16384)\n' > "$RUN/post16k.lua"

# train CONFIG ROUTE...: one gateway process per configuration; a SIGTERM lets it exit through
# main, which is when the profile is written.
train() {
  local config=$1; shift
  "$OUT/generate/$HOST/release/rustygate" run --config "$config" > "$RUN/gateway.log" 2>&1 &
  local gw=$!
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:18090/api/$1" && break; sleep 0.2; done
  for route in "$@"; do
    curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:18090/api/$route" \
      || { echo "pgo: route $route not answering"; cat "$RUN/gateway.log"; kill "$gw"; exit 1; }
    wrk -t1 -c50 -d"${SECONDS_PER_ROUTE}s" -H "Authorization: Bearer $TOKEN" \
      "http://127.0.0.1:18090/api/$route" | awk -v r="$route" '/Requests\/sec/ {print "pgo: trained " r ": " $2 " req/s (instrumented)"}'
    wrk -t1 -c20 -d"${SECONDS_PER_EXTRA}s" -H "Authorization: Bearer $TOKEN" \
      "http://127.0.0.1:18090/api/$route/16k" > /dev/null
    wrk -t1 -c20 -d"${SECONDS_PER_EXTRA}s" -H "Authorization: Bearer $TOKEN" -s "$RUN/post16k.lua" \
      "http://127.0.0.1:18090/api/$route" > /dev/null
    h2load -n "$H2_REQUESTS" -c 10 -m 10 -H "Authorization: Bearer $TOKEN" \
      "http://127.0.0.1:18090/api/$route" | awk -v r="$route" '/^status codes/ {print "pgo: trained " r " over HTTP/2: " $3 " 2xx"}'
    h2load -n "$((H2_REQUESTS / 10))" -c 10 -m 4 -H "Authorization: Bearer $TOKEN" -d "$RUN/16k.bin" \
      "http://127.0.0.1:18090/api/$route" > /dev/null
  done
  kill -TERM "$gw"; wait "$gw"
}
train "$ROOT/config/bench-filters.yaml" none one three
train "$ROOT/config/bench-chain.yaml" none secure
train "$ROOT/config/bench-balancer.yaml" native wasm

"$PROFDATA" merge -o "$OUT/merged.profdata" "$PROFILES"
RUSTFLAGS="-Cprofile-use=$OUT/merged.profdata" \
  "$CARGO" build --release --locked -p rustygate --target "$HOST" --target-dir "$OUT/use"
cp "$OUT/use/$HOST/release/rustygate" "$OUT/rustygate"
echo "pgo: built $OUT/rustygate"

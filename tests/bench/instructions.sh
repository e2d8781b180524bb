#!/usr/bin/env bash
# Instructions per request (`make bench-instructions`, docs/benchmarks.md): the gateway runs
# under valgrind's callgrind, which counts the user-space instructions it executes. Unlike
# throughput on a shared machine, the count does not move with the neighbours' load, so it
# shows what a change to the request path costs even when req/s swings by 20% between runs.
# It leaves out the kernel (sockets are about half of a request's CPU here) and cache effects.
#
# One gateway ($CONFIG, default config/bench-filters.yaml) serves each of $ROUTES (default
# "none one three bare-one bare-three") in turn: curl sends $N requests on one keep-alive
# connection after 200 to warm up (PROTO=h2: h2load, over HTTP/2), with counting switched on only
# around them.
# RUSTYGATE_VALGRIND=1 makes the wasm engine lay memory out so that valgrind can run it (no
# instance pool; each memory keeps its guard regions, so the guests' code is what production
# runs, with no explicit bounds checks: until 2026-12-06 it had them, and counted more).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SHARED=$ROOT/../shared/bench
# The binary under test: `make bench` passes the profile-guided build (tests/bench/pgo.sh).
GATEWAY=${GATEWAY:-$ROOT/target/release/rustygate}
CONFIG=${CONFIG:-$ROOT/config/bench-filters.yaml}
read -r -a ROUTE_LIST <<< "${ROUTES:-none one three bare-one bare-three}"
N=${N:-1000}
HEADER=()
if [ -n "${WRK_HEADER:-}" ]; then HEADER=(-H "$WRK_HEADER"); fi
RUN=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
  # KEEP=DIR keeps the callgrind profiles for callgrind_annotate.
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$RUN"/out/callgrind.*.* "$KEEP"/; fi
  rm -rf "$RUN"
}
trap cleanup EXIT
mkdir -p "$RUN/logs" "$RUN/tmp" "$RUN/www" "$RUN/out"
nginx -p "$RUN/" -c "$SHARED/nginx-backend.conf" & pids+=($!)
# CACHE_SIM=1 also simulates the caches (a first-level instruction and data cache and the last
# level, as valgrind models them) and adds their misses per request to the table.
RUSTYGATE_VALGRIND=1 valgrind --tool=callgrind --instr-atstart=no \
  --cache-sim="$([ -n "${CACHE_SIM:-}" ] && echo yes || echo no)" \
  --callgrind-out-file="$RUN/out/callgrind.%p" \
  "$GATEWAY" run --config "$CONFIG" > "$RUN/gateway.log" 2>&1 &
gw=$!; pids+=($gw)
for _ in $(seq 240); do curl -sf -o /dev/null "${HEADER[@]}" "http://127.0.0.1:18090/api/${ROUTE_LIST[0]}" && break; sleep 0.5; done
# N requests on one connection: curl reuses it for every URL of one invocation. PROTO=h2
# sends them over HTTP/2 (h2c) with h2load instead, one stream at a time (curl 7.88 cannot
# reuse a prior-knowledge connection: curl/curl#10634).
if [ "${PROTO:-}" = h2 ]; then
  requests() {
    local out
    out=$(h2load -n "$2" -c 1 -m 1 "${HEADER[@]}" "http://127.0.0.1:18090/api/$1")
    grep -q "^status codes: $2 2xx" <<< "$out"
  }
else
  requests() { printf 'url = "http://127.0.0.1:18090/api/%s"\noutput = "/dev/null"\n' $(yes "$1" | head -n "$2") > "$RUN/urls"; curl -sf "${HEADER[@]}" -K "$RUN/urls"; }
fi
# Every route warms up before any is counted: the first run after a module was compiled
# (not yet in the disk cache) otherwise counted ~1,300 more on the first route.
for route in "${ROUTE_LIST[@]}"; do
  requests "$route" 200 || { echo "route $route not answering"; cat "$RUN/gateway.log"; exit 1; }
done
for route in "${ROUTE_LIST[@]}"; do
  requests "$route" 100
  callgrind_control -i on "$gw" > /dev/null
  callgrind_control -z "$gw" > /dev/null
  requests "$route" "$N"
  callgrind_control -d "$route" "$gw" > /dev/null
  callgrind_control -i off "$gw" > /dev/null
done
if [ -n "${CACHE_SIM:-}" ]; then
  echo "| route | instructions per request | L1i misses | L1d misses | last-level misses |"
  echo "|---|--:|--:|--:|--:|"
else
  echo "| route | instructions per request |"
  echo "|---|--:|"
fi
for f in "$RUN"/out/callgrind.*.*; do
  route=$(sed -n 's/^desc: Trigger: dump //p' "$f")
  # Per request, by event name (the "events:" line gives their order in "summary:").
  per() { awk -v n="$N" -v want="$1" '/^events:/ {for (i = 2; i <= NF; i++) col[$i] = i}
    /^(summary|totals):/ {split(want, w, "+"); t = 0; for (k in w) t += $(col[w[k]]); print int(t / n); exit}' "$f"; }
  if [ -n "${CACHE_SIM:-}" ]; then
    echo "| $route | $(per Ir) | $(per I1mr) | $(per D1mr+D1mw) | $(per ILmr+DLmr+DLmw) |"
  else
    echo "| $route | $(per Ir) |"
  fi
done

#!/usr/bin/env bash
# How much of the gateway's CPU under load runs inside the filters' own code (docs/benchmarks.md,
# "how much of a filter is the guest's"). One gateway ($CONFIG, default config/bench-filters.yaml;
# one worker pinned to CPU 0) serves each of $ROUTES in turn under wrk (CPU 1) for $DURATION
# seconds, $ROUNDS times, while `perf record -e cpu-clock` samples it. Code the engine compiled
# from the filters runs from the module cache's `.cwasm` files, so perf attributes it to them
# (and to /tmp/perf-<pid>.map, which RUSTYGATE_PERF_MAP=1 writes, when a module came fresh from
# the compiler). Prints, per route and round, the gateway's CPU per request (from /proc), the
# share of its samples in the guests and in wasmtime's own functions, and the guests' CPU per
# request that those shares make.
#
# Unlike instruction counts (tests/bench/instructions.sh), these are times: they include the
# guests' cache misses and whatever their code does to the host's, and move with the machine's
# load; compare routes within one run. Needs perf (Debian: linux-perf) allowed to sample the
# gateway (root, or kernel.perf_event_paranoid ≤ 1).
#
#   GATEWAY=target/pgo/rustygate ROUTES="none three" tests/bench/guest-time.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SHARED=$ROOT/../shared/bench
GATEWAY=${GATEWAY:-$ROOT/target/release/rustygate}
CONFIG=${CONFIG:-$ROOT/config/bench-filters.yaml}
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-10}
read -r -a ROUTE_LIST <<< "${ROUTES:-none one three bare-one bare-three}"
WRK_EXTRA=()
if [ -n "${WRK_HEADER:-}" ]; then WRK_EXTRA=(-H "$WRK_HEADER"); fi
command -v perf >/dev/null || { echo "guest-time: perf not found ('make bench-guests' installs it; Debian: linux-perf)"; exit 1; }
BACKEND_CPU=1 source "$ROOT/tests/bench/backend.sh"
export RUSTYGATE_PERF_MAP=1
source "$ROOT/tests/bench/pinned-gateway.sh"
# Every route warm (modules compiled or loaded, VMs built) before anything is sampled.
for route in "${ROUTE_LIST[@]}"; do
  taskset -c 1 wrk -t1 -c50 -d2s "${WRK_EXTRA[@]}" "http://127.0.0.1:18090/api/$route" > /dev/null
done
# Percent of a profile's samples whose line matches $2 in `perf report --sort $3`.
share() {
  perf report -i "$1" --sort "$3" --stdio 2>/dev/null | { grep -E "$2" || true; } \
    | awk '{ gsub("%", "", $1); s += $1 } END { printf "%.2f", s + 0 }'
}
printf '| round | route | gateway CPU µs/request | in the guests | in wasmtime | guests µs/request |\n|--:|---|--:|--:|--:|--:|\n'
for round in $(seq "$ROUNDS"); do
  for route in "${ROUTE_LIST[@]}"; do
    data=$RUN/perf.$round.$route
    t0=$(ticks)
    # Sampling stops a second before wrk does, so no sample falls after the load.
    perf record -q -e cpu-clock -F 2000 -p "$gw" -o "$data" -- sleep $((DURATION - 1)) 2>/dev/null & rec=$!
    out=$(taskset -c 1 wrk -t1 -c50 -d"${DURATION}s" "${WRK_EXTRA[@]}" "http://127.0.0.1:18090/api/$route")
    wait "$rec" || true
    t1=$(ticks)
    n=$(awk '/requests in/ {print $1}' <<< "$out")
    cpu=$(cpu_per_request "$t0" "$t1" "$n")
    guests=$(share "$data" 'cwasm|perf-[0-9]+\.map' dso)
    engine=$(share "$data" 'wasmtime' sym)
    us=$(awk -v c="$cpu" -v g="$guests" 'BEGIN { printf "%.2f", c * g / 100 }')
    printf '| %s | %s | %s | %s%% | %s%% | %s |\n' "$round" "$route" "$cpu" "$guests" "$engine" "$us"
  done
done

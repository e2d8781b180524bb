#!/usr/bin/env bash
# Filter overhead under load: one RustyGate process ($CONFIG, default config/bench-filters.yaml;
# one worker pinned to CPU 0) serving routes /api/<route> for each of $ROUTES (the first is the
# baseline; default "none one three bare-one bare-three": 0, 1 and 3 no-op filters built with the
# Rust SDK, then 1 and 3 built without one); wrk (CPU 1) drives each route in turn, round after
# round, so slow drift of the shared machine hits all alike. $WRK_HEADER, if set, is sent with
# every request. The backend is nginx from ../shared/bench. Prints median req/s and p99 per route
# and the ratios to the baseline. Everything runs on 127.0.0.1 and is stopped on exit. Besides
# req/s, it prints the gateway's CPU time per request (from /proc).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SHARED=$ROOT/../shared/bench
# The binary under test: `make bench` passes the profile-guided build (tests/bench/pgo.sh).
GATEWAY=${GATEWAY:-$ROOT/target/release/rustygate}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-50}
CONFIG=${CONFIG:-$ROOT/config/bench-filters.yaml}
read -r -a ROUTE_LIST <<< "${ROUTES:-none one three bare-one bare-three}"
WRK_EXTRA=()
if [ -n "${WRK_HEADER:-}" ]; then WRK_EXTRA=(-H "$WRK_HEADER"); fi
BACKEND_CPU=1 source "$ROOT/tests/bench/backend.sh"
source "$ROOT/tests/bench/pinned-gateway.sh"
results=$RUN/results.tsv
for round in $(seq "$ROUNDS"); do
  # Even rounds run the routes in reverse order, so whatever favours the first (or second) run
  # of a round cancels out across rounds instead of biasing one route.
  order=("${ROUTE_LIST[@]}")
  if (( round % 2 == 0 )); then
    order=(); for ((i=${#ROUTE_LIST[@]}-1; i>=0; i--)); do order+=("${ROUTE_LIST[$i]}"); done
  fi
  for route in "${order[@]}"; do
    t0=$(ticks)
    out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "${WRK_EXTRA[@]}" "http://127.0.0.1:18090/api/$route")
    t1=$(ticks)
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    cpu=$(cpu_per_request "$t0" "$t1" "$n")
    printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$route" "$rps" "$p99" "$cpu" >> "$results"
    printf '[filters] round %s %-5s %s req/s p99 %s, %s CPU us/request\n' "$round" "$route" "$rps" "$p99" "$cpu" >&2
  done
done
python3 - "$results" "${ROUTE_LIST[@]}" <<'PY'
import sys, statistics, collections
rows = [l.split('\t') for l in open(sys.argv[1]).read().split('\n') if l]
def ms(s):
    s = s.strip()
    for unit, f in (('us', 0.001), ('ms', 1.0), ('s', 1000.0)):
        if s.endswith(unit):
            return float(s[:-len(unit)]) * f
    return float(s)
by = collections.defaultdict(list)
for rnd, route, rps, p99, cpu in rows:
    by[route].append((int(rnd), float(rps), ms(p99), float(cpu)))
routes = sys.argv[2:]
base = {r: rps for r, rps, _, _ in by[routes[0]]}
base_cpu = {r: cpu for r, _, _, cpu in by[routes[0]]}
# The last column is what the route's req/s ratio would be if the gateway's CPU were the
# only limit: the baseline's CPU per request over the route's, paired by round.
print(f'| route | req/s (median) | p99 ms (median) | req/s vs {routes[0]} (paired, min-max) '
      f'| gateway CPU us/request (median) | {routes[0]} CPU / route CPU (paired, min-max) |')
print('|---|--:|--:|---|--:|---|')
for route in routes:
    runs = by[route]
    ratios = [rps / base[r] for r, rps, _, _ in runs]
    cpu = [base_cpu[r] / c for r, _, _, c in runs]
    print(f"| {route} | {statistics.median(x[1] for x in runs):.0f} | {statistics.median(x[2] for x in runs):.3f} | "
          f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}, geometric mean {statistics.geometric_mean(ratios):.3f}) | "
          f"{statistics.median(x[3] for x in runs):.2f} | {statistics.median(cpu):.2f} ({min(cpu):.2f}-{max(cpu):.2f}) |")
PY

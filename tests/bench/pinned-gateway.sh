# Sourced by the load benchmarks after backend.sh: starts $GATEWAY on $CONFIG (one worker,
# pinned to CPU 0), waits until every route of $ROUTE_LIST answers (with the $WRK_EXTRA header
# options), and defines `ticks` (the gateway's CPU time so far, user + system, in clock ticks:
# steadier than req/s when other guests on the host take the CPU away for part of a run) and
# `cpu_per_request T0 T1 N` (µs of gateway CPU per request between two `ticks`).
taskset -c 0 "$GATEWAY" run --config "$CONFIG" > "$RUN/gateway.log" 2>&1 & gw=$!; pids+=($gw)
ticks() { awk '{print $14 + $15}' "/proc/$gw/stat"; }
hz=$(getconf CLK_TCK)
cpu_per_request() { awk -v t=$(($2 - $1)) -v hz="$hz" -v n="$3" 'BEGIN {printf "%.2f", t / hz * 1e6 / n}'; }
for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:18090/api/${ROUTE_LIST[0]}" && break; sleep 0.2; done
for route in "${ROUTE_LIST[@]}"; do
  curl -sf -o /dev/null "${WRK_EXTRA[@]}" "http://127.0.0.1:18090/api/$route" || { echo "route $route not answering"; cat "$RUN/gateway.log"; exit 1; }
done

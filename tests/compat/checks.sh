# Sourced by the SDK compatibility scripts (tests/compat/*-sdk-examples.sh): a scratch
# directory $RUN cleaned up at exit, the start of the httpbin stand-in and of the gateway on
# $RUN/gateway.yaml, and the checks' vocabulary. Expects ROOT, GATEWAY, BIN_PORT, GW_PORT and
# ADMIN_PORT; the script fills the array `built` with the examples that built.

RUN=$(mktemp -d)
pids=()
# KEEP=1 keeps the scratch directory (configuration, gateway log) for a look after a failure.
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "kept $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT

# The start of $RUN/gateway.yaml: the listener, the admin listener, JSON logs, and the
# `httpbin` cluster (the stand-in); the script adds what its examples need after it.
gateway_head() {
  cat <<HEAD
listeners:
  - name: main
    address: 127.0.0.1:$GW_PORT
admin:
  address: 127.0.0.1:$ADMIN_PORT
logging: { format: json, level: info }
clusters:
  - { name: httpbin, endpoints: [ { url: "http://127.0.0.1:$BIN_PORT" } ] }
HEAD
}

# Starts both servers and waits until they answer; exits with the gateway's log if it does not.
start_servers() {
  python3 "$ROOT/tests/compat/httpbin.py" "$BIN_PORT" & pids+=($!)
  "$GATEWAY" run --config "$RUN/gateway.yaml" > "$RUN/gateway.log" 2>&1 & pids+=($!)
  # Go modules take a while to compile on the first start.
  for _ in $(seq 300); do
    curl -sf -o /dev/null "http://127.0.0.1:$ADMIN_PORT/readyz" && curl -sf -o /dev/null "http://127.0.0.1:$BIN_PORT/" && break
    sleep 0.1
  done
  curl -sf -o /dev/null "http://127.0.0.1:$BIN_PORT/" || { echo "httpbin stand-in not answering"; exit 1; }
  curl -sf -o /dev/null "http://127.0.0.1:$ADMIN_PORT/readyz" || { cat "$RUN/gateway.log"; exit 1; }
}

fails=0
ok() { printf 'ok    %s\n' "$1"; }
bad() { printf 'FAIL  %s\n' "$1"; fails=$((fails + 1)); }
expect() { if [ "$2" == "$3" ]; then ok "$1"; else bad "$1: expected [$2], got [$3]"; fi; }
# The log is written off the request path: a line may take a moment to land.
logged() {
  for _ in $(seq 30); do grep -q -- "$2" "$RUN/gateway.log" && break; sleep 0.1; done
  if grep -q -- "$2" "$RUN/gateway.log"; then ok "$1"; else bad "$1: no log line with [$2]"; fi
}
has() { for b in "${built[@]}"; do [ "$b" == "$1" ] && return 0; done; return 1; }
# GET (or curl's other arguments) through example $1's route; the head and body land in $RUN.
call() {
  local ex=$1
  shift
  curl -s -D "$RUN/head" -o "$RUN/body" -w '%{http_code}' -H "x-example: $ex" "$@"
}
header() { grep -i "^$1:" "$RUN/head" | head -1 | cut -d: -f2- | sed 's/^ //' | tr -d '\r'; }
body() { cat "$RUN/body"; }
url() { echo "http://127.0.0.1:$GW_PORT$1"; }

# The verdict: no error in the gateway's log (but those matching $expected_errors, a pattern
# for what an example logs at error level on purpose), and every check passed.
expected_errors=${expected_errors:-}
finish() {
  local errors
  errors=$(grep '"level":"ERROR"' "$RUN/gateway.log" | { [ -n "$expected_errors" ] && grep -v -- "$expected_errors" || cat; } || true)
  if [ -n "$errors" ]; then
    bad "the gateway logged errors: $(head -3 <<< "$errors")"
  fi
  echo "${#built[@]} examples built, $fails failed checks"
  ((fails == 0))
}

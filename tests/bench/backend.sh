# Sourced by the load benchmark scripts: a scratch directory $RUN, the nginx upstream of
# ../shared/bench on 127.0.0.1:18001 (serving "ok" and /16k), and a cleanup on exit that stops
# every PID in $pids. $BACKEND_CPU, if set, pins nginx to that CPU.
RUN=$(mktemp -d)
# Readable by nginx workers, which drop root for "nobody" (mktemp makes the directory 0700).
chmod 755 "$RUN"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$RUN"; }
trap cleanup EXIT
mkdir -p "$RUN/logs" "$RUN/tmp" "$RUN/www"
head -c 16384 /dev/zero > "$RUN/www/16k.bin"
if [ -n "${BACKEND_CPU:-}" ]; then
  taskset -c "$BACKEND_CPU" nginx -p "$RUN/" -c "$SHARED/nginx-backend.conf" & pids+=($!)
else
  nginx -p "$RUN/" -c "$SHARED/nginx-backend.conf" & pids+=($!)
fi

#!/usr/bin/env bash
# Mints an HS256 token for the demo configuration's jwt-auth filter (config/default.yaml).
# Usage: examples/mint-token.sh [subject] [seconds-valid]
# The secret is $RUSTYGATE_DEMO_JWT_SECRET, or the demo default. Needs openssl.
set -euo pipefail
sub=${1:-alice}
ttl=${2:-3600}
secret=${RUSTYGATE_DEMO_JWT_SECRET:-rustygate-demo-secret-change-me-0123456789}
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
header=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
payload=$(printf '{"sub":"%s","iss":"rustygate-demo","exp":%d}' "$sub" "$(( $(date +%s) + ttl ))" | b64url)
signature=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -hmac "$secret" -binary | b64url)
printf '%s.%s.%s\n' "$header" "$payload" "$signature"

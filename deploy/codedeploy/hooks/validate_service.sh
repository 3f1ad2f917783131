#!/usr/bin/env bash
# CodeDeploy ValidateService: /healthcheck must answer 200 with "status": "ok" before the deadline,
# otherwise the deployment fails (and rolls back, if the deployment group says so).
#   USERSD_HEALTHCHECK_URL  full URL (default http://127.0.0.1:$USERSD_PORT/healthcheck)
#   USERSD_PORT             default $USERSD_HTTP_PORT, else 3000 (etc/usersd.json)
#   VALIDATE_TIMEOUT        seconds until giving up (default 60)
#   VALIDATE_INTERVAL       seconds between attempts (default 1)
set -euo pipefail

PORT=${USERSD_PORT:-${USERSD_HTTP_PORT:-3000}}
URL=${USERSD_HEALTHCHECK_URL:-http://127.0.0.1:${PORT}/healthcheck}
TIMEOUT=${VALIDATE_TIMEOUT:-60}
INTERVAL=${VALIDATE_INTERVAL:-1}

log() { printf 'validate_service: %s\n' "$*"; }

case "$TIMEOUT" in '' | *[!0-9]*) log "VALIDATE_TIMEOUT must be whole seconds, got '$TIMEOUT'" >&2; exit 2 ;; esac
command -v curl >/dev/null 2>&1 || { log "curl is required" >&2; exit 2; }

start=$(date +%s)
deadline=$((start + TIMEOUT))
attempt=0
last="no answer yet"
body_file=$(mktemp)
err_file=$(mktemp)
trap 'rm -f "$body_file" "$err_file"' EXIT

while :; do
  attempt=$((attempt + 1))
  now=$(date +%s)
  remaining=$((deadline - now))
  # Never wait past the deadline for one answer (at most 5 s per attempt).
  max_time=$((remaining < 5 ? remaining : 5))
  [ "$max_time" -ge 1 ] || max_time=1
  : >"$body_file"
  if ! code=$(curl --silent --show-error --max-time "$max_time" --output "$body_file" \
    --write-out '%{http_code}' "$URL" 2>"$err_file"); then
    code="error: $(head -c 300 "$err_file")"
  fi
  if [ "$code" = "200" ] && grep -Eq '"status"[[:space:]]*:[[:space:]]*"ok"' "$body_file"; then
    log "healthy after $(($(date +%s) - start)) s ($attempt attempts): $(head -c 300 "$body_file")"
    exit 0
  fi
  case "$code" in
    error:*) last=$code ;;
    *) last="HTTP $code: $(head -c 300 "$body_file")" ;;
  esac
  if [ "$(date +%s)" -ge "$deadline" ]; then
    break
  fi
  sleep "$INTERVAL"
  if [ "$(date +%s)" -ge "$deadline" ]; then
    break
  fi
done

log "FAILED: $URL not healthy within ${TIMEOUT} s ($attempt attempts); last: $last" >&2
exit 1

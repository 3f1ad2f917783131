#!/usr/bin/env bash
# CodeDeploy ApplicationStop (runs the hook of the previously deployed revision; not at all on an
# instance's first deployment). Idempotent, and a success when usersd is not installed yet.
#
# Choice: usersd is NOT stopped here. The new package replaces the binary on disk while the running
# supervisor keeps serving, and ApplicationStart then runs `usersd reload`, which replaces every
# worker with one exec'd from the new binary and drains the old one only once the new one accepts:
# no refused connection, with or without the load balancer's traffic blocking. Stopping here would
# add a full drain_delay + start to every deployment for nothing. Blue/green replacement instances
# come from the AMI with nothing running, where this hook has nothing to do either.
# Set USERSD_STOP_ON_DEPLOY=1 (e.g. in /etc/default/usersd-deploy) to stop instead (graceful: the
# unit's SIGTERM drains first).
set -euo pipefail

log() { printf 'application_stop: %s\n' "$*"; }

# shellcheck disable=SC1091 # optional, instance-specific
if [ -r /etc/default/usersd-deploy ]; then . /etc/default/usersd-deploy; fi

if ! command -v systemctl >/dev/null 2>&1; then
  log "systemctl not available: nothing to stop"
  exit 0
fi
if ! command -v usersd >/dev/null 2>&1 && ! systemctl cat usersd.service >/dev/null 2>&1; then
  log "usersd is not installed: nothing to stop"
  exit 0
fi
if ! systemctl is-active --quiet usersd.service; then
  log "usersd is not running: nothing to stop"
  # A unit left failed by an earlier attempt would make the next start look like a restart loop.
  systemctl reset-failed usersd.service 2>/dev/null || true
  exit 0
fi

if [ "${USERSD_STOP_ON_DEPLOY:-0}" = "1" ]; then
  log "USERSD_STOP_ON_DEPLOY=1: stopping usersd (graceful drain)"
  systemctl stop usersd.service
else
  log "usersd is running: left running; ApplicationStart reloads it with the new build (zero downtime)"
fi

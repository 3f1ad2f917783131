#!/usr/bin/env bash
# CodeDeploy ApplicationStart: zero-downtime switch to the installed build.
#   running  -> `usersd reload`: the config is validated first (a bad one changes nothing and the
#               command fails with the reason), each worker is replaced by one exec'd from the new
#               binary, the old one drains only once the new one accepts; returns when the new build
#               serves. (`systemctl reload` would only send SIGHUP and not wait for, or report, the end.)
#   stopped  -> `systemctl start` (Type=notify: returns once every worker is ready, or fails).
# Changes to the unit file itself (ExecStart, limits) need a restart: not done implicitly here.
#   USERSD_CONFIG  default /etc/usersd/usersd.json
set -euo pipefail

CONFIG=${USERSD_CONFIG:-/etc/usersd/usersd.json}

log() { printf 'application_start: %s\n' "$*"; }
die() { printf 'application_start: error: %s\n' "$*" >&2; exit 1; }

command -v usersd >/dev/null 2>&1 || die "usersd is not installed (AfterInstall should have installed it)"

if systemctl is-active --quiet usersd.service; then
  log "usersd is running: reloading (workers replaced one by one)"
  if ! usersd reload --config "$CONFIG"; then
    systemctl status --no-pager --lines=20 usersd.service || true
    die "usersd reload failed; the previous build keeps serving"
  fi
else
  log "usersd is not running: starting"
  if ! systemctl start usersd.service; then
    systemctl status --no-pager --lines=20 usersd.service || true
    journalctl -u usersd.service --no-pager -n 50 || true
    die "systemctl start usersd failed"
  fi
fi
usersd status --config "$CONFIG" || true

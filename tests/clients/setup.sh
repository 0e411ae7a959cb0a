#!/usr/bin/env bash
# Idempotent installer for the stock-client scenario scripts.
#
#   * Python: venv at ${SWITCHYARD_CLIENT_ENV:-<repo>/target/client-env}/py
#             with tests/clients/python/requirements.txt installed.
#   * Node:   `npm ci` in tests/clients/node (node_modules/ next to package.json).
#   * mosquitto-clients (Debian) for the MQTT tests, when root and missing.
#   * chromium (Debian) for the WebSocket demo-page browser test, when root and missing.
#
# Each half writes a stamp holding the hash of its lock input; when the stamp
# matches, that half is skipped, so a second run takes well under a second.
# Needs python3 (+ venv module) and node >= 18 with npm. On a fresh Debian
# machine without the venv module it installs python3-venv via apt-get when
# running as root. Set SWITCHYARD_CLIENT_SKIP_NODE=1 / _SKIP_PY=1 to skip a half.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
env_dir="${SWITCHYARD_CLIENT_ENV:-$repo/target/client-env}"
venv="$env_dir/py"
req="$here/python/requirements.txt"
node_dir="$here/node"

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

log() { echo "[clients/setup] $*" >&2; }

setup_python() {
  local want stamp="$venv/.switchyard-stamp"
  want="$(hash_of "$req")"
  if [[ -x "$venv/bin/python3" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  log "creating python venv in $venv"
  mkdir -p "$env_dir"
  rm -rf "$venv"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    rm -rf "$venv"
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
      local pyver
      pyver="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
      log "python3 venv module missing; installing python3-venv via apt-get"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv "python${pyver}-venv" >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null; }
      python3 -m venv "$venv"
    else
      log "python3 -m venv failed: install the python3-venv package"
      exit 1
    fi
  fi
  "$venv/bin/python3" -m pip install -q --disable-pip-version-check --no-input -r "$req"
  echo "$want" >"$stamp"
}

setup_node() {
  local want stamp="$node_dir/node_modules/.switchyard-stamp"
  want="$(hash_of "$node_dir/package.json" "$node_dir/package-lock.json")"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -d "$node_dir/node_modules/amqplib" ]]; then
    return 0
  fi
  if ! command -v npm >/dev/null; then
    log "npm not found: install node >= 18 and npm"
    exit 1
  fi
  log "npm ci in $node_dir"
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$want" >"$stamp"
}

# Debian's mosquitto-clients (mosquitto_pub/mosquitto_sub) for the MQTT tests: installed
# when missing and running as root; otherwise those tests print a note and pass.
setup_mosquitto() {
  command -v mosquitto_pub >/dev/null && return 0
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    log "installing mosquitto-clients via apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q mosquitto-clients >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mosquitto-clients >/dev/null; } ||
      log "could not install mosquitto-clients; the mosquitto tests will be skipped"
  else
    log "mosquitto_pub not found and not root: the mosquitto tests will be skipped"
  fi
}

# Debian's chromium for the headless-browser test of the WebSocket demo page
# (tests/clients/node/demo_chromium.js drives it with playwright-core): installed when
# missing and running as root; otherwise that test fails and says how to install it.
setup_chromium() {
  [[ -x /usr/bin/chromium ]] && return 0
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    log "installing chromium via apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } ||
      log "could not install chromium; the browser test will fail"
  else
    log "/usr/bin/chromium not found and not root: install Debian's chromium for the browser test"
  fi
}

# Serialise concurrent invocations (e.g. parallel test jobs) on one lock.
mkdir -p "$env_dir"
exec 9>"$env_dir/.setup.lock"
if command -v flock >/dev/null; then flock 9; fi

[[ "${SWITCHYARD_CLIENT_SKIP_PY:-0}" == 1 ]] || setup_python
[[ "${SWITCHYARD_CLIENT_SKIP_NODE:-0}" == 1 ]] || setup_node
[[ "${SWITCHYARD_CLIENT_SKIP_MOSQUITTO:-0}" == 1 ]] || setup_mosquitto
[[ "${SWITCHYARD_CLIENT_SKIP_CHROMIUM:-0}" == 1 ]] || setup_chromium
# Print the interpreter to use, for callers that want it.
echo "$venv/bin/python3"

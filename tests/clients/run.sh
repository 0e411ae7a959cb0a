#!/usr/bin/env bash
# Run every client scenario against the broker at $AMQP_URL.
#
#   AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2F tests/clients/run.sh [-j JOBS] [FILTER...]
#
# FILTER matches script paths like python/acks or node/pubsub (substring).
# Scripts run JOBS at a time (default 4; many_connections runs alone at the
# end). Each script's output is shown when it fails (or with -v always).
# Exit 0 only if every script passed. Last line: "clients: N passed, N failed".
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
jobs=4
verbose=0
filters=()
while (($#)); do
  case "$1" in
    -j) jobs="$2"; shift 2 ;;
    -v) verbose=1; shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) filters+=("$1"); shift ;;
  esac
done

py="$(bash "$here/setup.sh")" || { echo "setup failed" >&2; exit 1; }
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2F}"

scripts=()
for f in "$here"/python/*.py "$here"/node/*.js; do
  base="$(basename "$f")"
  [[ "$base" == _* ]] && continue
  rel="$(basename "$(dirname "$f")")/${base%.*}"
  if ((${#filters[@]})); then
    keep=0
    for flt in "${filters[@]}"; do [[ "$rel" == *"$flt"* ]] && keep=1; done
    ((keep)) || continue
  fi
  scripts+=("$rel")
done

logdir="$(mktemp -d)"
trap 'rm -rf "$logdir"' EXIT

run_one() {
  local rel="$1" log="$logdir/${1//\//_}.log" rc
  local start=$SECONDS
  case "$rel" in
    python/*) timeout 180 "$py" "$here/$rel.py" >"$log" 2>&1 ;;
    node/*) timeout 180 node "$here/$rel.js" >"$log" 2>&1 ;;
  esac
  rc=$?
  echo "$rc" >"$log.rc"
  if [[ $rc == 0 ]]; then
    printf 'PASS %-28s (%ds)\n' "$rel" $((SECONDS - start))
  else
    printf 'FAIL %-28s (%ds, exit %d)\n' "$rel" $((SECONDS - start)) "$rc"
  fi
}

parallel=()
serial=()
for s in "${scripts[@]}"; do
  if [[ "$s" == *many_connections* ]]; then serial+=("$s"); else parallel+=("$s"); fi
done

running=0
for s in "${parallel[@]}"; do
  run_one "$s" &
  running=$((running + 1))
  if ((running >= jobs)); then wait -n; running=$((running - 1)); fi
done
wait
for s in "${serial[@]}"; do run_one "$s"; done

passed=0
failed=0
for s in "${scripts[@]}"; do
  log="$logdir/${s//\//_}.log"
  if [[ "$(cat "$log.rc")" == 0 ]]; then
    passed=$((passed + 1))
    ((verbose)) && { echo "----- $s"; cat "$log"; }
  else
    failed=$((failed + 1))
    echo "----- $s (failed)"
    cat "$log"
  fi
done
echo "clients: $passed passed, $failed failed"
((failed == 0 && passed > 0))

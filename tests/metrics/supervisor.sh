# Sourced by the whole-binary tests of suite metrics: a real `agentvisor
# supervisor` on a free loopback port, its API, and its end. The sourcing
# script sets `bin` (the agentvisor executable) and `tmp` (its scratch
# directory), and calls stop_all from its EXIT trap.
#
# After start_supervisor: sup_pid, port, base (http://127.0.0.1:PORT), token.

sup_pid=
fails=0
checks=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
check() { checks=$((checks + 1)); }

. "$(dirname "${BASH_SOURCE[0]}")/../launch_supervisor.sh"

# start_supervisor INSTANCE [EXTRA]: EXTRA is more top-level members of the
# config object (a JSON fragment starting with a comma).
start_supervisor() {
  sup_instance=$1 sup_extra=${2-}
  launch_supervisor write_metrics_config
}
write_metrics_config() {
  cat >"$tmp/config.json" <<JSON
{"instance": "$sup_instance", "state_dir": "$tmp/state",
 "host": {"memory_mb": 1024, "max_agents": 4},
 "agents": {"memory_mb": 64, "workspace_mb": 16, "heartbeat_ms": 200, "hang_timeout_ms": 2000},
 "supervision": {"min_backoff_ms": 1, "max_backoff_ms": 50},
 "api": {"listen": "127.0.0.1:$1"}$sup_extra}
JSON
}

# api METHOD PATH [BODY]: one API request with the token; the body lands in
# $tmp/body, the status in $status.
api() {
  local method=$1 path=$2 body=${3-}
  local args=(-s -o "$tmp/body" -w '%{http_code}' -X "$method" -H "Authorization: Bearer $token")
  [ -n "$body" ] && args+=(-H 'Content-Type: application/json' --data-binary "$body")
  status=$(curl "${args[@]}" "$base$path")
}

# create_agent NAME: POST /v1/agents; prints the new agent's id.
create_agent() {
  api POST /v1/agents "{\"name\": \"$1\"}"
  if [ "$status" != 201 ]; then
    echo "FAIL: creating agent $1: HTTP $status: $(head -c 400 "$tmp/body")" >&2
    return 1
  fi
  sed -n 's/.*"id":"\([^"]*\)".*/\1/p' "$tmp/body" | head -1
}

# stop_pid PID: SIGTERM, up to 15 s for it to end, then SIGKILL. Returns the
# exit status (137 after the SIGKILL).
stop_pid() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return; }
  for _ in $(seq 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
}

# stop_supervisor: the ordered shutdown; checks it ended cleanly.
stop_supervisor() {
  [ -n "$sup_pid" ] || return 0
  check
  stop_pid "$sup_pid"; local rc=$?
  sup_pid=
  [ "$rc" -eq 0 ] || fail "supervisor exit $rc after SIGTERM: $(tail -20 "$tmp/sup.err")"
  grep -q 'stopped cleanly' "$tmp/sup.err" || fail "no 'stopped cleanly': $(tail -20 "$tmp/sup.err")"
}

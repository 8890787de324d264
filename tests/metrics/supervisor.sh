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

# start_supervisor INSTANCE [EXTRA]: EXTRA is more top-level members of the
# config object (a JSON fragment starting with a comma). Retries another
# random port when the one it drew is taken.
start_supervisor() {
  local instance=$1 extra=${2-}
  for _ in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 30000))
    cat >"$tmp/config.json" <<JSON
{"instance": "$instance", "state_dir": "$tmp/state",
 "host": {"memory_mb": 1024, "max_agents": 4},
 "agents": {"memory_mb": 64, "workspace_mb": 16, "heartbeat_ms": 200, "hang_timeout_ms": 2000},
 "supervision": {"min_backoff_ms": 1, "max_backoff_ms": 50},
 "api": {"listen": "127.0.0.1:$port"}$extra}
JSON
    "$bin" supervisor --config "$tmp/config.json" </dev/null >"$tmp/sup.out" 2>"$tmp/sup.err" &
    sup_pid=$!
    local end=$((SECONDS + 30))
    while [ "$SECONDS" -lt "$end" ]; do
      grep -q 'ready; SIGINT' "$tmp/sup.err" && break 2
      kill -0 "$sup_pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$sup_pid" 2>/dev/null; then
      kill -9 "$sup_pid" 2>/dev/null   # alive but never ready
    fi
    wait "$sup_pid" 2>/dev/null
    sup_pid=
    grep -q 'address already in use' "$tmp/sup.err" || break
  done
  if [ -z "$sup_pid" ]; then
    echo "the supervisor did not start: $(tail -20 "$tmp/sup.err")"
    exit 1
  fi
  base="http://127.0.0.1:$port"
  token=$(cat "$tmp/state/api.token")
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

#!/usr/bin/env bash
# The HTTP control API end to end: a real `agentvisor supervisor` (real
# sandboxes, spawner, governor) driven with curl, as an operator would, through
# every route and every error status; then SIGTERM, exit 0 and nothing left.
# Usage: supervisor_api_test.sh PATH/TO/agentvisor
set -u
bin=$1
if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: the supervisor's sandboxes need root (cgroups, mounts)"
  exit 77
fi
command -v curl >/dev/null || { echo "SKIP: curl is not installed"; exit 77; }
tmp=$(mktemp -d)
instance="test-api-$$"
sup_pid=
cleanup() {
  [ -n "$sup_pid" ] && kill -9 "$sup_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
fails=0 checks=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# --- start a supervisor on a free port ------------------------------------------
. "$(dirname "$0")/../launch_supervisor.sh"
write_config() {
  cat >"$tmp/config.json" <<JSON
{"instance": "$instance", "state_dir": "$tmp/state",
 "host": {"memory_mb": 1024, "max_agents": 4},
 "agents": {"memory_mb": 64, "workspace_mb": 16, "heartbeat_ms": 200, "hang_timeout_ms": 2000},
 "supervision": {"min_backoff_ms": 1, "max_backoff_ms": 50},
 "api": {"listen": "127.0.0.1:$1", "max_body_bytes": 65536}}
JSON
}
templates_before=$(pgrep -f 'agentvisor-guest --template' | sort)
launch_supervisor write_config
[ "$(stat -c %a "$tmp/state/api.token")" = 600 ] || fail "the generated token file is not 0600"
grep -q "API token generated in $tmp/state/api.token" "$tmp/sup.err" || fail "the token's path is not logged"

# req NAME STATUS METHOD PATH [BODY] [CURL-ARGS...]: one request with the
# token; checks the status; the body lands in $tmp/body.
req() {
  local name=$1 want=$2 method=$3 path=$4 body=${5-}
  shift 4; [ $# -gt 0 ] && shift
  checks=$((checks + 1))
  local args=(-s -o "$tmp/body" -w '%{http_code}' -X "$method" -H "Authorization: Bearer $token")
  [ -n "$body" ] && args+=(-H 'Content-Type: application/json' --data-binary "$body")
  local got; got=$(curl "${args[@]}" "$@" "$base$path")
  [ "$got" = "$want" ] || fail "$name: HTTP $got, wanted $want: $(head -c 400 "$tmp/body")"
}
# metric NAME [LABEL="VALUE"...]: the sum of the /metrics samples named NAME
# that carry every given label pair (any order), fetched now without a token.
metric() {
  local name=$1; shift
  curl -s "$base/metrics" >"$tmp/metrics"
  awk -v name="$name" -v want="$*" '
    BEGIN { n = split(want, pairs, " ") }
    /^#/ { next }
    {
      s = $1; sub(/\{.*/, "", s)
      if (s != name) next
      for (i = 1; i <= n; i++) if (index($1, pairs[i]) == 0) next
      sum += $2; found = 1
    }
    END { if (found) print sum + 0; else print "none" }' "$tmp/metrics"
}
# metric_is NAME-FOR-MESSAGE WANT-TEST METRIC-ARGS...: e.g. metric_is x "-ge 1" ...
metric_is() {
  local what=$1 test=$2; shift 2
  checks=$((checks + 1))
  local v; v=$(metric "$@")
  if [ "$v" = none ] || ! [ "${v%.*}" $test ]; then
    fail "metric $what: $* is $v, wanted $test"
  fi
}
body_has() { grep -q -- "$2" "$tmp/body" || fail "$1: body lacks '$2': $(head -c 400 "$tmp/body")"; }
field() { sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p" "$tmp/body" | head -1; }

# --- no token -------------------------------------------------------------------------
checks=$((checks + 1))
got=$(curl -s -o "$tmp/body" -w '%{http_code}' "$base/healthz")
[ "$got" = 200 ] || fail "healthz without a token: HTTP $got"
for auth in "" "Authorization: Bearer wrong" "Authorization: Basic eDp5"; do
  checks=$((checks + 1))
  got=$(curl -s -o "$tmp/body" -w '%{http_code}' ${auth:+-H "$auth"} "$base/v1/agents")
  [ "$got" = 401 ] || fail "GET /v1/agents with '${auth:-no header}': HTTP $got, wanted 401"
done

# --- agents -----------------------------------------------------------------------------
req "create" 201 POST /v1/agents '{"name": "alpha", "restart": "permanent"}'
body_has "create" '"state":"ready"'
body_has "create" '"backend":"sandbox"'
id=$(field id)
[ -n "$id" ] || fail "create: no id in $(cat "$tmp/body")"
req "list" 200 GET /v1/agents
body_has "list" "\"id\":\"$id\""
req "get" 200 GET "/v1/agents/$id"
for f in state backend restarts last_down_reason oom_kills memory_bytes; do body_has "get" "\"$f\""; done

req "write_file" 200 POST "/v1/agents/$id/tools/write_file" '{"path": "notes.txt", "content": "hi there"}'
body_has "write_file" '"ok":true'
req "read_file" 200 POST "/v1/agents/$id/tools/read_file" '{"path": "notes.txt"}'
body_has "read_file" 'hi there'
req "list_directory" 200 POST "/v1/agents/$id/tools/list_directory" '{}'
body_has "list_directory" 'notes.txt'
req "search" 200 POST "/v1/agents/$id/tools/search" '{"pattern": "there", "path": "."}'
body_has "search" 'notes.txt'
req "execute_command" 200 POST "/v1/agents/$id/tools/execute_command" '{"argv": ["/bin/echo", "from-inside"]}'
body_has "execute_command" 'from-inside'
req "escape" 200 POST "/v1/agents/$id/tools/read_file" '{"path": "../../etc/shadow"}'
body_has "escape" '"ok":false'
body_has "escape" 'path_escape'
req "unknown tool" 200 POST "/v1/agents/$id/tools/teleport" '{}'
body_has "unknown tool" 'unknown_tool'

# --- metrics: the spawn and the calls above, counted --------------------------------------
checks=$((checks + 1))
got=$(curl -s -o "$tmp/body" -w '%{http_code} %{content_type}' "$base/metrics")
[ "$got" = "200 text/plain; version=0.0.4; charset=utf-8" ] || fail "GET /metrics without a token: $got"
checks=$((checks + 1))
got=$(curl -s -o "$tmp/body" -w '%{http_code} %{content_type}' \
  -H 'Accept: application/openmetrics-text; version=1.0.0' "$base/metrics")
[ "$got" = "200 application/openmetrics-text; version=1.0.0; charset=utf-8" ] \
  || fail "GET /metrics asking for OpenMetrics: $got"
[ "$(tail -n 1 "$tmp/body")" = "# EOF" ] || fail "OpenMetrics answer does not end with # EOF"
metric_is "spawns" "-ge 1" agentvisor_spawns_total 'backend="sandbox"' 'result="ok"'
metric_is "spawn histogram" "-ge 1" agentvisor_spawn_duration_seconds_count 'backend="sandbox"'
metric_is "ready agents" "-eq 1" agentvisor_agents 'state="ready"'
metric_is "read_file ok" "-eq 1" agentvisor_tool_calls_total 'tool="read_file"' 'outcome="ok"'
metric_is "read_file escape" "-eq 1" agentvisor_tool_calls_total 'tool="read_file"' 'outcome="tool_error"'
metric_is "unknown tool" "-eq 1" agentvisor_tool_calls_total 'tool="other"' 'outcome="tool_error"'
metric_is "execute_command timed" "-eq 1" agentvisor_tool_call_duration_seconds_count 'tool="execute_command"'
metric_is "per-agent calls" "-eq 7" agentvisor_agent_tool_calls_total "agent=\"$id\""
metric_is "per-agent memory" "-ge 0" agentvisor_agent_memory_bytes "agent=\"$id\""
metric_is "budget" "-gt 0" agentvisor_governor_budget_memory_bytes
metric_is "granted agents" "-eq 1" agentvisor_governor_granted 'resource="agents"'
metric_is "process rss" "-gt 0" process_resident_memory_bytes

# --- errors -------------------------------------------------------------------------------
req "bad JSON" 400 POST /v1/agents '{"name": '
req "missing name" 400 POST /v1/agents '{"memory_mb": 64}'
body_has "missing name" 'name'
req "wrong type" 400 POST /v1/agents '{"name": "x", "memory_mb": "lots"}'
body_has "wrong type" 'memory_mb'
req "bad restart" 400 POST /v1/agents '{"name": "x", "restart": "sometimes"}'
body_has "bad restart" 'restart'
req "unknown backend" 400 POST /v1/agents '{"name": "x", "backend": "vmware"}'
body_has "unknown backend" 'backend: expected'
body_has "unknown backend" 'firecracker'
req "backend not a string" 400 POST /v1/agents '{"name": "x", "backend": 1}'
body_has "backend not a string" 'backend: expected'
req "backend not enabled" 400 POST /v1/agents '{"name": "x", "backend": "qemu"}'
body_has "backend not enabled" 'qemu\\" is not enabled here (enabled: sandbox)'
req "tool args not an object" 400 POST "/v1/agents/$id/tools/read_file" '[1, 2]'
req "unknown agent" 404 GET /v1/agents/nobody
req "unknown agent tool" 404 POST /v1/agents/nobody/tools/read_file '{"path": "x"}'
req "unknown agent delete" 404 DELETE /v1/agents/nobody
req "unknown route" 404 GET /v1/nothing
req "wrong method" 405 PUT /v1/agents '{}'
head -c 70000 /dev/zero | tr '\0' a >"$tmp/big"
checks=$((checks + 1))
got=$(curl -s -o "$tmp/body" -w '%{http_code}' -H "Authorization: Bearer $token" \
  -H 'Content-Type: application/json' --data-binary @"$tmp/big" "$base/v1/agents")
[ "$got" = 413 ] || fail "oversized body: HTTP $got, wanted 413"
# More memory than the whole budget (1024 MiB): refused at once.
req "over budget" 429 POST /v1/agents '{"name": "huge", "memory_mb": 4096}'
body_has "over budget" 'budget'

# --- a crash is restarted (permanent), and the API shows it -------------------------------
req "get pid" 200 GET "/v1/agents/$id"
pid=$(sed -n 's/.*"pid":\([0-9]*\).*/\1/p' "$tmp/body")
[ -n "$pid" ] && [ "$pid" -gt 0 ] || fail "no pid for $id: $(cat "$tmp/body")"
kill -9 "$pid" 2>/dev/null
req "retryable call across the crash" 200 POST "/v1/agents/$id/tools/list_directory?retryable=true" '{}'
body_has "retryable call across the crash" '"ok":true'
for _ in $(seq 100); do
  req "restarted" 200 GET "/v1/agents/$id"
  grep -q '"restarts":1' "$tmp/body" && grep -q '"state":"ready"' "$tmp/body" && break
  sleep 0.1
done
body_has "restarted" '"restarts":1'
body_has "restarted" '"last_down_reason":"crashed'
metric_is "crash counted" "-eq 1" agentvisor_agent_downs_total 'reason="crashed"'
metric_is "restart counted" "-eq 1" agentvisor_restarts_total
metric_is "over budget refused" "-ge 1" agentvisor_governor_refusals_total 'reason="over_budget"'

# --- the agent-count budget: 4 agents; a fifth waits, then 503 ----------------------------
req "create 2 on the named backend" 201 POST /v1/agents '{"name": "n2", "backend": "sandbox"}'
body_has "create 2 on the named backend" '"backend":"sandbox"'
for n in 3 4; do req "create $n" 201 POST /v1/agents "{\"name\": \"n$n\"}"; done
req "governor" 200 GET /v1/governor
body_has "governor" '"queued"'
req "fifth agent" 503 POST /v1/agents '{"name": "fifth"}'
body_has "fifth agent" 'budget'
metric_is "queue timeout refused" "-eq 1" agentvisor_governor_refusals_total 'reason="budget_timeout"'

# --- delete --------------------------------------------------------------------------------
req "delete" 200 DELETE "/v1/agents/$id"
req "deleted" 404 GET "/v1/agents/$id"
req "call on deleted" 404 POST "/v1/agents/$id/tools/list_directory" '{}'
metric_is "stop counted" "-ge 1" agentvisor_agent_downs_total 'reason="stopped"'
checks=$((checks + 1))
[ "$(metric agentvisor_agent_memory_bytes "agent=\"$id\"")" = none ] \
  || fail "the deleted agent's per-agent series is still exported"
metric_is "ready agents after delete" "-eq 3" agentvisor_agents 'state="ready"'

# --- shutdown: SIGTERM stops every agent, removes every cgroup, exits 0 ----------------------
checks=$((checks + 1))
kill -TERM $sup_pid
wait $sup_pid; rc=$?; sup_pid=
[ "$rc" -eq 0 ] || fail "supervisor exit $rc after SIGTERM: $(tail -20 "$tmp/sup.err")"
grep -q 'stopped cleanly' "$tmp/sup.err" || fail "no 'stopped cleanly': $(tail -20 "$tmp/sup.err")"
checks=$((checks + 1))
[ -z "$(find /sys/fs/cgroup -maxdepth 3 -name "$instance" 2>/dev/null)" ] \
  || fail "the instance's cgroups are left: $(find /sys/fs/cgroup -maxdepth 4 -path "*$instance*")"
checks=$((checks + 1))
for _ in $(seq 50); do
  now=$(pgrep -f 'agentvisor-guest --template' | sort)
  [ -z "$(comm -13 <(echo "$templates_before") <(echo "$now"))" ] && break
  sleep 0.1
done
left=$(comm -13 <(echo "$templates_before") <(echo "$now"))
[ -z "$left" ] || fail "the supervisor left its template process running: $left"
grep -n 'error\]' "$tmp/sup.err" | head -5

echo "$checks checks, $fails failed"
[ "$fails" -eq 0 ]

#!/usr/bin/env bash
# /metrics of a real `agentvisor supervisor` with agents spawned through the
# API: `promtool check metrics` on the text format (parse errors and lint
# alike: it must print nothing), the OpenMetrics answer (Content-Type, `# EOF`
# last, the reference parser, the same series as the text format), every
# metric of the set, the per-agent series of live agents and none of a
# deleted one, and counters that match what the test did.
# Usage: metrics_scrape_test.sh AGENTVISOR PYTHON CONTRIB_CHECK_PY METRICS_CPP
set -u
bin=$1 py=$2 contrib_check=$3 metrics_cpp=$4
if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: the supervisor's sandboxes need root (cgroups, mounts)"
  exit 77
fi
command -v curl >/dev/null || { echo "SKIP: curl is not installed"; exit 77; }
command -v promtool >/dev/null \
  || { echo "SKIP: promtool is not installed (Debian package prometheus)"; exit 77; }
"$py" -c 'import prometheus_client.openmetrics.parser' 2>/dev/null \
  || { echo "SKIP: $py has no prometheus_client (Debian package python3-prometheus-client)"; exit 77; }

tmp=$(mktemp -d)
cleanup() {
  [ -n "$sup_pid" ] && stop_pid "$sup_pid"
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
. "$(dirname "$0")/supervisor.sh"

# sample FILE NAME [LABEL=VALUE...]: the value of the first sample of NAME
# (text format) carrying all those labels; empty if there is none.
sample() {
  local file=$1 name=$2; shift 2
  local want=""
  for kv in "$@"; do want+="${kv%%=*}=\"${kv#*=}\" "; done
  awk -v n="$name" -v want="$want" '
    BEGIN { k = split(want, w, " ") }
    index($0, n "{") == 1 || index($0, n " ") == 1 {
      ok = 1
      for (i = 1; i <= k; i++) if (index($0, w[i]) == 0) ok = 0
      if (ok) { print $NF; exit }
    }' "$file"
}
# expect FILE WANT NAME [LABEL=VALUE...]: that sample equals WANT.
expect() {
  local file=$1 want=$2; shift 2
  check
  local got; got=$(sample "$file" "$@")
  if [ -z "$got" ]; then
    fail "no sample $*"
  elif ! awk -v a="$got" -v b="$want" 'BEGIN { exit !(a + 0 == b + 0) }'; then
    fail "$*: $got, expected $want"
  fi
}

start_supervisor "test-metrics-$$"

# --- agents and calls that the counters must show --------------------------------
keep=$(create_agent keeper) || exit 1
gone=$(create_agent leaver) || exit 1
api POST "/v1/agents/$keep/tools/write_file" '{"path": "a.txt", "content": "x"}'
[ "$status" = 200 ] || fail "write_file: HTTP $status: $(head -c 300 "$tmp/body")"
api POST "/v1/agents/$keep/tools/read_file" '{"path": "missing.txt"}'
[ "$status" = 200 ] && grep -q '"ok":false' "$tmp/body" \
  || fail "read_file of a missing file: HTTP $status: $(head -c 300 "$tmp/body")"
api DELETE "/v1/agents/$gone"
[ "$status" = 200 ] || fail "delete: HTTP $status: $(head -c 300 "$tmp/body")"

# --- the text format --------------------------------------------------------------------
# The deleted agent's vm_actor ends after the answer: give its series a moment.
for _ in $(seq 50); do
  status=$(curl -s -D "$tmp/text.h" -o "$tmp/text" -w '%{http_code}' "$base/metrics")
  [ "$status" = 200 ] || break
  ! grep -q "agent=\"$gone\"" "$tmp/text" \
    && [ "$(sample "$tmp/text" agentvisor_agents state=stopped)" = 0 ] && break
  sleep 0.1
done
check
[ "$status" = 200 ] || { fail "GET /metrics without a token: HTTP $status: $(head -c 300 "$tmp/text")"; exit 1; }
check
ctype=$(tr -d '\r' <"$tmp/text.h" | sed -n 's/^[Cc]ontent-[Tt]ype: *//p')
[ "$ctype" = "text/plain; version=0.0.4; charset=utf-8" ] \
  || fail "text format Content-Type: '$ctype'"

# promtool reads the exposition from stdin; any line it prints is a parse
# error or a lint problem (e.g. a counter without _total, a non-base unit).
check
lint=$(promtool check metrics <"$tmp/text" 2>&1); rc=$?
[ "$rc" -eq 0 ] && [ -z "$lint" ] || fail "promtool check metrics (exit $rc): $lint"

expect "$tmp/text" 2 agentvisor_spawns_total backend=sandbox result=ok
expect "$tmp/text" 0 agentvisor_spawns_total backend=sandbox result=failed
expect "$tmp/text" 2 agentvisor_spawn_duration_seconds_count backend=sandbox
expect "$tmp/text" 1 agentvisor_tool_calls_total tool=write_file outcome=ok
expect "$tmp/text" 1 agentvisor_tool_calls_total tool=read_file outcome=tool_error
expect "$tmp/text" 1 agentvisor_tool_call_duration_seconds_count tool=write_file
expect "$tmp/text" 1 agentvisor_agents state=ready
expect "$tmp/text" 0 agentvisor_agents state=stopped
expect "$tmp/text" 1 agentvisor_agent_downs_total reason=stopped
expect "$tmp/text" 0 agentvisor_restarts_total
expect "$tmp/text" 2 agentvisor_agent_tool_calls_total agent="$keep"
expect "$tmp/text" 4 agentvisor_governor_budget resource=agents
expect "$tmp/text" 1073741824 agentvisor_governor_budget_memory_bytes
expect "$tmp/text" 1 agentvisor_governor_granted resource=agents
expect "$tmp/text" 67108864 agentvisor_governor_granted_memory_bytes
expect "$tmp/text" 2 agentvisor_governor_grants_total
check
fds=$(sample "$tmp/text" process_open_fds)
start=$(sample "$tmp/text" process_start_time_seconds)
awk -v f="${fds:-0}" -v s="${start:-0}" -v now="$(date +%s)" \
  'BEGIN { exit !(f > 0 && s > now - 3600 && s <= now + 1) }' \
  || fail "process metrics: open fds '$fds', start time '$start' (now $(date +%s))"

# --- OpenMetrics ------------------------------------------------------------------------
check
status=$(curl -s -D "$tmp/om.h" -o "$tmp/om" -w '%{http_code}' \
  -H 'Accept: application/openmetrics-text; version=1.0.0' "$base/metrics")
[ "$status" = 200 ] || fail "GET /metrics for OpenMetrics: HTTP $status"
check
ctype=$(tr -d '\r' <"$tmp/om.h" | sed -n 's/^[Cc]ontent-[Tt]ype: *//p')
[ "$ctype" = "application/openmetrics-text; version=1.0.0; charset=utf-8" ] \
  || fail "OpenMetrics Content-Type: '$ctype'"
check
[ "$(tail -n 1 "$tmp/om")" = "# EOF" ] || fail "the OpenMetrics answer's last line is '$(tail -n 1 "$tmp/om")', not '# EOF'"
check
[ "$(grep -c '^# EOF$' "$tmp/om")" = 1 ] || fail "'# EOF' appears $(grep -c '^# EOF$' "$tmp/om") times"
check
grep -q '^# TYPE agentvisor_spawns counter$' "$tmp/om" \
  || fail "OpenMetrics: no '# TYPE agentvisor_spawns counter' (a counter family is named without _total)"
check
grep -q '^# UNIT agentvisor_spawn_duration_seconds seconds$' "$tmp/om" \
  || fail "OpenMetrics: no '# UNIT agentvisor_spawn_duration_seconds seconds'"
# A Prometheus-style Accept header that prefers OpenMetrics gets it too.
check
pacc='application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1'
ctype=$(curl -s -o /dev/null -w '%{content_type}' -H "Accept: $pacc" "$base/metrics")
case $ctype in application/openmetrics-text*) ;; *) fail "Prometheus's Accept header got '$ctype'";; esac

# The reference parser, the same series in both formats, every metric, and
# the per-agent series (see contrib_check.py scrape).
check
"$py" "$contrib_check" scrape "$tmp/text" "$tmp/om" "$metrics_cpp" "$keep" "$gone" \
  || fail "the scrape checks above"

stop_supervisor
echo "$checks checks, $fails failed"
[ "$fails" -eq 0 ]

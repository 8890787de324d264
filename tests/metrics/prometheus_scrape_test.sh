#!/usr/bin/env bash
# A real Prometheus server scrapes a real `agentvisor supervisor`: its own
# server on a free loopback port with its own TSDB directory, scraping every
# second as job "agentvisor". Through Prometheus's HTTP API: up is 1, the
# target is healthy with no lastError, the spawn counter is 0 before agents
# are spawned through the supervisor's API and counts them after; every
# dashboard expression returns series and every alert rule evaluates
# (contrib_check.py live). Never touches a system Prometheus (e.g. Debian's
# service on :9090).
# Usage: prometheus_scrape_test.sh AGENTVISOR PYTHON CONTRIB_CHECK_PY DASHBOARD ALERTS
set -u
bin=$1 py=$2 contrib_check=$3 dashboard=$4 alerts=$5
if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: the supervisor's sandboxes need root (cgroups, mounts)"
  exit 77
fi
command -v curl >/dev/null || { echo "SKIP: curl is not installed"; exit 77; }
prometheus=$(command -v prometheus) \
  || { echo "SKIP: prometheus is not installed (Debian package prometheus)"; exit 77; }

tmp=$(mktemp -d)
prom_pid=
cleanup() {
  [ -n "$prom_pid" ] && stop_pid "$prom_pid"
  [ -n "$sup_pid" ] && stop_pid "$sup_pid"
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
. "$(dirname "$0")/supervisor.sh"

start_supervisor "test-prom-$$"

# --- our own Prometheus -------------------------------------------------------------------
start_prometheus() {
  for _ in 1 2 3 4 5; do
    pport=$((20000 + RANDOM % 30000))
    [ "$pport" = "$port" ] && continue
    cat >"$tmp/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: agentvisor
    static_configs:
      - targets: ['127.0.0.1:$port']
YAML
    rm -rf "$tmp/tsdb"
    (cd "$tmp" && exec "$prometheus" --config.file="$tmp/prometheus.yml" \
        --storage.tsdb.path="$tmp/tsdb" --web.listen-address="127.0.0.1:$pport" \
        >"$tmp/prom.log" 2>&1) &
    prom_pid=$!
    prom="http://127.0.0.1:$pport"
    local end=$((SECONDS + 30))
    while [ "$SECONDS" -lt "$end" ]; do
      [ "$(curl -s -o /dev/null -w '%{http_code}' "$prom/-/ready")" = 200 ] && return 0
      kill -0 "$prom_pid" 2>/dev/null || break
      sleep 0.1
    done
    stop_pid "$prom_pid"
    prom_pid=
    grep -q 'address already in use' "$tmp/prom.log" || break
  done
  echo "prometheus did not start: $(tail -20 "$tmp/prom.log")"
  exit 1
}
start_prometheus

# promql EXPR: the first result's value of an instant query ("" if none).
promql() {
  curl -s -G --data-urlencode "query=$1" "$prom/api/v1/query" >"$tmp/q.json"
  "$py" -c '
import json, sys
r = json.load(open(sys.argv[1]))
if r.get("status") != "success":
    sys.exit("query failed: " + str(r.get("error")))
res = r["data"]["result"]
if r["data"]["resultType"] == "scalar":
    print(res[1])
elif res:
    print(res[0]["value"][1])' "$tmp/q.json"
}
# wait_for EXPR WANT SECONDS: polls until the query's value equals WANT.
wait_for() {
  local expr=$1 want=$2 end=$((SECONDS + $3)) got=
  while :; do
    got=$(promql "$expr")
    [ "$got" = "$want" ] && return 0
    [ "$SECONDS" -lt "$end" ] || break
    sleep 0.2
  done
  echo "$expr is '$got' after ${3}s, expected $want" >&2
  return 1
}

check
if ! wait_for 'up{job="agentvisor"}' 1 60; then
  # Nothing below can pass: say why and stop.
  fail "up{job=\"agentvisor\"} never became 1"
  "$py" "$contrib_check" target "$prom" "127.0.0.1:$port"
  echo "$checks checks, $fails failed"
  exit 1
fi
check
got=$(promql 'sum(agentvisor_spawns_total)')
[ "$got" = 0 ] || fail "sum(agentvisor_spawns_total) before any spawn: '$got', expected 0"

# --- spawn through the API; Prometheus sees it ---------------------------------------------
ids=()
for n in one two; do
  id=$(create_agent "$n") || { fail "create $n"; continue; }
  ids+=("$id")
done
api POST "/v1/agents/${ids[0]:-none}/tools/list_directory" '{}'
[ "$status" = 200 ] || fail "list_directory: HTTP $status"
check
wait_for 'sum(agentvisor_spawns_total)' "${#ids[@]}" 15 \
  || fail "Prometheus never saw the ${#ids[@]} spawns"
check
got=$(promql 'sum(agentvisor_spawns_total{result="ok", backend="sandbox"})')
awk -v g="${got:-0}" 'BEGIN { exit !(g > 0) }' \
  || fail "sum(agentvisor_spawns_total{result=\"ok\"}) is '$got', not above 0"

# --- the target as Prometheus sees it --------------------------------------------------------
check
"$py" "$contrib_check" target "$prom" "127.0.0.1:$port" || fail "the target: see above"

# --- every dashboard expression and alert rule against the live data --------------------------
# rate() over per-agent series needs two of their samples: wait for them.
check
wait_for "count(count_over_time(agentvisor_agent_memory_bytes{agent=\"${ids[0]:-none}\"}[1m]) >= 2)" 1 15 \
  || fail "no two samples of ${ids[0]:-none}'s per-agent series"
check
"$py" "$contrib_check" live "$prom" "$dashboard" "$alerts" \
  || fail "the dashboard and alert checks above"

# The target stays healthy through all of it.
check
"$py" "$contrib_check" target "$prom" "127.0.0.1:$port" || fail "the target did not stay healthy"

stop_pid "$prom_pid"; prom_pid=
stop_supervisor
echo "$checks checks, $fails failed"
[ "$fails" -eq 0 ]

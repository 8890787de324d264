#!/usr/bin/env bash
# `agentvisor chaos run --api URL --token-file F` end to end: a real
# `agentvisor supervisor` in another process. Without agents.allow_faults
# the fault routes answer 403 and the runner refuses to start (exit 2); a
# wrong token is exit 2 naming the file; with allow_faults and the smoke
# scenario's settings, smoke passes every invariant it can check, and what
# it cannot is reported "not checked (remote)", never passed.
# Usage: chaos_remote_test.sh PATH/TO/agentvisor SCENARIO_DIR
set -u
bin=$1 scenarios=$2
if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: the supervisor's sandboxes need root (cgroups, mounts)"
  exit 77
fi
command -v curl >/dev/null || { echo "SKIP: curl is not installed"; exit 77; }
tmp=$(mktemp -d)
instance="test-chaos-remote-$$"
sup_pid=
cleanup() {
  [ -n "$sup_pid" ] && kill -9 "$sup_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# start ALLOW_FAULTS: a supervisor with the smoke scenario's settings.
. "$(dirname "$0")/../launch_supervisor.sh"
allow_faults=false
write_config() {
  cat >"$tmp/config.json" <<JSON
{"instance": "$instance", "state_dir": "$tmp/state",
 "host": {"memory_mb": 2048, "max_agents": 16},
 "agents": {"memory_mb": 64, "pids": 64, "workspace_mb": 16, "heartbeat_ms": 100,
            "hang_timeout_ms": 3000, "ready_timeout_ms": 5000, "allow_faults": $allow_faults},
 "supervision": {"strategy": "simple_one_for_one", "restart": "permanent", "max_restarts": 50,
                 "period_ms": 10000, "min_backoff_ms": 10, "max_backoff_ms": 200,
                 "random_factor": 0.2, "shutdown_timeout_ms": 1000},
 "api": {"listen": "127.0.0.1:$1"}, "log": {"level": "info"}}
JSON
}
start() {
  allow_faults=$1
  launch_supervisor write_config
}
stop() {
  kill -TERM $sup_pid
  wait $sup_pid; local rc=$?
  sup_pid=
  [ "$rc" -eq 0 ] || fail "supervisor exit $rc after SIGTERM: $(tail -20 "$tmp/sup.err")"
}

# --- without allow_faults: the fault routes are refused ----------------------------
start false
id=$(curl -s -H "Authorization: Bearer $token" -d '{"name": "x"}' "$base/v1/agents" \
  | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
[ -n "$id" ] || fail "no agent created"
got=$(curl -s -o "$tmp/body" -w '%{http_code}' -H "Authorization: Bearer $token" \
  -d '{"kind": "kill"}' "$base/v1/agents/$id/faults")
[ "$got" = 403 ] || fail "fault without allow_faults: HTTP $got, wanted 403"
grep -q 'faults_disabled' "$tmp/body" || fail "403 body: $(cat "$tmp/body")"
got=$(curl -s -o "$tmp/body" -w '%{http_code}' -H "Authorization: Bearer $token" \
  -d '{"duration_ms": 100}' "$base/v1/governor/pressure")
[ "$got" = 403 ] || fail "pressure without allow_faults: HTTP $got, wanted 403"
got=$(curl -s -o "$tmp/body" -w '%{http_code}' -d '{"kind": "kill"}' "$base/v1/agents/$id/faults")
[ "$got" = 401 ] || fail "fault without a token: HTTP $got, wanted 401"
got=$(curl -s -o "$tmp/body" -w '%{http_code}' -H "Authorization: Bearer $token" \
  "$base/v1/events?after=0")
[ "$got" = 200 ] || fail "events: HTTP $got"
grep -q '"kind":"ready"' "$tmp/body" || fail "events: no ready event: $(cat "$tmp/body")"
printf '%s\n' "$token" >"$tmp/token"
"$bin" chaos run "$scenarios/smoke.json" --api "$base" --token-file "$tmp/token" >"$tmp/nf.out" 2>&1; rc=$?
[ "$rc" -eq 2 ] || fail "a run against a supervisor without allow_faults: exit $rc, wanted 2"
grep -q 'allow_faults' "$tmp/nf.out" || fail "the refusal does not name allow_faults: $(cat "$tmp/nf.out")"
stop

# --- with allow_faults --------------------------------------------------------------
start true
printf '%s\n' "$token" >"$tmp/token"
echo wrong >"$tmp/bad-token"
"$bin" chaos run "$scenarios/smoke.json" --api "$base" --token-file "$tmp/bad-token" >"$tmp/bt.out" 2>&1; rc=$?
[ "$rc" -eq 2 ] || fail "a wrong token: exit $rc, wanted 2"
grep -q "401" "$tmp/bt.out" && grep -q "$tmp/bad-token" "$tmp/bt.out" \
  || fail "a wrong token: the error does not say 401 and name the file: $(cat "$tmp/bt.out")"
"$bin" chaos run "$scenarios/smoke.json" --api "$base" --token-file "$tmp/missing" >"$tmp/mt.out" 2>&1; rc=$?
[ "$rc" -eq 2 ] || fail "a missing token file: exit $rc, wanted 2"
grep -q "$tmp/missing" "$tmp/mt.out" || fail "a missing token file is not named: $(cat "$tmp/mt.out")"
got=$(curl -s -o "$tmp/body" -w '%{http_code}' -H "Authorization: Bearer $token" \
  -d '{"kind": "explode"}' "$base/v1/agents/a-1/faults")
[ "$got" = 400 ] && grep -q 'kind: unknown fault kind' "$tmp/body" \
  || fail "a bad fault kind: HTTP $got: $(cat "$tmp/body")"

"$bin" chaos run "$scenarios/smoke.json" --seed 1 --api "$base" --token-file "$tmp/token" \
  --report "$tmp/smoke" >"$tmp/smoke.out" 2>&1; rc=$?
cat "$tmp/smoke.out"
[ "$rc" -eq 0 ] || fail "remote smoke: exit $rc, wanted 0"
[ -s "$tmp/smoke/report.json" ] || fail "remote smoke: no report.json"
for inv in faults_observed calls_accounted restart_intensity backoff recovered no_leftovers supervisor_alive; do
  grep -Eq "^$inv  *(pass|not checked \(remote\))" "$tmp/smoke.out" || fail "remote smoke: invariant $inv neither passed nor 'not checked (remote)'"
done
grep -q '"status": *"failed"' "$tmp/smoke/report.json" && fail "remote smoke: report.json has a failed invariant"
grep -q '"status": *"not checked (remote)"' "$tmp/smoke/report.json" \
  || fail "remote smoke: no_leftovers should be 'not checked (remote)' (the supervisor's fds are elsewhere)"
# The run deleted its agents.
curl -s -H "Authorization: Bearer $token" "$base/v1/agents" >"$tmp/body"
grep -q '"id"' "$tmp/body" && fail "agents left after the run: $(cat "$tmp/body")"
stop
[ -z "$(find /sys/fs/cgroup -maxdepth 3 -name "$instance" 2>/dev/null)" ] || fail "the instance's cgroups are left"

[ "$fails" -eq 0 ] && echo "chaos remote: all checks passed"
[ "$fails" -eq 0 ]

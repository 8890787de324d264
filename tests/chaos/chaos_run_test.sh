#!/usr/bin/env bash
# `agentvisor chaos run` end to end against real sandboxes: the smoke
# scenario (every fault kind) passes every invariant and writes its report;
# a run against a supervisor that never restarts is reported as violating
# `recovered` and exits non-zero; a bad scenario is refused before anything
# starts, naming the field; a run interrupted by SIGINT ends early and
# leaves nothing behind.
# Usage: chaos_run_test.sh PATH/TO/agentvisor SCENARIO_DIR TEST_DIR
set -u
bin=$1 scenarios=$2 here=$3
if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: chaos runs start sandboxes, which need root (cgroups, mounts)"
  exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# --- bad input: refused at once, exit 2, the field named -------------------------
printf '{"name": "x", "duration_s": 5, "agents": {"count": 1}, "faults": {"schedule": [{"at_s": 1, "kind": "explode"}]}}' >"$tmp/bad.json"
"$bin" chaos run "$tmp/bad.json" >"$tmp/bad.out" 2>&1; rc=$?
[ "$rc" -eq 2 ] || fail "a bad scenario: exit $rc, wanted 2"
grep -q 'faults.schedule\[0\].kind' "$tmp/bad.out" || fail "the error does not name the field: $(cat "$tmp/bad.out")"
grep -q 'explode' "$tmp/bad.out" || fail "the error does not name the bad value: $(cat "$tmp/bad.out")"

# --- the checker can fail: no restarts while recovery is expected -----------------
"$bin" chaos run "$here/no_restart.json" --seed 7 --report "$tmp/norestart" >"$tmp/nr.out" 2>&1; rc=$?
[ "$rc" -eq 1 ] || fail "no_restart: exit $rc, wanted 1: $(tail -12 "$tmp/nr.out")"
grep -q '^recovered  *FAIL' "$tmp/nr.out" || fail "no_restart: 'recovered' not reported violated: $(cat "$tmp/nr.out")"
grep -q '"passed": *false' "$tmp/norestart/report.json" || fail "no_restart: report.json does not say passed false"

# --- spawn faults aimed at one agent at once: each met on a restart of its own -----
"$bin" chaos run "$here/spawn_faults_together.json" --seed 1 --report "$tmp/together" >"$tmp/tg.out" 2>&1; rc=$?
[ "$rc" -eq 0 ] || fail "spawn faults together: exit $rc, wanted 0: $(tail -12 "$tmp/tg.out")"
grep -q '"injected": *3' "$tmp/together/report.json" \
  || fail "spawn faults together: not all 3 faults injected: $(grep -A6 '"total"' "$tmp/together/report.json")"

# --- Ctrl-C: the run ends early, the supervisor goes down in order, nothing left -----
"$bin" chaos run "$scenarios/smoke.json" --seed 1 >"$tmp/int.out" 2>&1 &
pid=$!
sleep 5
kill -INT "$pid"
wait "$pid"; rc=$?
[ "$rc" -eq 1 ] || fail "interrupted: exit $rc, wanted 1: $(tail -5 "$tmp/int.out")"
grep -q 'interrupted by signal 2' "$tmp/int.out" || fail "interrupted: no line says so: $(tail -5 "$tmp/int.out")"
grep -q '^no_leftovers  *pass' "$tmp/int.out" || fail "interrupted: leftovers: $(grep no_leftovers "$tmp/int.out")"
[ -z "$(find /sys/fs/cgroup -maxdepth 3 -name "chaos-$pid" 2>/dev/null)" ] \
  || fail "interrupted: the run's cgroups are left: $(find /sys/fs/cgroup -maxdepth 3 -name "chaos-$pid")"

# --- smoke: every fault kind, every invariant holds ---------------------------------
"$bin" chaos run "$scenarios/smoke.json" --seed 1 --report "$tmp/smoke" >"$tmp/smoke.out" 2>&1; rc=$?
cat "$tmp/smoke.out"
[ "$rc" -eq 0 ] || fail "smoke: exit $rc, wanted 0"
for inv in faults_observed calls_accounted restart_intensity backoff recovered no_leftovers supervisor_alive; do
  grep -q "^$inv  *pass" "$tmp/smoke.out" || fail "smoke: invariant $inv did not pass"
done
[ -s "$tmp/smoke/report.json" ] || fail "smoke: no report.json"
grep -q '<svg' "$tmp/smoke/report.html" || fail "smoke: report.html has no plot"
for kind in kill crash hang oom partition spawn_failure slow_spawn cpu_hog disk_fill fork_bomb governor_pressure; do
  grep -q "\"$kind\"" "$tmp/smoke/report.json" || fail "smoke: report.json has no $kind fault"
done

[ "$fails" -eq 0 ] && echo "chaos run: all checks passed"
[ "$fails" -eq 0 ]

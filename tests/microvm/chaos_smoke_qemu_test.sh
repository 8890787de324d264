#!/usr/bin/env bash
# The chaos smoke run on the qemu backend (scenarios/smoke-qemu.json): every
# fault kind once against 2 QEMU microVMs (TCG here, KVM where it works),
# every invariant holds, nothing is skipped, no qemu is left.
# Usage: chaos_smoke_qemu_test.sh PATH/TO/agentvisor SCENARIO_DIR
# Skipped (77) without root, qemu-system-x86_64 or the guest image.
set -u
bin=$1 scenarios=$2
image="$(dirname "$bin")/../../guest-image"
if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: chaos runs need root (the supervisor's state and the guest's cgroups)"
  exit 77
fi
command -v qemu-system-x86_64 >/dev/null || { echo "SKIP: no qemu-system-x86_64"; exit 77; }
[ -r "$image/initrd.img" ] || { echo "SKIP: no guest image in $image (scripts/build-guest-image)"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

"$bin" chaos run "$scenarios/smoke-qemu.json" --seed 1 --report "$tmp/r" >"$tmp/out" 2>&1; rc=$?
cat "$tmp/out"
[ "$rc" -eq 0 ] || fail "smoke-qemu: exit $rc, wanted 0"
for inv in faults_observed calls_accounted restart_intensity backoff recovered no_leftovers supervisor_alive; do
  grep -q "^$inv  *pass" "$tmp/out" || fail "smoke-qemu: invariant $inv did not pass"
done
python3 - "$tmp/r/report.json" <<'PY' || fail "smoke-qemu: report.json is not as expected"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["backend"] == "qemu", r["backend"]
t = r["faults"]["total"]
assert t["planned"] == 12 and t["injected"] == 12 and t["skipped"] == 0, t
kinds = set(r["faults"]["by_kind"])
want = {"kill", "crash", "hang", "oom", "partition", "spawn_failure", "slow_spawn",
        "cpu_hog", "disk_fill", "fork_bomb", "governor_pressure"}
assert kinds == want, kinds ^ want
PY
# (The microvm suite runs its qemu tests one at a time: any agentvisor VM
# now is this run's.)
if pgrep -f "qemu-system-x86_64 -name agentvisor-" >/dev/null; then
  fail "a qemu of the run is still running: $(pgrep -af "qemu-system-x86_64 -name agentvisor-")"
fi
[ "$fails" -eq 0 ] && echo "chaos smoke on qemu: all checks passed"
[ "$fails" -eq 0 ]

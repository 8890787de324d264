#!/usr/bin/env bash
# Whole-binary tests of the agentvisor command line, driven as a user would:
# exit codes, one-line errors on stderr, and a supervisor stopped by signals.
# Usage: cli_test.sh PATH/TO/agentvisor
set -u
bin=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"; [ -n "${sup_pid:-}" ] && kill -9 "$sup_pid" 2>/dev/null' EXIT
fails=0 checks=0

fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
# expect NAME CODE CMD...: runs CMD, checks its exit code; stdout/stderr kept.
expect() {
  local name=$1 code=$2; shift 2
  checks=$((checks + 1))
  "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  [ "$rc" -eq "$code" ] || fail "$name: exit $rc, wanted $code; stderr: $(cat "$tmp/err")"
}
stderr_is_one_line() {
  local n; n=$(wc -l <"$tmp/err")
  [ "$n" -eq 1 ] || fail "$1: wanted one stderr line, got $n: $(cat "$tmp/err")"
}
stderr_has() { grep -q -- "$2" "$tmp/err" || fail "$1: stderr lacks '$2': $(cat "$tmp/err")"; }
stdout_has() { grep -q -- "$2" "$tmp/out" || fail "$1: stdout lacks '$2': $(head -c 300 "$tmp/out")"; }

expect "help" 0 "$bin" --help
stdout_has "help" supervisor; stdout_has "help" chaos; stdout_has "help" bench
for sub in supervisor chaos bench config version "chaos run" "bench baseline"; do
  # shellcheck disable=SC2086
  expect "$sub --help" 0 "$bin" $sub --help
done
expect "version" 0 "$bin" version
stdout_has "version" "agentvisor [0-9]"
expect "--version" 0 "$bin" --version

expect "no sub-command" 2 "$bin"
stderr_is_one_line "no sub-command"
expect "unknown sub-command" 2 "$bin" frobnicate
stderr_is_one_line "unknown sub-command"; stderr_has "unknown sub-command" frobnicate
expect "bad flag" 2 "$bin" supervisor --no-such-flag
stderr_is_one_line "bad flag"; stderr_has "bad flag" no-such-flag
expect "chaos run without a file" 2 "$bin" chaos run
stderr_is_one_line "chaos run without a file"

expect "chaos run, missing scenario file" 2 "$bin" chaos run x.json
stderr_has "chaos run, missing scenario file" "x.json"
stderr_is_one_line "chaos run, missing scenario file"
for sub in "bench concurrent"; do
  # shellcheck disable=SC2086
  expect "$sub --help" 0 "$bin" $sub --help
done
# Bad benchmark input is refused before anything runs: one line naming it.
expect "bench bad count" 2 "$bin" bench concurrent --agents 5,ten,25
stderr_is_one_line "bench bad count"; stderr_has "bench bad count" '"ten"'
expect "bench zero count" 2 "$bin" bench concurrent --agents 0
stderr_is_one_line "bench zero count"; stderr_has "bench zero count" '"0"'
expect "bench empty count" 2 "$bin" bench concurrent --agents 5,,10
stderr_is_one_line "bench empty count"
expect "bench bad iterations" 2 "$bin" bench baseline --iterations 0
stderr_is_one_line "bench bad iterations"; stderr_has "bench bad iterations" iterations
expect "bench unknown flag" 2 "$bin" bench baseline --frobnicate
stderr_is_one_line "bench unknown flag"; stderr_has "bench unknown flag" frobnicate

expect "missing config" 2 "$bin" supervisor --config "$tmp/nope.json"
stderr_is_one_line "missing config"; stderr_has "missing config" "$tmp/nope.json"
echo '{"agents": {"memory_mb": "lots"}}' >"$tmp/bad.json"
expect "bad config value" 2 "$bin" supervisor --config "$tmp/bad.json"
stderr_is_one_line "bad config value"; stderr_has "bad config value" "agents.memory_mb"
echo '{"agents": {"memory_mb": 64,}' >"$tmp/malformed.json"
expect "malformed config" 2 "$bin" supervisor --config "$tmp/malformed.json"
stderr_is_one_line "malformed config"; stderr_has "malformed config" "$tmp/malformed.json"
echo '{"colour": "blue"}' >"$tmp/unknown.json"
expect "unknown key" 2 "$bin" config check "$tmp/unknown.json"
stderr_has "unknown key" colour
chmod 000 "$tmp/bad.json"
if [ "$(id -u)" -ne 0 ]; then
  expect "unreadable config" 2 "$bin" supervisor --config "$tmp/bad.json"
  stderr_is_one_line "unreadable config"
fi
expect "bad --listen" 2 "$bin" supervisor --listen "localhost"
stderr_is_one_line "bad --listen"; stderr_has "bad --listen" "listen"

expect "config defaults" 0 "$bin" config defaults
cp "$tmp/out" "$tmp/defaults.json"
expect "defaults validate" 0 "$bin" config check "$tmp/defaults.json"
expect "print-config applies flags" 0 "$bin" supervisor --listen 127.0.0.1:9999 --print-config
stdout_has "print-config applies flags" "127.0.0.1:9999"

# A backend that cannot start fails the start (exit 1) naming what it
# lacks; a backend built before it is ended again (no instance cgroup left).
cat >"$tmp/qemu.json" <<JSON
{"backend": "qemu", "instance": "cli-qemu-$$", "state_dir": "$tmp/state-qemu",
 "qemu": {"kernel": "$tmp/no-such-vmlinux"}}
JSON
expect "qemu without its kernel" 1 "$bin" supervisor --config "$tmp/qemu.json"
stderr_has "qemu without its kernel" "guest kernel $tmp/no-such-vmlinux"
expect "backends in print-config" 0 "$bin" supervisor --config "$tmp/qemu.json" --print-config
stdout_has "backends in print-config" '"backends": \["qemu"\]'
if [ "$(id -u)" -eq 0 ]; then
  cat >"$tmp/fc.json" <<JSON
{"backends": ["sandbox", "firecracker"], "instance": "cli-fc-$$", "state_dir": "$tmp/state-fc",
 "firecracker": {"binary": "$tmp/no-such-firecracker"}}
JSON
  expect "firecracker without its binary" 1 "$bin" supervisor --config "$tmp/fc.json"
  stderr_has "firecracker without its binary" "firecracker binary '$tmp/no-such-firecracker' was not found"
  checks=$((checks + 1))
  [ -z "$(find /sys/fs/cgroup -maxdepth 3 -name "cli-fc-$$" 2>/dev/null)" ] \
    || fail "a failed start left the sandbox backend's cgroups"
fi

# A supervisor stops cleanly (exit 0) on SIGTERM and on SIGINT.
# wait_for FILE PATTERN: up to 20 s for PATTERN to appear in FILE.
wait_for() {
  for _ in $(seq 200); do grep -q -- "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}
# Its own instance and state directory, so it never meets a real supervisor.
# A port of its own too (a clash ends the start; the check says so).
cat >"$tmp/json-log.json" <<JSON
{"instance": "test-cli-$$", "state_dir": "$tmp/state",
 "api": {"listen": "127.0.0.1:$((20000 + RANDOM % 30000))"},
 "log": {"format": "json", "level": "debug"}}
JSON
for sig in TERM INT; do
  checks=$((checks + 1))
  templates_before=$(pgrep -f 'agentvisor-guest --template' | sort)
  "$bin" supervisor --config "$tmp/json-log.json" </dev/null >"$tmp/sup.out" 2>"$tmp/sup.err" &
  sup_pid=$!
  if ! wait_for "$tmp/sup.err" '"ready'; then
    fail "supervisor ($sig) never logged ready: $(cat "$tmp/sup.err")"
    kill -9 $sup_pid; wait $sup_pid 2>/dev/null; sup_pid=; continue
  fi
  kill -s "$sig" $sup_pid
  wait $sup_pid; rc=$?; sup_pid=
  [ "$rc" -eq 0 ] || fail "supervisor exit $rc after SIG$sig: $(cat "$tmp/sup.err")"
  grep -q 'stopped cleanly' "$tmp/sup.err" || fail "supervisor ($sig) did not stop cleanly: $(cat "$tmp/sup.err")"
  grep -q 'sandbox backend: guest' "$tmp/sup.err" || fail "supervisor ($sig) did not start the sandbox backend: $(cat "$tmp/sup.err")"
  # Nothing of this instance outlives the supervisor: no template process,
  # no cgroup.
  for _ in $(seq 50); do
    now=$(pgrep -f 'agentvisor-guest --template' | sort)
    [ -z "$(comm -13 <(echo "$templates_before") <(echo "$now"))" ] && break
    sleep 0.1
  done
  left=$(comm -13 <(echo "$templates_before") <(echo "$now"))
  [ -z "$left" ] || fail "supervisor ($sig) left its template process running: $left"
  if [ -n "$(find /sys/fs/cgroup -maxdepth 3 -name "test-cli-$$" 2>/dev/null)" ]; then
    fail "supervisor ($sig) left its instance cgroup behind"
  fi
  # Every record is one JSON object with ts, level and msg.
  bad=$(grep -cv '^{"ts":"[0-9T:.-]*Z","level":"[a-z]*",.*"msg":".*"}$' "$tmp/sup.err")
  [ "$bad" -eq 0 ] || fail "supervisor ($sig): $bad log lines are not JSON records: $(cat "$tmp/sup.err")"
done

echo "$checks checks, $fails failed"
[ "$fails" -eq 0 ]

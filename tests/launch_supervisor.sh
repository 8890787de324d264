# Sourced by the shell tests that run a real `agentvisor supervisor`. The
# sourcing script sets `bin` (the agentvisor executable) and `tmp` (its
# scratch directory).
#
# launch_supervisor WRITE_CONFIG: draws a loopback port, calls
# `WRITE_CONFIG PORT` to write $tmp/config.json (state_dir $tmp/state, log
# level info or lower: readiness is its "ready" line), starts the supervisor
# logging to $tmp/sup.err and waits up to 30 s for it to be ready. Another
# port is drawn, up to 5 times, when the one drawn is taken. Sets sup_pid,
# port, base (http://127.0.0.1:PORT) and token; exits 1 with the log's tail
# when the supervisor never gets ready, rather than testing one that is not.
launch_supervisor() {
  local write_config=$1 _ end
  for _ in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 30000))
    "$write_config" "$port"
    "$bin" supervisor --config "$tmp/config.json" </dev/null >"$tmp/sup.out" 2>"$tmp/sup.err" &
    sup_pid=$!
    end=$((SECONDS + 30))
    while [ "$SECONDS" -lt "$end" ]; do
      if grep -q 'ready; SIGINT' "$tmp/sup.err"; then
        base="http://127.0.0.1:$port"
        token=$(cat "$tmp/state/api.token")
        return 0
      fi
      kill -0 "$sup_pid" 2>/dev/null || break
      sleep 0.1
    done
    # Alive but never ready: SIGTERM lets it remove what it made, if it can.
    kill -TERM "$sup_pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$sup_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$sup_pid" 2>/dev/null
    wait "$sup_pid" 2>/dev/null
    sup_pid=
    grep -q 'address already in use' "$tmp/sup.err" || break
  done
  echo "the supervisor did not get ready within 30 s: $(tail -20 "$tmp/sup.err")"
  exit 1
}

#pragma once
// The peers agentvisor's benchmarks measure beside their own figures, on the
// same machine in the same run: other ways to start an isolated /bin/true
// (bwrap, unshare, crun), and the restart latency of an Erlang/OTP
// supervisor. A peer whose tool is missing is reported unavailable with the
// reason, never given a made-up number. docs/performance.md lists them.

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

namespace agentvisor::bench {

/// Waits for `pid`; true when it exited with status 0.
bool reap_ok(pid_t pid);

/// The first executable `name` in PATH, or "".
std::string find_in_path(const std::string& name);

/// posix_spawn + waitpid of `args` (args[0] is the program's name), stdio
/// on /dev/null. True when it exited 0.
bool spawn_and_wait(const std::string& path, const std::vector<std::string>& args);

/// A sandbox peer as the report shows it.
struct peer_info {
  std::string name;    ///< "bwrap", "unshare", "crun"
  bool available = false;
  std::string command; ///< what one run executes, when available
  std::string reason;  ///< why not, when unavailable
};

/// Runs the sandbox peers from a helper process forked while the caller
/// still has one thread (before the actor system and the I/O thread start):
/// the helper unshares its mount namespace, where it hides a cgroup2 mount
/// that sits beside v1 controllers (crun 1.8 refuses such "hybrid" hosts),
/// so that no run pays for that set-up. Runs are timed inside the helper
/// (fork/exec to reaped) and the figures come back over a pipe.
class peer_runner {
public:
  /// Forks the helper and probes each peer once (a missing tool, or one
  /// that fails to run /bin/true, makes that peer unavailable). Throws
  /// std::runtime_error when the helper cannot be started.
  static std::unique_ptr<peer_runner> start();

  ~peer_runner();
  peer_runner(const peer_runner&) = delete;
  peer_runner& operator=(const peer_runner&) = delete;

  const std::vector<peer_info>& peers() const { return peers_; }

  /// One run of peers()[i], in ms. Throws when the run fails.
  double run_once(size_t i);

  /// `n` runs of peers()[i] started at once and all reaped: the wall time
  /// in ms. Throws when one fails.
  double run_concurrent(size_t i, int n);

private:
  peer_runner() = default;
  double request(int op, size_t i, int n);

  pid_t pid_ = -1;
  int to_ = -1;   ///< commands to the helper
  int from_ = -1; ///< replies from it
  std::string dir_; ///< the crun bundle and state, removed at the end
  std::vector<peer_info> peers_;
};

/// The restart latency of a small Erlang/OTP supervisor (one_for_one, one
/// permanent worker): exit(Child, kill) -> the restarted child answers a
/// message, timed inside the running VM, `n` times after `warmup`.
struct otp_restart {
  bool available = false;
  std::string command;
  std::string reason;
  std::vector<double> samples_ms;
};

otp_restart measure_otp_restart(int warmup, int n);

} // namespace agentvisor::bench

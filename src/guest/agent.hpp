#pragma once
/// The guest's main loop: one thread, poll() over the channel, a signalfd
/// (SIGCHLD, SIGTERM, SIGINT), a heartbeat timerfd and the pipes of running
/// commands.

#include <cstdint>
#include <string>

namespace agentvisor::guest {

/// Command-line options of agentvisor-guest.
struct agent_options {
  std::string workspace = "/workspace";
  int channel_fd = 3;
  uint32_t heartbeat_ms = 1000;
  /// A cgroup memory usage file bind-mounted into the sandbox; empty: sum
  /// the resident sets of the processes in /proc.
  std::string memory_file;
  bool allow_faults = false;
};

/// Runs the guest until shutdown or EOF on the channel; returns the exit
/// status (0, or 2 when the workspace is unusable).
int run_agent(const agent_options& opts);

} // namespace agentvisor::guest

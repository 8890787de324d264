#pragma once
/// execute_command: programs run asynchronously, each in its own process
/// group, while the guest's loop keeps answering. The loop polls the pipes
/// this table exposes and tells it when a child exits or time passes.

#include "tools.hpp"
#include "workspace.hpp"

#include <poll.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace agentvisor::guest {

/// Output kept per stream (stdout, stderr); the rest is read and dropped.
inline constexpr std::size_t command_max_output = std::size_t{256} << 10;
/// The longest JSON string (escaped, quotes included) one stream becomes in
/// the result: output dense in control characters or invalid UTF-8 escapes
/// to several bytes per byte and is cut further, so that both streams fit in
/// one 1 MiB line.
inline constexpr std::size_t command_max_output_json = std::size_t{384} << 10;
inline constexpr uint64_t command_default_timeout_ms = 30'000;
inline constexpr uint64_t command_max_timeout_ms = 24ull * 3600 * 1000;
inline constexpr std::size_t command_max_running = 64;

using steady = std::chrono::steady_clock;

class command_table {
public:
  command_table();
  command_table(const command_table&) = delete;
  command_table& operator=(const command_table&) = delete;
  ~command_table();

  /// Starts the command a call `id` asks for. On failure nothing runs and
  /// the error is the call's answer; on success the answer comes later,
  /// from finish().
  status start(uint64_t id, const workspace& ws, const tool_args& args);

  /// Appends a pollfd for every pipe still open; `owners` gets, for each,
  /// the command's index into the table and which stream (0 in, 1 out, 2 err).
  void add_pollfds(std::vector<pollfd>& fds, std::vector<std::pair<std::size_t, int>>& owners) const;

  /// Handles readiness of one of the pipes add_pollfds listed.
  void on_ready(std::size_t index, int stream, short revents);

  /// A child of the guest exited and is not yet reaped (waitid WNOWAIT).
  /// If it is one of ours, kills what is left of its process group, reaps
  /// it, drains its pipes and queues its result; returns whether it was ours.
  bool on_exit(pid_t pid);

  /// SIGKILLs the process group of every command whose deadline passed.
  void on_time(steady::time_point now);

  /// The earliest deadline of a running command.
  std::optional<steady::time_point> next_deadline() const;

  /// Appends a result line for each finished command and forgets it.
  void flush_results(std::string& out);

  /// SIGKILLs every command's process group (shutdown, EOF).
  void kill_all();

  std::size_t running() const noexcept { return cmds_.size(); }

private:
  struct command;
  void drain(command& c, int stream);
  std::vector<std::unique_ptr<command>> cmds_;
};

} // namespace agentvisor::guest

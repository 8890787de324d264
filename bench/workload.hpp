#pragma once
// What `agentvisor bench baseline` and `concurrent` share: the check that
// sandboxes can run here, tool calls and usage reads from a blocking actor,
// and the tool fixture.

#include "host.hpp"

#include <optional>
#include <string>

namespace agentvisor::bench {

/// Why sandboxes cannot run here (not root, no usable cgroups), or nothing.
std::optional<std::string> sandboxes_unavailable();

/// A benchmark command's process set-up: SIGINT/SIGTERM to `on_stop` (no
/// SA_RESTART), SIGPIPE ignored, the fd limit raised, logging at errors only
/// (agents stop by the hundred, on purpose).
void prepare_process(void (*on_stop)(int));

/// A tool call through the spawner, as the API makes it. Throws naming the
/// agent, the tool and the error.
tool_result call_tool(caf::scoped_actor& self, const caf::actor& sp, const std::string& agent,
                      const std::string& tool, const std::string& args_json);

/// The guest's cgroup usage of machine `machine`, from the backend.
agent_usage usage_of(caf::scoped_actor& self, const backend_actor& backend,
                     const std::string& machine);

/// {"path": path, "content": content}
std::string write_args(const std::string& path, const std::string& content);

/// Writes the baseline's tool fixture into the agent's workspace: a 512-byte
/// file, and a tree of 4 directories x 8 files x 20 lines with one "needle"
/// line each.
void write_fixture(caf::scoped_actor& self, const caf::actor& sp, const std::string& agent);

/// One timed tool of the baseline.
struct tool_case {
  std::string name;
  std::string args;
  std::vector<double> samples_ms;
};

/// read_file, write_file, search, list_directory, execute_command on the
/// fixture, with the checks that each does what it is timed for.
std::vector<tool_case> baseline_tools();
void check_tool_result(const tool_case& c, const tool_result& r);

} // namespace agentvisor::bench

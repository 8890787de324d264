#pragma once
// `agentvisor bench baseline` and `agentvisor bench concurrent`: the
// benchmarks in the shape of our users' two performance reports (a
// single-agent baseline and a concurrency study), on the real actors over
// real sandboxes, each figure beside the users' target, written as one JSON
// document. src/cli parses the command line and calls these.
// docs/performance.md describes the method and the document.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace agentvisor::bench {

/// Exit codes of both commands: 0 measured (whether or not targets pass),
/// 1 a run failed, 77 not root or no usable cgroups (skipped).
inline constexpr int exit_measured = 0;
inline constexpr int exit_run_failed = 1;
inline constexpr int exit_skipped = 77;

struct baseline_options {
  int iterations = 100;    ///< spawns, tool rounds, restarts
  int memory_agents = 20;  ///< live agents for the memory figure
  std::string out;         ///< empty: stdout
  bool peers = false;
  bool quiet = false;      ///< no progress line even on a terminal
  std::string guest_binary; ///< empty: found beside the executable
};

struct concurrent_options {
  std::vector<int> agents{5, 10, 25, 50};
  std::string out;
  bool peers = false;
  bool quiet = false;
  std::string guest_binary;
};

int run_baseline(const baseline_options& o);
int run_concurrent(const concurrent_options& o);

/// "5,10,25" -> {5, 10, 25}. Each count must be a whole number from 1 to
/// max_concurrent_agents; on error, a sentence naming the bad item.
std::optional<std::vector<int>> parse_agent_counts(std::string_view text, std::string* error);

inline constexpr int max_concurrent_agents = 10000;

} // namespace agentvisor::bench

#pragma once
/// The sub-commands behind `agentvisor`. main.cpp only parses the command
/// line (CLI11) and calls one of these; each returns the process exit code.

#include <cstdint>
#include <optional>
#include <string>

namespace agentvisor::cli {

/// Exit codes: 0 ok, 1 a run failed, 2 usage or input error (bad flag, bad
/// config), 3 a capability that is not built yet.
inline constexpr int exit_ok = 0;
inline constexpr int exit_failure = 1;
inline constexpr int exit_usage = 2;
inline constexpr int exit_not_built = 3;

struct supervisor_options {
  std::string config_file;   ///< empty: the built-in defaults
  std::string listen;        ///< empty: from the config
  std::string token_file;    ///< empty: from the config
  bool print_config = false; ///< print the effective config and exit
};

int run_supervisor(const supervisor_options& opts);

/// `agentvisor config check FILE` / `agentvisor config defaults`.
int run_config_check(const std::string& file);
int run_config_defaults();

struct chaos_run_options {
  std::string scenario;
  std::optional<uint64_t> seed; ///< none: a random seed, printed
  std::string report_dir;       ///< empty: no report files
  std::string api_url;          ///< a running supervisor: http://HOST:PORT
  std::string token_file;       ///< its API token (with api_url only)
};

/// `agentvisor chaos run`: exit_ok when every checked invariant held,
/// exit_failure when one did not (or the run could not start), exit_usage
/// on a bad scenario, and with api_url on an unreadable token file, a token
/// the server refuses (401), a supervisor without agents.allow_faults or
/// settings that differ from the scenario's overrides.
int run_chaos(const chaos_run_options& opts);

/// Prints "agentvisor <what>: not built yet" and returns exit_not_built.
int not_built_yet(const std::string& what);

} // namespace agentvisor::cli

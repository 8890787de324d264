// `agentvisor config check|defaults`: validate a file the way the
// supervisor would, or show the built-in defaults.

#include "commands.hpp"

#include "agentvisor/config.hpp"

#include <cstdio>

namespace agentvisor::cli {

int run_config_check(const std::string& file) {
  auto cfg = load_config(file);
  if (!cfg) {
    std::fprintf(stderr, "agentvisor: %s\n", cfg.err().message.c_str());
    return exit_usage;
  }
  std::printf("%s: ok\n", file.c_str());
  return exit_ok;
}

int run_config_defaults() {
  std::fputs(default_config_json().c_str(), stdout);
  return exit_ok;
}

} // namespace agentvisor::cli

// `agentvisor supervisor`: load the config, start logging and the
// supervision tree (tree.hpp); run until SIGINT or SIGTERM, then shut down in
// order: API closed, agents stopped (graceful, then forced), governor and
// backend ended, I/O thread stopped.

#include "commands.hpp"
#include "tree.hpp"

#include "agentvisor/config.hpp"
#include "agentvisor/log.hpp"

#include <cstdio>

namespace agentvisor::cli {

namespace {

result<config> effective_config(const supervisor_options& opts) {
  auto cfg = opts.config_file.empty() ? parse_config("{}", "built-in defaults")
                                      : load_config(opts.config_file);
  if (!cfg)
    return cfg;
  if (!opts.listen.empty()) {
    if (auto hp = parse_host_port(opts.listen); !hp)
      return error{"--listen: " + hp.err().message};
    cfg->api.listen = opts.listen;
  }
  if (!opts.token_file.empty())
    cfg->api.token_file = opts.token_file;
  return cfg;
}

} // namespace

int run_supervisor(const supervisor_options& opts) {
  auto cfg = effective_config(opts);
  if (!cfg) {
    std::fprintf(stderr, "agentvisor: %s\n", cfg.err().message.c_str());
    return exit_usage;
  }
  if (opts.print_config) {
    std::fputs(to_json(*cfg).c_str(), stdout);
    return exit_ok;
  }
  log::init(cfg->log.level, cfg->log.format);
  spdlog::info("agentvisor {} starting: instance {}, backend {}, config {}",
               AGENTVISOR_VERSION, cfg->instance, to_string(cfg->backend),
               opts.config_file.empty() ? "built-in defaults" : opts.config_file);

  auto tree = supervisor_tree::start(*cfg);
  if (!tree) {
    spdlog::error("{}", tree.err().message);
    return exit_failure;
  }
  (*tree)->watch_signals();
  spdlog::info("ready; SIGINT or SIGTERM stops it");
  int code = (*tree)->wait();
  if (code == exit_ok)
    spdlog::info("stopped cleanly");
  return code;
}

} // namespace agentvisor::cli

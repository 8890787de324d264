// `agentvisor supervisor`: load the config, start logging, the actor system
// and the I/O thread, run until SIGINT or SIGTERM, then shut down in order.
//
// The signal travels like every kernel event: libuv's signal handle on the
// I/O thread -> a signal_received message -> the root actor, which quits;
// main() sees the root's down message and stops the I/O thread.

#include "commands.hpp"

#include "agentvisor/config.hpp"
#include "agentvisor/io.hpp"
#include "agentvisor/log.hpp"

#include <caf/all.hpp>

#include <csignal>
#include <cstdio>


namespace agentvisor::cli {

namespace {

// The root of the actor tree until the supervision tree exists: it owns the
// process lifetime and ends it on the first SIGINT/SIGTERM.
caf::behavior supervisor_root(caf::event_based_actor* self) {
  return {
    [=](const io::signal_received& sig) {
      spdlog::info("received signal {} ({}), shutting down", sig.signum,
                   strsignal(sig.signum));
      self->quit();
    },
  };
}

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

  caf::actor_system_config sys_cfg;
  caf::actor_system sys{sys_cfg};
  io::io_thread io;
  if (std::string err; !io.start(&err)) {
    spdlog::error("cannot start the I/O thread: {}", err);
    return exit_failure;
  }
  auto root = sys.spawn(supervisor_root);
  io.watch_signal(root, SIGINT);
  io.watch_signal(root, SIGTERM);
  spdlog::warn("the supervision tree and the HTTP API ({}) are not built yet: "
               "this supervisor runs the actor system and the I/O thread only",
               cfg->api.listen);
  spdlog::info("ready; SIGINT or SIGTERM stops it");
  {
    caf::scoped_actor self{sys};
    self->monitor(root);
    self->receive([](const caf::down_msg&) {});
  }
  auto report = io.stop();
  if (report.open_handles != 0) {
    spdlog::error("I/O thread stopped with {} handles still open",
                  report.open_handles);
    return exit_failure;
  }
  spdlog::info("stopped cleanly");
  return exit_ok;
}

} // namespace agentvisor::cli

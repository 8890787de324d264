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

#include "sandbox_backend.hpp"

#include <caf/all.hpp>

#include <sys/resource.h>

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

// Every sandbox holds a few fds in the supervisor (pidfd, channel, OOM fd,
// workspace): raise the soft limit to the hard one.
void raise_fd_limit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
}

sandbox::backend_options backend_options_from(const config& cfg) {
  sandbox::backend_options o;
  o.instance = cfg.instance;
  o.state_dir = cfg.state_dir;
  o.guest_binary = cfg.guest_binary;
  o.keep_workspaces = cfg.keep_workspaces;
  return o;
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

  if (cfg->backend != backend_kind::sandbox) {
    spdlog::error("backend {}: not built yet (use \"sandbox\")", to_string(cfg->backend));
    return exit_not_built;
  }
  raise_fd_limit();
  // Host preparation blocks (instance lock, stale cgroups, template start):
  // it happens before any actor runs.
  auto host = sandbox::prepare_host(backend_options_from(*cfg));
  if (!host) {
    spdlog::error("cannot prepare the sandbox backend: {}", host.err().message);
    return exit_failure;
  }
  spdlog::info("{}", sandbox::describe(**host));

  caf::actor_system_config sys_cfg;
  caf::actor_system sys{sys_cfg};
  io::io_thread io;
  if (std::string err; !io.start(&err)) {
    spdlog::error("cannot start the I/O thread: {}", err);
    return exit_failure;
  }
  auto backend = sandbox::spawn_sandbox_backend(sys, io, std::move(*host));
  auto root = sys.spawn(supervisor_root);
  io.watch_signal(root, SIGINT);
  io.watch_signal(root, SIGTERM);
  spdlog::warn("the supervision tree and the HTTP API ({}) are not built yet: "
               "this supervisor runs the sandbox backend, the actor system and "
               "the I/O thread only",
               cfg->api.listen);
  spdlog::info("ready; SIGINT or SIGTERM stops it");
  {
    caf::scoped_actor self{sys};
    self->monitor(root);
    self->receive([](const caf::down_msg&) {});
    // The backend kills what agents remain and stops the template.
    self->send_exit(backend, caf::exit_reason::user_shutdown);
    self->wait_for(backend);
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

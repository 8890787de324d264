// `agentvisor supervisor`: load the config, start logging, the actor system,
// the I/O thread and the supervision tree (backend, resource governor,
// spawner, HTTP API); run until SIGINT or SIGTERM, then shut down in order:
// API closed, agents stopped (graceful, then forced), governor and backend
// ended, I/O thread stopped.
//
// The signal travels like every kernel event: libuv's signal handle on the
// I/O thread -> a signal_received message -> the root actor, which runs the
// shutdown; main() sees the root's down message and stops the I/O thread.

#include "commands.hpp"

#include "agentvisor/config.hpp"
#include "agentvisor/io.hpp"
#include "agentvisor/log.hpp"
#include "agentvisor/messages.hpp"
#include "agentvisor/task.hpp"
#include "agentvisor/token.hpp"

#include "api.hpp"
#include "resource_governor.hpp"
#include "sandbox_backend.hpp"
#include "spawner.hpp"

#include <caf/all.hpp>

#include <sys/resource.h>

#include <csignal>
#include <cstdio>
#include <cstring>

namespace agentvisor::cli {

namespace {

/// Whom the root shuts down, in order.
struct tree {
  caf::actor api;
  caf::actor spawner;
  caf::actor governor;
  uint32_t shutdown_timeout_ms = 5000;
};

struct root_state {
  tree t;
  bool shutting_down = false;
  static inline const char* name = "supervisor_root";
};

using root_actor = caf::stateful_actor<root_state>*;

// API first (no new work), then the agents (graceful, then forced by the
// spawner), then the governor. The backend and the I/O thread end in main().
task<void> shut_down(root_actor self, caf::error reason) {
  auto t = self->state.t;
  using std::chrono::milliseconds;
  if (auto r = co_await ask<void>(self, t.api, within{milliseconds(5000)},
                                       shutdown_atom::value);
      !r)
    spdlog::warn("the API did not close in time: {}", caf::to_string(r.error()));
  if (auto r = co_await ask<void>(self, t.spawner,
                                       within{milliseconds(3 * t.shutdown_timeout_ms + 5000)},
                                       shutdown_atom::value);
      !r)
    spdlog::error("stopping the agents: {}", caf::to_string(r.error()));
  self->send_exit(t.spawner, caf::exit_reason::user_shutdown);
  self->send_exit(t.governor, caf::exit_reason::user_shutdown);
  self->quit(std::move(reason));
}

void begin_shutdown(root_actor self, caf::error reason) {
  if (self->state.shutting_down)
    return;
  self->state.shutting_down = true;
  launch(self, shut_down(self, std::move(reason)));
}

// The root of the actor tree: it owns the process lifetime. The first
// SIGINT/SIGTERM shuts down in order; a second one quits at once (the
// backend still kills every agent when it ends). A spawner that escalated
// (restart intensity exceeded) ends the process with a failure.
caf::behavior supervisor_root(root_actor self, tree t) {
  self->state.t = std::move(t);
  self->monitor(self->state.t.spawner);
  self->set_down_handler([self](caf::down_msg& dm) {
    if (dm.source != self->state.t.spawner.address() || self->state.shutting_down)
      return;
    spdlog::error("the spawner ended: {}; shutting down", caf::to_string(dm.reason));
    begin_shutdown(self, dm.reason ? dm.reason : make_error(errc::internal, "spawner ended"));
  });
  return {
    [=](const io::signal_received& sig) {
      if (self->state.shutting_down) {
        spdlog::warn("received signal {} again: quitting now", sig.signum);
        self->quit();
        return;
      }
      spdlog::info("received signal {} ({}), shutting down", sig.signum,
                   strsignal(sig.signum));
      begin_shutdown(self, caf::error{});
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
  register_messages(sys_cfg);
  caf::actor_system sys{sys_cfg};
  io::io_thread io;
  if (std::string err; !io.start(&err)) {
    spdlog::error("cannot start the I/O thread: {}", err);
    return exit_failure;
  }
  auto token = load_or_create_token(cfg->api.token_file, cfg->state_dir);
  if (!token) {
    spdlog::error("API token: {}", token.err().message);
    io.stop();
    return exit_failure;
  }
  spdlog::info("API token {} {}", token->generated ? "generated in" : "read from", token->path);
  auto listen = parse_host_port(cfg->api.listen);

  // One registry for the whole supervisor; the actors share it (its
  // series are atomics), the api actor serializes it on GET /metrics.
  std::shared_ptr<metrics::metrics> reg;
  if (cfg->metrics.enabled)
    reg = std::make_shared<metrics::metrics>(cfg->metrics);

  auto backend = sandbox::spawn_sandbox_backend(sys, io, std::move(*host));
  auto gov_opts = make_governor_options(*cfg);
  gov_opts.metrics = reg;
  auto governor = spawn_resource_governor(sys, &io, std::move(gov_opts));
  spawner_options sp_opts;
  sp_opts.supervision = cfg->supervision;
  sp_opts.defaults = cfg->agents;
  sp_opts.pool = cfg->pool;
  auto spawner = spawn_spawner(sys, spawner_context{backend, &io, governor, {}, reg, cfg->backend},
                               sp_opts);
  caf::anon_send(governor, attach_atom::value, spawner);
  api_options api_opts;
  api_opts.listen = *listen;
  api_opts.token = token->value;
  api_opts.max_body_bytes = cfg->api.max_body_bytes;
  api_opts.metrics = reg;
  api_opts.metrics_require_token = cfg->metrics.require_token;
  auto api = spawn_api(sys, io, api_opts, spawner, governor);

  int code = exit_ok;
  {
    caf::scoped_actor self{sys};
    bool listening = false;
    self->request(api, std::chrono::seconds(10), get_atom::value)
      .receive(
        [&](uint16_t port) {
          spdlog::info("API listening on {}:{}", listen->host, port);
          listening = true;
        },
        [&](caf::error& e) { spdlog::error("{}", view(e).message); });
    auto root = listening ? sys.spawn(supervisor_root,
                                      tree{api, spawner, governor,
                                           cfg->supervision.shutdown_timeout_ms})
                          : caf::actor{};
    if (root) {
      io.watch_signal(root, SIGINT);
      io.watch_signal(root, SIGTERM);
      spdlog::info("ready; SIGINT or SIGTERM stops it");
      self->monitor(root);
      self->receive([&](const caf::down_msg& dm) {
        if (dm.reason && dm.reason != caf::exit_reason::user_shutdown)
          code = exit_failure;
      });
    } else {
      code = exit_failure;
    }
    // After an ordered shutdown these are gone already; after a second
    // signal or a failed start they end here (the spawner takes its agents'
    // actors with it).
    for (auto& a : {api, spawner, governor}) {
      self->send_exit(a, caf::exit_reason::user_shutdown);
      self->wait_for(a);
    }
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
  if (code == exit_ok)
    spdlog::info("stopped cleanly");
  return code;
}

} // namespace agentvisor::cli

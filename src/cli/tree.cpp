// The supervisor tree in this process (tree.hpp).
//
// The signal travels like every kernel event: libuv's signal handle on the
// I/O thread -> a signal_received message -> the root actor, which runs the
// ordered shutdown: API closed, agents stopped (graceful, then forced),
// governor ended; then wait() ends the backend router, the backends and the
// I/O thread.

#include "tree.hpp"

#include "commands.hpp"

#include "agentvisor/log.hpp"
#include "agentvisor/messages.hpp"
#include "agentvisor/task.hpp"
#include "agentvisor/token.hpp"

#include "api.hpp"
#include "backend_router.hpp"
#include "firecracker_backend.hpp"
#include "qemu_backend.hpp"
#include "resource_governor.hpp"
#include "sandbox_backend.hpp"
#include "spawner.hpp"

#include <caf/all.hpp>

#include <sys/resource.h>

#include <array>
#include <filesystem>
#include <csignal>
#include <cstring>

namespace agentvisor::cli {

namespace {

/// Whom the root shuts down, in order.
struct tree_handles {
  caf::actor api;
  caf::actor spawner;
  caf::actor governor;
  uint32_t shutdown_timeout_ms = 5000;
};

struct root_state {
  tree_handles t;
  bool shutting_down = false;
  static inline const char* name = "supervisor_root";
};

using root_actor = caf::stateful_actor<root_state>*;

// API first (no new work), then the agents (graceful, then forced by the
// spawner), then the governor. The router, the backends and the I/O thread
// end in wait().
task<void> shut_down(root_actor self, caf::error reason) {
  auto t = self->state.t;
  using std::chrono::milliseconds;
  if (auto r = co_await ask<void>(self, t.api, within{milliseconds(5000)}, shutdown_atom::value);
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
// SIGINT/SIGTERM (or shutdown_atom) shuts down in order; a second signal
// quits at once (the backend still kills every agent when it ends). A
// spawner that escalated (restart intensity exceeded) ends it with that
// reason.
caf::behavior supervisor_root(root_actor self, tree_handles t) {
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
      spdlog::info("received signal {} ({}), shutting down", sig.signum, strsignal(sig.signum));
      begin_shutdown(self, caf::error{});
    },
    [=](shutdown_atom) { begin_shutdown(self, caf::error{}); },
  };
}

sandbox::backend_options sandbox_options_from(const config& cfg) {
  sandbox::backend_options o;
  o.instance = cfg.instance;
  o.state_dir = cfg.state_dir;
  o.guest_binary = cfg.guest_binary;
  o.keep_workspaces = cfg.keep_workspaces;
  o.allow_faults = cfg.agents.allow_faults;
  return o;
}

// --- the backends -------------------------------------------------------------

/// Builds one backend from the config (blocking is fine: start-up). What it
/// prepared on the host is the backend actor's from then on, removed when
/// that actor ends.
using backend_factory = result<backend_actor> (*)(caf::actor_system&, io::io_thread&,
                                                   const config&);

result<backend_actor> build_sandbox(caf::actor_system& sys, io::io_thread& io, const config& cfg) {
  auto host = sandbox::prepare_host(sandbox_options_from(cfg));
  if (!host)
    return error{"cannot prepare the sandbox backend: " + host.err().message};
  spdlog::info("{}", sandbox::describe(**host));
  return sandbox::spawn_sandbox_backend(sys, io, std::move(*host));
}

/// The running executable: the guest image is found relative to it.
std::string self_exe() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string{} : p.string();
}

result<backend_actor> build_qemu(caf::actor_system& sys, io::io_thread& io, const config& cfg) {
  qemu::backend_options o;
  o.instance = cfg.instance;
  o.state_dir = cfg.state_dir;
  o.binary = cfg.qemu.binary;
  o.kernel = cfg.qemu.kernel;
  o.initrd = cfg.qemu.initrd;
  o.accel = to_string(cfg.qemu.accel);
  o.machine = to_string(cfg.qemu.machine);
  o.vcpus = cfg.qemu.vcpus;
  o.boot_timeout_ms = cfg.qemu.boot_timeout_ms;
  o.snapshots = cfg.qemu.snapshots;
  o.allow_faults = cfg.agents.allow_faults;
  o.keep_workspaces = cfg.keep_workspaces;
  auto host = qemu::check_host(o, self_exe());
  if (!host)
    return host.err();
  spdlog::info("qemu backend: {} -M {} -accel {}, kernel {}", host->binary, host->machine,
               host->accel, host->kernel);
  if (!host->note.empty())
    spdlog::warn("qemu backend: {}", host->note);
  return qemu::spawn_qemu_backend(sys, io, o, *host);
}

result<backend_actor> build_firecracker(caf::actor_system& sys, io::io_thread& io,
                                        const config& cfg) {
  firecracker::backend_options o;
  o.instance = cfg.instance;
  o.state_dir = cfg.state_dir;
  o.binary = cfg.firecracker.binary;
  o.jailer = cfg.firecracker.jailer;
  auto dir = qemu::default_image_dir(self_exe());
  o.kernel = cfg.firecracker.kernel.empty() ? dir + "/vmlinux" : cfg.firecracker.kernel;
  o.initrd = cfg.firecracker.initrd.empty() ? dir + "/initrd.img" : cfg.firecracker.initrd;
  o.vcpus = cfg.firecracker.vcpus;
  o.boot_timeout_ms = cfg.firecracker.boot_timeout_ms;
  o.snapshots = cfg.firecracker.snapshots;
  o.allow_faults = cfg.agents.allow_faults;
  o.keep_workspaces = cfg.keep_workspaces;
  return firecracker::spawn_firecracker_backend(sys, io, std::move(o));
}

/// One factory per backend_kind, in the enum's order.
constexpr std::array<backend_factory, 3> backend_factories{
  build_sandbox,
  build_qemu,
  build_firecracker,
};
static_assert(static_cast<std::size_t>(backend_kind::firecracker) + 1 == backend_factories.size());

std::string describe_backends(const config& cfg) {
  std::string out;
  for (auto b : cfg.backends) {
    out += out.empty() ? "" : ", ";
    out += to_string(b);
    if (b == cfg.backend)
      out += " (default)";
  }
  return out;
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

} // namespace

supervisor_tree::supervisor_tree() : sys_((register_messages(sys_cfg_), sys_cfg_)) {
}

supervisor_tree::~supervisor_tree() {
  if (root_ && !ended_)
    stop();
  else if (io_started_ && !ended_)
    io_.stop();
}

result<std::unique_ptr<supervisor_tree>> supervisor_tree::start(const config& cfg,
                                                                std::optional<host_port> listen) {
  raise_fd_limit();
  if (!listen) {
    auto hp = parse_host_port(cfg.api.listen);
    if (!hp)
      return error{"api.listen: " + hp.err().message};
    listen = *hp;
  }
  std::unique_ptr<supervisor_tree> t{new supervisor_tree()};
  if (std::string err; !t->io_.start(&err))
    return error{"cannot start the I/O thread: " + err};
  t->io_started_ = true;
  auto token = load_or_create_token(cfg.api.token_file, cfg.state_dir);
  if (!token)
    return error{"API token: " + token.err().message};
  spdlog::info("API token {} {}", token->generated ? "generated in" : "read from", token->path);
  t->token_ = token->value;
  t->host_ = listen->host;
  // Backends block while they prepare the host (the sandbox backend's
  // instance lock, stale cgroups, template start): this happens before any
  // other actor runs, and last of the steps that can fail here: from a
  // backend's spawn on, the backend owns (and on any end removes) what it
  // prepared. A backend that cannot be built ends those built before it.
  auto& sys = t->sys_;
  spdlog::info("backends: {}", describe_backends(cfg));
  backend_router_options router_opts;
  router_opts.default_backend = to_string(cfg.backend);
  for (auto kind : cfg.backends) {
    auto b = backend_factories[static_cast<std::size_t>(kind)](sys, t->io_, cfg);
    if (!b) {
      t->end_backends();
      return std::move(b).err();
    }
    t->backends_.emplace_back(kind, *b);
    router_opts.backends.emplace(to_string(kind), std::move(*b));
  }
  t->router_ = spawn_backend_router(sys, std::move(router_opts));

  // One registry for the whole supervisor; the actors share it (its
  // series are atomics), the api actor serializes it on GET /metrics.
  if (cfg.metrics.enabled)
    t->metrics_ = std::make_shared<metrics::metrics>(cfg.metrics);
  auto gov_opts = make_governor_options(cfg);
  gov_opts.metrics = t->metrics_;
  t->governor_ = spawn_resource_governor(sys, &t->io_, std::move(gov_opts));
  spawner_options sp_opts;
  sp_opts.supervision = cfg.supervision;
  sp_opts.defaults = cfg.agents;
  sp_opts.pool = cfg.pool;
  sp_opts.backends = cfg.backends;
  t->spawner_ = spawn_spawner(
    sys, spawner_context{t->router_, &t->io_, t->governor_, {}, t->metrics_, cfg.backend}, sp_opts);
  caf::anon_send(t->governor_, attach_atom::value, t->spawner_);
  api_options api_opts;
  api_opts.listen = *listen;
  api_opts.token = token->value;
  api_opts.max_body_bytes = cfg.api.max_body_bytes;
  api_opts.metrics = t->metrics_;
  api_opts.metrics_require_token = cfg.metrics.require_token;
  api_opts.instance = cfg.instance;
  api_opts.agents = cfg.agents;
  api_opts.supervision = cfg.supervision;
  api_opts.backend = t->router_;
  t->api_ = spawn_api(sys, t->io_, api_opts, t->spawner_, t->governor_);
  t->root_ = sys.spawn(supervisor_root, tree_handles{t->api_, t->spawner_, t->governor_,
                                                     cfg.supervision.shutdown_timeout_ms});

  std::string listen_error;
  caf::scoped_actor self{sys};
  self->request(t->api_, std::chrono::seconds(10), get_atom::value)
    .receive([&](uint16_t port) { t->port_ = port; },
             [&](caf::error& e) { listen_error = view(e).message; });
  if (t->port_ == 0)
    return error{listen_error.empty() ? "the API did not start listening" : listen_error};
  spdlog::info("API listening on {}:{}", t->host_, t->port_);
  return t;
}

void supervisor_tree::watch_signals() {
  io_.watch_signal(root_, SIGINT);
  io_.watch_signal(root_, SIGTERM);
}

int supervisor_tree::wait() {
  if (ended_)
    return code_;
  ended_ = true;
  int code = exit_ok;
  {
    caf::scoped_actor self{sys_};
    self->monitor(root_);
    self->receive([&](const caf::down_msg& dm) {
      if (dm.reason && dm.reason != caf::exit_reason::user_shutdown)
        code = exit_failure;
    });
    // After an ordered shutdown these are gone already; after a second
    // signal or a failed start they end here (the spawner takes its agents'
    // actors with it).
    for (auto& a : {api_, spawner_, governor_}) {
      self->send_exit(a, caf::exit_reason::user_shutdown);
      self->wait_for(a);
    }
  }
  end_backends();
  auto report = io_.stop();
  if (report.open_handles != 0) {
    spdlog::error("I/O thread stopped with {} handles still open", report.open_handles);
    code = exit_failure;
  }
  code_ = code;
  return code;
}

void supervisor_tree::end_backends() {
  caf::scoped_actor self{sys_};
  // The router first: nothing reaches a backend through it any more.
  if (router_) {
    self->send_exit(router_, caf::exit_reason::user_shutdown);
    self->wait_for(router_);
  }
  // Each backend kills what agents remain and releases what it prepared
  // (the sandbox backend: its template and cgroups). They end side by side.
  for (auto& [kind, b] : backends_)
    self->send_exit(b, caf::exit_reason::user_shutdown);
  for (auto& [kind, b] : backends_)
    self->wait_for(b);
  backends_.clear();
}

int supervisor_tree::stop() {
  if (!ended_)
    caf::anon_send(root_, shutdown_atom::value);
  return wait();
}

} // namespace agentvisor::cli

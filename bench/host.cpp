// The real supervisor host of the actor-level benchmarks (host.hpp).

#include "host.hpp"

#include "resource_governor.hpp"
#include "spawner.hpp"

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <stdexcept>
#include <thread>

namespace agentvisor::bench {

using namespace std::chrono_literals;

namespace {

caf::actor_system_config& registered(caf::actor_system_config& cfg) {
  register_messages(cfg);
  return cfg;
}

} // namespace

host::host(const std::string& instance_prefix, int max_agents, const std::string& guest_binary)
  : sys_{registered(cfg_)} {
  bo_.instance = instance_prefix + "-" + std::to_string(::getpid());
  bo_.state_dir = (std::filesystem::temp_directory_path() / ("agentvisor-" + bo_.instance)).string();
  bo_.guest_binary = guest_binary;
  std::string err;
  if (!io_.start(&err))
    throw std::runtime_error("cannot start the I/O thread: " + err);
  auto h = sandbox::prepare_host(bo_);
  if (!h) {
    io_.stop();
    throw std::runtime_error("cannot prepare the sandbox backend: " + h.err().message);
  }
  cgroup_version_ = sandbox::describe(**h).find("cgroup v2") != std::string::npos ? "v2" : "v1";
  backend_ = sandbox::spawn_sandbox_backend(sys_, io_, *h);
  governor_options g;
  // Room for the run's agents (and a pool) at agent_memory_mb each.
  g.host.memory_mb = static_cast<uint64_t>(max_agents + 64) * agent_memory_mb;
  g.host.max_agents = static_cast<uint32_t>(max_agents + 64);
  g.host.pids = static_cast<uint32_t>(max_agents + 64) * agent_pids;
  g.max_queued = static_cast<uint32_t>(max_agents + 64);
  governor_ = spawn_resource_governor(sys_, &io_, g);
}

host::~host() {
  {
    caf::scoped_actor self{sys_};
    self->send_exit(governor_, caf::exit_reason::user_shutdown);
    self->wait_for(governor_);
    // The backend kills what agents remain and stops the template.
    self->send_exit(backend_, caf::exit_reason::user_shutdown);
    self->wait_for(backend_);
  }
  io_.stop();
  std::error_code ec;
  std::filesystem::remove_all(bo_.state_dir, ec);
}

vm_options host::vm(const std::string& id) const {
  vm_options v;
  v.spec.id = id;
  v.spec.memory_bytes = agent_memory_mb << 20;
  v.spec.workspace_bytes = agent_workspace_mb << 20;
  v.spec.pids = agent_pids;
  return v;
}

agent_defaults host::defaults() const {
  agent_defaults d;
  d.memory_mb = agent_memory_mb;
  d.workspace_mb = agent_workspace_mb;
  d.pids = agent_pids;
  // A thousand spawns queue at the one template: give the last ones time.
  d.ready_timeout_ms = 120000;
  d.hang_timeout_ms = agent_hang_timeout_ms;
  return d;
}

caf::actor host::spawner(supervision_config sup, uint32_t warm) {
  spawner_options so;
  so.supervision = sup;
  so.defaults = defaults();
  so.pool.warm = warm;
  so.grant_deadline_ms = 120000;
  auto sp = spawn_spawner(sys_, spawner_context{backend_, &io_, governor_, {}, {}, {}}, so);
  caf::anon_send(governor_, attach_atom::value, sp);
  return sp;
}

caf::actor host::report_spawner() {
  supervision_config sup;
  sup.restart = restart_type::temporary;
  return spawner(sup, 0);
}

void host::stop_spawner(const caf::actor& sp) {
  caf::scoped_actor self{sys_};
  self->request(sp, caf::duration{600s}, shutdown_atom::value).receive([] {}, [](caf::error&) {});
  self->send_exit(sp, caf::exit_reason::user_shutdown);
  self->wait_for(sp);
}

void raise_fd_limit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
}

agent_info start_agent(caf::scoped_actor& self, const caf::actor& sp, agent_request r) {
  agent_info out;
  std::string err;
  auto name = r.name;
  self->request(sp, caf::duration{120s}, start_atom::value, std::move(r))
    .receive([&](agent_info& i) { out = std::move(i); },
             [&](caf::error& e) { err = view(e).message; });
  if (!err.empty())
    throw std::runtime_error("starting agent " + name + ": " + err);
  return out;
}

agent_info get_agent(caf::scoped_actor& self, const caf::actor& sp, const std::string& id) {
  agent_info out;
  std::string err;
  self->request(sp, caf::duration{10s}, get_atom::value, id)
    .receive([&](agent_info& i) { out = std::move(i); },
             [&](caf::error& e) { err = view(e).message; });
  if (!err.empty())
    throw std::runtime_error("get agent " + id + ": " + err);
  return out;
}

restart_samples kill_to_replacement(host& h, int n, uint32_t warm, progress& prog) {
  restart_samples out;
  supervision_config sup;
  sup.strategy = restart_strategy::one_for_one;
  sup.min_backoff_ms = restart_min_backoff_ms;
  sup.max_backoff_ms = restart_min_backoff_ms;
  sup.random_factor = 0;
  sup.max_restarts = static_cast<uint32_t>(n + 10);
  sup.period_ms = 3600 * 1000;
  auto sp = h.spawner(sup, warm);
  struct stopper {
    host& h;
    caf::actor sp;
    ~stopper() { h.stop_spawner(sp); }
  } stop{h, sp};
  caf::scoped_actor self{h.sys()};
  const char* what = warm > 0 ? "kill -> replacement (pooled)" : "kill -> replacement";
  if (warm > 0)
    std::this_thread::sleep_for(500ms); // the pool fills
  auto a = start_agent(self, sp, agent_request{"restarted"}); // the default spec
  for (int k = 0; k < n; ++k) {
    if (warm > 0 && k > 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(pooled_refill_wait_ms));
    auto now = get_agent(self, sp, a.id);
    if (now.pid <= 0 || now.state == vm_state::spawning)
      throw std::runtime_error("agent " + a.id + " not running before kill " + std::to_string(k));
    auto t0 = clock_type::now();
    ::kill(now.pid, SIGKILL);
    tool_call call{"list_directory", "{}", true, 10000};
    std::string err;
    self->request(sp, caf::duration{60s}, call_atom::value, a.id, call)
      .receive(
        [&](tool_result& r) {
          if (!r.ok)
            err = "the replacement's answer: " + r.error_message;
          out.retried += r.attempts > 1 ? 1 : 0;
        },
        [&](caf::error& e) { err = "call after kill: " + view(e).message; });
    if (!err.empty())
      throw std::runtime_error(err);
    out.ms.push_back(ms_between(t0, clock_type::now()));
    out.from_pool += get_agent(self, sp, a.id).machine != now.machine ? 1 : 0;
    prog.update(what, k + 1, n);
  }
  return out;
}

} // namespace agentvisor::bench

#pragma once
// The real supervisor host the actor-level benchmarks run on: an actor
// system, the I/O thread, the sandbox backend over a prepared host
// (template process, cgroups), and the resource governor, sized for the
// number of agents a run needs. Shared by agentvisor-bench-supervision and
// `agentvisor bench baseline|concurrent`. Errors are thrown as
// std::runtime_error with what failed.

#include "report.hpp"

#include "agentvisor/config.hpp"
#include "agentvisor/io.hpp"
#include "agentvisor/messages.hpp"

#include "sandbox_backend.hpp"

#include <caf/all.hpp>

#include <string>
#include <vector>

namespace agentvisor::bench {

class host {
public:
  /// `instance_prefix` names the cgroup instance (with this pid);
  /// `max_agents` sizes the governor's budget: the benchmark decides how
  /// many agents it runs, not the machine's detected budget;
  /// `guest_binary` is the agentvisor-guest to run.
  host(const std::string& instance_prefix, int max_agents, const std::string& guest_binary);
  ~host();
  host(const host&) = delete;
  host& operator=(const host&) = delete;

  /// Every benchmark agent's memory limit and workspace: small limits (a
  /// cap, not a reservation) so that the governor admits a thousand.
  static constexpr uint64_t agent_memory_mb = 32;
  static constexpr uint64_t agent_workspace_mb = 8;
  static constexpr uint32_t agent_pids = 32;

  /// A vm_actor's options for a machine named `id`.
  vm_options vm(const std::string& id) const;
  agent_defaults defaults() const;

  /// A spawner over this host, attached to the governor.
  caf::actor spawner(supervision_config sup, uint32_t warm);

  /// The spawner of the report benchmarks: agents are `temporary` (an agent
  /// that goes down is not restarted: its calls fail and the run says why,
  /// instead of the spawner escalating under a restart storm), no pool.
  caf::actor report_spawner();

  /// The heartbeat watchdog of the benchmarks' agents. A thousand agents
  /// starting at once on two shared cores can leave a guest's heartbeat
  /// unread for more than the default 5 s; a false "hung" would end the run.
  static constexpr uint32_t agent_hang_timeout_ms = 30000;

  /// Stops every child of `sp` (its shutdown request), then `sp` itself.
  void stop_spawner(const caf::actor& sp);

  caf::actor_system& sys() { return sys_; }
  io::io_thread& io() { return io_; }
  const backend_actor& backend() const { return backend_; }
  const caf::actor& governor() const { return governor_; }
  const std::string& cgroup_version() const { return cgroup_version_; }

private:
  caf::actor_system_config cfg_;
  caf::actor_system sys_;
  io::io_thread io_;
  sandbox::backend_options bo_;
  backend_actor backend_;
  caf::actor governor_;
  std::string cgroup_version_ = "v1";
};

/// Raises RLIMIT_NOFILE's soft limit to the hard one: every live sandbox
/// holds a few fds in the supervisor.
void raise_fd_limit();

/// kill -> replacement serving, on a supervised agent (one_for_one,
/// permanent, 1 ms backoff): SIGKILL to the guest -> a retryable
/// list_directory sent right after the kill is answered by the replacement.
struct restart_samples {
  std::vector<double> ms;
  int retried = 0;   ///< answered on the second attempt (the first met the dying agent)
  int from_pool = 0; ///< restarts that adopted a pool member (machine id changed)
};

/// The restart delay of the figure: the mechanism's cost, not a policy's wait.
inline constexpr uint32_t restart_min_backoff_ms = 1;
/// Between two kills with a warm pool: time for the pool to refill.
inline constexpr int pooled_refill_wait_ms = 50;

/// `warm` 0: cold restarts (a spawn each). Otherwise a pool of `warm` with
/// the agent on the default spec: restarts adopt a ready member.
restart_samples kill_to_replacement(host& h, int n, uint32_t warm, progress& prog);

/// A request from a blocking actor that throws with `what` on an error.
agent_info start_agent(caf::scoped_actor& self, const caf::actor& sp, agent_request r);
agent_info get_agent(caf::scoped_actor& self, const caf::actor& sp, const std::string& id);

} // namespace agentvisor::bench

#pragma once
/// The one interface every backend (sandbox, qemu, firecracker) implements,
/// as an actor protocol. The supervision core talks only to a backend_actor
/// and never knows which kind runs an agent.
///
/// Events reach the agent's owner (the actor named in the spawn request) as
/// messages, from two sources:
///  - the backend actor: agent_oom (an OOM kill in the agent's machine,
///    whether or not the guest itself died) and agent_exited (the machine is
///    gone and cleaned up: exit code or signal, and whether the OOM killer did
///    it);
///  - the I/O thread: every line the guest writes on its channel
///    (io::stream_line, at most guest::max_guest_line_bytes; a longer one
///    closes the channel) and io::stream_closed when the channel closes.
///    The owner feeds both to its guest::guest_session (guest_session.hpp),
///    which turns them into events (hello, ready, heartbeat, results, bye)
///    or a protocol error; on a protocol error the owner kills the agent
///    (kill_atom) and waits for agent_exited. Lines skip the backend on
///    purpose: a tool round trip is one hop each way.

#include "agentvisor/io.hpp"

#include <caf/atom.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace agentvisor {

using spawn_atom = caf::atom_constant<caf::atom("spawn")>;
using kill_atom = caf::atom_constant<caf::atom("kill")>;
using stop_atom = caf::atom_constant<caf::atom("stop")>;
using usage_atom = caf::atom_constant<caf::atom("usage")>;
using signal_atom = caf::atom_constant<caf::atom("signal")>;
using spawn_fault_atom = caf::atom_constant<caf::atom("spawnfault")>;

/// What to start. Limits are already resolved (defaults applied).
struct agent_spec {
  std::string id;
  uint64_t memory_bytes = 256ull << 20;
  uint32_t pids = 128;
  uint32_t cpu_weight = 100;
  uint64_t workspace_bytes = 128ull << 20;
  /// KEY=VALUE pairs the guest's commands see.
  std::vector<std::string> env;
  uint32_t heartbeat_ms = 1000;
  /// Lets chaos runs ask the guest to crash, hang or allocate.
  bool allow_faults = false;
  /// The backend to run it in ("sandbox", "qemu", "firecracker"); empty:
  /// the supervisor's default (config `backend`). Read by the backend
  /// router (actors/backend_router.hpp), which sets it to the name it
  /// resolved before it forwards the spawn; a backend itself ignores it.
  std::string backend{};
};

/// The machine runs and its guest is set up; `channel` is the I/O thread's
/// line stream to the guest, whose messages go to the owner. Write to it
/// with io_thread::write.
struct agent_started {
  std::string id;
  int pid = 0;
  io::handle_id channel = 0;
  std::string backend;
};

/// An OOM kill in the agent's machine.
struct agent_oom {
  std::string id;
  uint64_t limit_bytes = 0;
  uint64_t peak_bytes = 0;
};

/// The machine is gone and everything it held (cgroup, workspace, fds) is
/// released. Exactly one of exit_code (signal == 0) and signal applies.
struct agent_exited {
  std::string id;
  int exit_code = 0;
  int signal = 0;
  /// The OOM killer ended it (not an outside SIGKILL).
  bool oom = false;
  uint64_t peak_bytes = 0;
};

struct agent_usage {
  std::string id;
  uint64_t memory_bytes = 0;
  uint64_t memory_peak_bytes = 0;
  uint64_t pids = 0;
  uint64_t cpu_usage_ns = 0;
  uint64_t oom_kills = 0;
  /// qemu microVMs: the VM's memory as its kernel counts it and what it
  /// has available, from the balloon device's statistics (QMP); 0 when
  /// the backend has none (sandbox, firecracker) or none came yet.
  uint64_t machine_memory_bytes = 0;
  uint64_t machine_available_bytes = 0;
};

/// Chaos: the backend's next `count` spawns fail (`fail`) or start only
/// after `delay_ms`. Honoured only when the backend allows faults.
struct spawn_fault {
  uint32_t count = 1;
  bool fail = true;
  uint32_t delay_ms = 0;
  /// The backend to arm, by name; empty: the agent's backend, else the
  /// supervisor's default.
  std::string backend{};
  /// Only this agent's next spawns meet the fault; empty: anybody's. A
  /// chaos run names its target: with several agents restarting at once
  /// an unnamed fault hits whoever spawns first.
  std::string agent{};
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, spawn_fault& x) {
  return f(caf::meta::type_name("spawn_fault"), x.count, x.fail, x.delay_ms,
           x.backend, x.agent);
}

/// The spawn faults a backend holds: for each named agent, the faults
/// armed for it in the order they came (each met by as many of its spawns
/// as its count says, then the next: two faults aimed at one agent at
/// once both happen, neither is lost); and one for whichever agent spawns
/// next, which arming again replaces. A count of 0 disarms.
class armed_spawn_faults {
public:
  /// Returns how many spawns the fault will hit.
  uint32_t arm(const spawn_fault& f) {
    if (f.agent.empty())
      return (any_ = f).count;
    if (f.count == 0) {
      per_agent_.erase(f.agent);
      return 0;
    }
    per_agent_[f.agent].push_back(f);
    return f.count;
  }

  /// The fault agent `id`'s spawn meets, counted off; none when nothing
  /// is armed for it or for anybody.
  std::optional<spawn_fault> take(const std::string& id) {
    if (auto i = per_agent_.find(id); i != per_agent_.end()) {
      auto& queue = i->second;
      auto f = queue.front();
      if (--queue.front().count == 0)
        queue.pop_front();
      if (queue.empty())
        per_agent_.erase(i);
      return f;
    }
    if (any_.count == 0)
      return std::nullopt;
    --any_.count;
    return any_;
  }

private:
  spawn_fault any_{0, true, 0, {}, {}};
  std::unordered_map<std::string, std::deque<spawn_fault>> per_agent_;
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, agent_spec& x) {
  return f(caf::meta::type_name("agent_spec"), x.id, x.memory_bytes, x.pids,
           x.cpu_weight, x.workspace_bytes, x.env, x.heartbeat_ms, x.allow_faults,
           x.backend);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, agent_started& x) {
  return f(caf::meta::type_name("agent_started"), x.id, x.pid, x.channel, x.backend);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, agent_oom& x) {
  return f(caf::meta::type_name("agent_oom"), x.id, x.limit_bytes, x.peak_bytes);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, agent_exited& x) {
  return f(caf::meta::type_name("agent_exited"), x.id, x.exit_code, x.signal,
           x.oom, x.peak_bytes);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, agent_usage& x) {
  return f(caf::meta::type_name("agent_usage"), x.id, x.memory_bytes,
           x.memory_peak_bytes, x.pids, x.cpu_usage_ns, x.oom_kills,
           x.machine_memory_bytes, x.machine_available_bytes);
}

/// spawn: start an agent owned by `owner`; answers when its guest runs (or
/// with an error naming the agent and the failing step).
/// stop: ask the machine to end within `grace_ms` (SIGTERM to the guest),
/// then kill it. kill: SIGKILL now. Both are answered by agent_exited to
/// the owner, never by a reply.
/// usage: the agent's current resource usage.
/// signal (chaos): send the agent's guest this signal (SIGKILL, SIGSTOP);
/// an unknown agent is ignored. spawn_fault (chaos): arm a spawn fault;
/// answers the number of spawns now armed, or an error when the backend
/// does not allow faults (agents.allow_faults).
using backend_actor = caf::typed_actor<
  caf::replies_to<spawn_atom, agent_spec, caf::actor>::with<agent_started>,
  caf::reacts_to<stop_atom, std::string, uint32_t>,
  caf::reacts_to<kill_atom, std::string>,
  caf::replies_to<usage_atom, std::string>::with<agent_usage>,
  caf::reacts_to<signal_atom, std::string, int32_t>,
  caf::replies_to<spawn_fault_atom, spawn_fault>::with<uint32_t>>;

} // namespace agentvisor

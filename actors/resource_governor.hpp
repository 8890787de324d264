#pragma once
/// resource_governor: holds the host's budget (memory, CPUs, agent count,
/// pids) and answers every spawn's grant request. docs/governor.md
/// documents the queue and the eviction policy.
///
/// Protocol (types in messages.hpp):
///   (grant_atom, grant_request)   -> grant, or an errc error: over_budget
///       (can never fit the whole budget, or the queue is full),
///       budget_timeout (waited deadline_ms in the queue). A request that
///       does not fit now waits in a FIFO queue until a release makes room.
///   (release_atom, std::string agent_id)  the agent's grant is returned.
///   agent_usage                   an agent's current usage (vm_actor).
///   agent_oom                     an OOM kill (vm_actor); counted.
///   (get_atom)                    -> governor_state
///   (attach_atom, caf::actor)     the spawner to send evict_request to.
///
/// Under memory pressure (see the policy in the docs) it sends the spawner
/// one evict_request at a time for the agent its policy picks.

#include "agentvisor/config.hpp"
#include "agentvisor/messages.hpp"

#include <caf/fwd.hpp>

namespace agentvisor::io {
class io_thread;
}

namespace agentvisor {

struct governor_options {
  host_config host;
  /// Requests that may wait for room at once; beyond: over_budget.
  uint32_t max_queued = 256;
};

caf::actor spawn_resource_governor(caf::actor_system& sys, io::io_thread* io,
                                   governor_options opts);

} // namespace agentvisor

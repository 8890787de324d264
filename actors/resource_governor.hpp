#pragma once
/// resource_governor: holds the host's budget (memory, CPUs, agent count,
/// pids) and answers every spawn's grant request. docs/governor.md
/// documents the queue and the eviction policy.
///
/// Protocol (types in messages.hpp):
///   (grant_atom, grant_request)   -> grant, or an errc error: over_budget
///       (can never fit the whole budget, the queue is full, or deadline_ms
///       is 0 and it does not fit now), budget_timeout (waited deadline_ms in
///       the queue), bad_request (no agent id, or the agent already holds or
///       awaits a grant), draining (the governor shut down while it waited).
///       A request that does not fit now waits in a FIFO queue until a
///       release makes room.
///   (release_atom, std::string agent_id)  the agent's grant is returned;
///       an unknown id is ignored.
///   agent_usage                   an agent's current usage (vm_actor).
///   agent_oom                     an OOM kill (vm_actor); counted.
///   (get_atom)                    -> governor_state
///   (attach_atom, caf::actor)     the spawner to send evict_request to.
///   (pressure_atom, uint64_t memory_bytes, uint32_t ms) -> caf::unit
///       chaos: the memory budget is memory_bytes for ms, then restored;
///       evictions and refusals follow as for real pressure. Needs
///       allow_faults (else bad_request).
///   (shutdown_atom)               answers every queued request with
///       errc::draining and quits; so does an exit message (except kill,
///       which CAF does not let an actor trap).
///
/// Under memory pressure (see the policy in the docs) it sends the spawner
/// one evict_request at a time for the agent its policy picks.

#include "agentvisor/config.hpp"
#include "agentvisor/messages.hpp"
#include "agentvisor/metrics.hpp"

#include <caf/fwd.hpp>

#include <string>

namespace agentvisor::io {
class io_thread;
}

namespace agentvisor {

struct governor_options {
  host_config host;
  /// Requests that may wait for room at once; beyond: over_budget.
  uint32_t max_queued = 256;
  /// Where /proc is: meminfo, stat and sys/kernel are read below it (tests
  /// point it at a directory they write).
  std::string proc_root = "/proc";
  /// Chaos pressure faults are obeyed (agents.allow_faults).
  bool allow_faults = false;
  /// Null: no metrics.
  std::shared_ptr<metrics::metrics> metrics;
};

/// The options a config asks for (host.max_queued into max_queued).
governor_options make_governor_options(const config& cfg);

/// Spawns the governor. Its budget is detected here, once (host.hpp); when
/// detection fails the error is logged and every grant is refused with
/// over_budget naming it. `io` may be null: the governor's timers are
/// CAF's own (delayed_send), it needs nothing from the I/O thread.
caf::actor spawn_resource_governor(caf::actor_system& sys, io::io_thread* io,
                                   governor_options opts);

} // namespace agentvisor

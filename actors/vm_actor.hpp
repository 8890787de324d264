#pragma once
/// vm_actor: owns one agent machine through the backend interface, from spawn
/// to its end. docs/supervision.md describes its behaviours.
///
/// Protocol (types in messages.hpp):
///   (call_atom, tool_call)          -> tool_result, or an errc error
///       (draining, agent_down with the down reason, timeout, bad_request).
///       Calls beyond max_calls_in_flight wait in the actor's queue; calls
///       that arrive while spawning wait for ready. Every call gets exactly
///       one answer.
///   (get_atom)                      -> agent_info (id, state, backend, pid,
///       memory, limits, oom_kills, calls in flight and queued)
///   (stop_atom, uint32_t grace_ms)  graceful stop: new calls are refused,
///       calls in flight get up to grace_ms, then the backend stops the
///       machine; the actor ends with reason `stopped`.
///   (fault_atom, fault_request)     -> tool_result: a chaos fault sent to
///       the guest. Faults that report (cpu_hog, disk_fill, fork_bomb,
///       garbage) are answered by the guest's result; the others (exit,
///       abort, oom) end the guest and are answered at once (ok) once sent.
///       An unknown kind: bad_request.
///   (partition_atom, uint32_t ms)   chaos: for ms, every line to and from
///       the guest is lost (calls then time out; a partition longer than
///       hang_timeout_ms ends the agent as hung).
///   (kill_atom, down_reason, std::string detail)
///                                   kill the machine now; the actor ends
///       with that reason (the spawner's eviction, chaos runs).
///
/// It tells its parent `agent_ready` when the guest is ready and forwards
/// `agent_oom`; it reports `agent_usage` and `agent_oom` to the governor.
/// It ends (quits) only after the backend's agent_exited, so the machine is
/// gone and cleaned up when the parent sees the down_msg, whose reason is
/// make_down_error(down_info): exited, crashed, oom, hung, protocol_error,
/// spawn_failed, stopped or evicted.

#include "agentvisor/backend.hpp"
#include "agentvisor/messages.hpp"
#include "agentvisor/metrics.hpp"

#include <caf/fwd.hpp>

namespace agentvisor::io {
class io_thread;
}

namespace agentvisor {

/// Whom a vm_actor works with.
struct vm_context {
  backend_actor backend;
  io::io_thread* io = nullptr;
  /// Receives agent_ready and agent_oom (the spawner). May be invalid.
  caf::actor parent;
  /// Receives agent_usage and agent_oom. May be invalid.
  caf::actor governor;
  /// Null: no metrics. Its spawns are labelled with `kind`.
  std::shared_ptr<metrics::metrics> metrics;
  backend_kind kind = backend_kind::sandbox;
};

caf::actor spawn_vm_actor(caf::actor_system& sys, vm_context ctx, vm_options opts);

} // namespace agentvisor

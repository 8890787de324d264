#pragma once
/// spawner: supervises vm_actors with Erlang/OTP semantics and keeps the
/// warm pool. docs/supervision.md describes the strategies, restart types,
/// intensity, backoff and shutdown order.
///
/// Protocol (types in messages.hpp):
///   (start_atom, agent_request)   -> agent_info once the agent is ready
///       (taken from the warm pool when the request matches the defaults,
///       the default backend included), or an errc error: bad_request (also
///       for a backend that is unknown or not among opts.backends, with
///       backend_router's not_enabled_message), over_budget /
///       budget_timeout (the governor's reason), spawn_failed, draining.
///       The agent's spec.backend is the resolved name; agent_info shows it.
///   (list_atom)                   -> std::vector<agent_info>, in start order
///   (get_atom, std::string id)    -> agent_info, or not_found
///   (stop_atom, std::string id)   -> agent_info (its last state): the child
///       is stopped gracefully (forced after shutdown_timeout) and removed,
///       whatever its restart type; not_found if unknown.
///   (call_atom, std::string id, tool_call) -> tool_result or an errc error.
///       A call for an agent that is restarting waits for the replacement;
///       a retryable call whose agent goes down is sent once more to the
///       replacement; every call gets exactly one answer.
///   (fault_atom, std::string id, fault_request) -> tool_result: a chaos
///       fault forwarded to the agent's vm_actor, whose answer is the answer
///       (the guest obeys only with agents.allow_faults); not_found if
///       unknown, draining while it has no ready machine. Not a tool call:
///       never queued, retried or counted by calls_atom. Three kinds happen
///       on the host and are answered at once: `kill` (SIGKILL from the
///       backend), `hang` (SIGSTOP) and `partition` (the vm_actor's channel
///       loses every line for f.ms); they need agents.allow_faults.
///   (observe_atom, caf::actor)    the actor is told an agent_event for
///       every assigned child's down and every (re)start serving.
///   evict_request                 (from the governor) stop that agent with
///       reason evicted; it is restarted per its restart type.
///   (shutdown_atom)               -> caf::unit once every child is stopped,
///       in reverse start order, graceful then forced after shutdown_timeout.
///
/// Each spawn asks the governor for a grant first (grant_request with the
/// queue deadline, under the machine id) and releases it (release_atom, same
/// id) when the machine is gone. A restart of a child with the pool's spec
/// adopts a ready pool member (its machine and grant) instead of a spawn.
/// When more than max_restarts restarts happen within period_ms, the
/// spawner stops all children and quits with make_error(errc::escalated,
/// ...), which its own parent sees in its down_msg.

#include "agentvisor/backend.hpp"
#include "agentvisor/config.hpp"
#include "agentvisor/messages.hpp"
#include "agentvisor/metrics.hpp"

#include <caf/atom.hpp>
#include <caf/fwd.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

namespace agentvisor::io {
class io_thread;
}

namespace agentvisor {

struct spawner_options {
  supervision_config supervision;
  agent_defaults defaults;
  pool_config pool;
  /// Agents are named <id_prefix>-1, <id_prefix>-2, ...
  std::string id_prefix = "a";
  /// How long a spawn may wait in the governor's queue.
  uint32_t grant_deadline_ms = 5000;
  /// The backends an agent_request may name (config `backends`). Empty:
  /// only the context's `kind`, the default.
  std::vector<backend_kind> backends;
};

/// Starts one child's machine; `parent` (the spawner) receives its
/// agent_ready and agent_oom. The default spawns a vm_actor; tests of the
/// OTP logic alone may pass another actor that speaks the vm_actor protocol
/// and ends with a down error. An invalid handle counts as a spawn failure.
using child_factory
  = std::function<caf::actor(caf::actor_system&, const vm_options&, const caf::actor& parent)>;

struct spawner_context {
  backend_actor backend;
  io::io_thread* io = nullptr;
  caf::actor governor;
  /// Empty: spawn vm_actors (backend, io, the spawner as parent, governor).
  child_factory factory;
  /// Null: no metrics. Given to every vm_actor with its agent's backend.
  std::shared_ptr<metrics::metrics> metrics;
  /// The default backend: agent_requests without `backend` run there, and
  /// so does the warm pool.
  backend_kind kind = backend_kind::sandbox;
};

/// (calls_atom) -> (uint64_t received, uint64_t answered): the spawner's
/// count of tool calls, for tests that prove no call is left unanswered.
using calls_atom = caf::atom_constant<caf::atom("calls")>;

/// The delay before restarting a child after its `failures`-th consecutive
/// failure (0 for the first): min(max_backoff, min_backoff * 2^failures)
/// * (1 + random_factor * U[0,1)), as Akka's BackoffSupervisor does.
std::chrono::milliseconds restart_backoff(const supervision_config& cfg, uint32_t failures,
                                          std::mt19937_64& rng);

caf::actor spawn_spawner(caf::actor_system& sys, spawner_context ctx, spawner_options opts);

} // namespace agentvisor

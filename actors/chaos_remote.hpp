#pragma once
/// chaos_remote: the chaos runner's transport to a supervisor in another
/// process, over its HTTP API (docs/api.md), on this process's I/O thread
/// (io_thread::connect_tcp, one connection per request, src/io/http_client).
/// docs/chaos.md, "Remote runs", describes a run against it.
///
/// It speaks to the runner the part of the spawner's protocol the runner
/// uses, so the runner's plan, workload, timing and log are the same code
/// in both modes:
///   (start_atom, agent_request)   -> agent_info      POST /v1/agents (with
///       the scenario's memory_mb and pids)
///   (call_atom, id, tool_call)    -> tool_result     POST /v1/agents/{id}/tools/{tool}
///   (stop_atom, id)               -> agent_info      DELETE /v1/agents/{id}
///   (calls_atom)                  -> (received, answered)  GET /v1/supervisor
///   (observe_atom, caf::actor)    long-polls GET /v1/events and tells the
///       observer an agent_event per event of the agents it started (times
///       mapped from the server's Unix ms to this process's steady clock),
///       and (events_lost_atom, n) when the server's ring lost events.
/// and the fault injection the in-process runner does through the spawner,
/// backend and governor, by kind:
///   (fault_atom, id, std::string kind, uint32_t duration_ms, bool abort)
///       -> std::string outcome   POST /v1/agents/{id}/faults
///   (pressure_atom, uint32_t duration_ms) -> std::string  POST /v1/governor/pressure
/// plus, for the command around the run:
///   (http_atom, method, target, body) -> (int status, std::string body)
///   (list_atom) -> std::vector<std::string>: every machine id seen (the
///       agents' and their replacements'), for the leftovers check.
/// An HTTP error answer becomes the errc its body names (agent_down,
/// not_found, ...) with its message; a connection that fails or ends early,
/// errc::internal naming the URL.

#include "agentvisor/chaos.hpp"

#include <caf/atom.hpp>
#include <caf/fwd.hpp>

#include <chrono>
#include <cstdint>
#include <string>

namespace agentvisor::io {
class io_thread;
}

namespace agentvisor {

using http_atom = caf::atom_constant<caf::atom("http")>;
/// transport -> observer: the server's event ring lost this many events.
using events_lost_atom = caf::atom_constant<caf::atom("ev_lost")>;

struct chaos_remote_options {
  std::string host; ///< an IPv4 or IPv6 literal
  uint16_t port = 0;
  std::string prefix; ///< before every route ("" or "/api")
  std::string token;
  /// Sent with every POST /v1/agents (the scenario's agents.memory_mb, pids).
  uint64_t memory_mb = 0;
  uint32_t pids = 0;
  /// A request with no answer this long is failed (errc::timeout); a long
  /// poll gets its wait on top.
  std::chrono::milliseconds request_timeout{60000};
  /// How long one GET /v1/events waits for a new event.
  uint32_t event_wait_ms = 1000;
};

/// The io_thread must outlive the actor.
caf::actor spawn_chaos_remote(caf::actor_system& sys, io::io_thread& io,
                              chaos_remote_options opts);

} // namespace agentvisor

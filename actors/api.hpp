#pragma once
/// api: the HTTP control API on the I/O thread's TCP listener, parsed with
/// http-parser. docs/api.md lists the routes, bodies and statuses.
///
/// It owns no agent state: every route is a request to the spawner or the
/// governor (the fault routes also the backend), whose errc errors map to
/// HTTP statuses. The one thing it keeps is a bounded ring of the spawner's
/// agent_events (it observes the spawner from its start) for the long poll
/// GET /v1/events.

#include "agentvisor/backend.hpp"
#include "agentvisor/config.hpp"
#include "agentvisor/metrics.hpp"

#include <caf/fwd.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

namespace agentvisor::io {
class io_thread;
}

namespace agentvisor {

struct api_options {
  host_port listen{"127.0.0.1", 7878};
  /// The bearer token every route but /healthz and /metrics needs.
  std::string token;
  /// What GET /metrics serves; null: 404 (metrics.enabled = false).
  std::shared_ptr<metrics::metrics> metrics;
  /// metrics.require_token: /metrics needs the token too.
  bool metrics_require_token = false;
  uint64_t max_body_bytes = 1 << 20;
  /// Request line plus headers; beyond: 431.
  std::size_t max_header_bytes = 16 * 1024;
  /// A connection with no request in progress is closed after this much
  /// quiet; a request not complete this long after its first byte is
  /// answered 408 and closed (slowloris).
  std::chrono::milliseconds idle_timeout{30000};
  /// Open connections; one more is answered 503 and closed.
  uint32_t max_connections = 256;
  /// Requests of one connection waiting for their answers; one more is
  /// answered 503 and the connection closed.
  uint32_t max_pipelined = 32;
  /// How long POST /v1/agents waits for the spawner: the governor's queue
  /// deadline (spawner_options::grant_deadline_ms) plus the spawn itself.
  std::chrono::milliseconds spawn_timeout{35000};
  /// Every other request to the spawner or governor; a tool call with
  /// ?timeout_ms=N waits N ms plus call_margin instead.
  std::chrono::milliseconds request_timeout{35000};
  std::chrono::milliseconds call_margin{5000};

  /// What GET /v1/supervisor reports (the remote chaos runner compares it
  /// with a scenario's overrides), and agents.allow_faults: without it the
  /// fault routes answer 403.
  std::string instance;
  agent_defaults agents;
  supervision_config supervision;
  /// Armed by the spawn_failure and slow_spawn faults; invalid: those two
  /// answer 503.
  backend_actor backend;
  /// GET /v1/events keeps the newest this many agent_events (older ones
  /// are reported as "lost" to a client that asks for them).
  std::size_t event_ring = 4096;
  /// The longest a GET /v1/events may wait for a new event (wait_ms is
  /// capped to this).
  std::chrono::milliseconds max_event_wait{30000};
};

/// Starts listening; the actor answers (get_atom) with the bound port
/// (uint16_t) once listening (port 0 in `listen` picks a free one), or with
/// an errc::internal error if it cannot listen (it then quits with it).
/// (shutdown_atom) -> caf::unit closes the listener and every connection and
/// quits; an exit message does the same. The io_thread must outlive the
/// actor (stop it after the actor's down_msg).
caf::actor spawn_api(caf::actor_system& sys, io::io_thread& io, api_options opts,
                     caf::actor spawner, caf::actor governor);

} // namespace agentvisor

#pragma once
/// api: the HTTP control API on the I/O thread's TCP listener, parsed with
/// http-parser. docs/api.md lists the routes, bodies and statuses.
///
/// It owns no agent state: every route is a request to the spawner or the
/// governor, whose errc errors map to HTTP statuses.

#include "agentvisor/config.hpp"

#include <caf/fwd.hpp>

#include <string>

namespace agentvisor::io {
class io_thread;
}

namespace agentvisor {

struct api_options {
  host_port listen{"127.0.0.1", 7878};
  /// The bearer token every route but /healthz and /metrics needs.
  std::string token;
  uint64_t max_body_bytes = 1 << 20;
};

/// Starts listening; the actor answers (get_atom) with the bound port once
/// listening (port 0 in `listen` picks a free one).
caf::actor spawn_api(caf::actor_system& sys, io::io_thread& io, api_options opts,
                     caf::actor spawner, caf::actor governor);

} // namespace agentvisor

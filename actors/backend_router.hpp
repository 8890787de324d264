#pragma once
/// backend_router: one backend_actor in front of the supervisor's backends
/// (config `backends`), so that the supervision core still talks to one
/// backend_actor and never knows which kind runs an agent.
///
/// Protocol: exactly backend_actor's (backend.hpp).
///   (spawn_atom, agent_spec, owner) -> agent_started: spec.backend names the
///       backend (empty: the default); the router sets spec.backend to the
///       name it resolved and delegates the request, so the answer (or
///       error) comes straight from that backend. An unknown or not enabled
///       name is answered with errc::bad_request and not_enabled_message().
///   (stop_atom, id, grace_ms), (kill_atom, id), (usage_atom, id),
///   (signal_atom, id, sig) -> to the backend that spawned `id` (usage is
///       delegated: the backend answers). An id the router does not know
///       goes to the default backend, which treats it as it would have
///       without a router (ignores it, or answers usage with "no agent").
///   (spawn_fault_atom, spawn_fault) -> uint32_t: to the backend named by
///       spawn_fault.backend (empty: the backend of spawn_fault.agent, else
///       the default), delegated; a name not
///       enabled is refused as for spawn.
///
/// Routes (agent id -> backend) live from the spawn until the spawn's owner
/// terminates: the router monitors each owner, and owners (vm_actors) quit
/// only after their machine's agent_exited, so every stop, kill, usage and
/// signal of a machine's life finds its backend, and the table holds no
/// more entries than there are live owners' machines. A later spawn under
/// the same id replaces the route (a restart reuses the machine id); a
/// stale owner's down does not remove a newer owner's route.
///
/// The router owns none of the backends: when it terminates the backends
/// keep running, and whoever built them (the supervisor tree) ends them
/// after the router, before the I/O thread.

#include "agentvisor/backend.hpp"

#include <caf/fwd.hpp>

#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace agentvisor {

struct backend_router_options {
  /// Enabled backends by name ("sandbox", "qemu", "firecracker").
  std::map<std::string, backend_actor> backends;
  /// Used when a spawn or spawn_fault names no backend; must be a key of
  /// `backends`.
  std::string default_backend;
};

/// `backend "qemu" is not enabled here (enabled: sandbox)`: `enabled` in
/// the given order, comma-separated.
std::string not_enabled_message(std::string_view name, const std::vector<std::string>& enabled);

backend_actor spawn_backend_router(caf::actor_system& sys, backend_router_options opts);

} // namespace agentvisor

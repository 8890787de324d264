#pragma once
/// Chaos spawn faults as the backend actors (sandbox, microVM) meet them:
/// a spawn request whose agent has a fault armed (armed_spawn_faults,
/// agentvisor/backend.hpp) fails at once, or is held for the fault's delay
/// and then spawned as if it had just come. Header-only: both actors
/// include it; the code that builds a sandbox does not.

#include "agentvisor/backend.hpp"
#include "agentvisor/log.hpp"

#include <caf/all.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>

namespace agentvisor::backends {

/// To the actor itself when a held spawn's delay is over.
using delayed_spawn_atom = caf::atom_constant<caf::atom("dlyspawn")>;

/// A spawn request not started yet: queued, or held by a delay.
struct queued_spawn {
  agent_spec spec;
  caf::actor owner;
  caf::typed_response_promise<agent_started> rp;
};

/// The spawns slow_spawn faults hold, by ticket.
struct held_spawns {
  std::map<uint64_t, queued_spawn> by_ticket;
  uint64_t next_ticket = 0;

  /// The spawn held under `ticket`, taken out; none when it is gone.
  std::optional<queued_spawn> release(uint64_t ticket) {
    auto it = by_ticket.find(ticket);
    if (it == by_ticket.end())
      return std::nullopt;
    auto q = std::move(it->second);
    by_ticket.erase(it);
    return q;
  }
};

/// The spawn request of `spec` meets what is armed for its agent: an
/// injected failure answers `rp` with an error naming the agent; a delay
/// holds the request and sends `self` (delayed_spawn_atom, ticket) when it
/// is over. Returns false when nothing was armed: spawn it now.
template <class Self>
bool meet_spawn_fault(Self* self, armed_spawn_faults& armed, held_spawns& held,
                      agent_spec& spec, caf::actor& owner,
                      caf::typed_response_promise<agent_started>& rp) {
  auto fault = armed.take(spec.id);
  if (!fault)
    return false;
  if (fault->fail) {
    log::agent(spec.id).warn("chaos: spawn failure injected");
    rp.deliver(caf::make_error(caf::sec::runtime_error,
                               "agent " + spec.id + ": spawn failure injected (chaos)"));
    return true;
  }
  log::agent(spec.id).warn("chaos: spawn delayed by {} ms", fault->delay_ms);
  auto ticket = ++held.next_ticket;
  held.by_ticket.emplace(ticket, queued_spawn{std::move(spec), std::move(owner), rp});
  self->delayed_send(self, std::chrono::milliseconds(fault->delay_ms), delayed_spawn_atom::value,
                     ticket);
  return true;
}

} // namespace agentvisor::backends

#pragma once
// An actor_system_config with agentvisor's message types, shared by the
// supervision fixtures (real_host.hpp, spawner_fixture.hpp).

#include "agentvisor/messages.hpp"

#include <caf/actor_system_config.hpp>

namespace agentvisor::testing {

inline caf::actor_system_config& with_messages(caf::actor_system_config& cfg) {
  register_messages(cfg);
  return cfg;
}

} // namespace agentvisor::testing

#pragma once
/// chaos runner: drives one chaos scenario (include/agentvisor/chaos.hpp)
/// against a live supervision tree in this process. docs/chaos.md,
/// "Running", describes a run.
///
/// It starts the scenario's agents through the spawner, sends a steady
/// workload of tool calls at calls_per_s, injects each planned fault at its
/// time through the real paths (the spawner's fault route for the guest and
/// host faults, the backend's spawn faults, the governor's pressure), and
/// watches the spawner's agent_events to time detection and recovery. Its
/// phases are behaviours: starting -> running -> settling -> (done).
///
/// When done it calls `done` with the run log (in the actor's context,
/// once) and quits. The caller adds what only it can see (leftovers after
/// shutdown, /healthz) before checking the invariants.

#include "agentvisor/backend.hpp"
#include "agentvisor/chaos.hpp"
#include "agentvisor/config.hpp"
#include "agentvisor/metrics.hpp"

#include <caf/fwd.hpp>

#include <functional>

namespace agentvisor {

/// The runner's transport: where its requests go. In process, the tree's
/// spawner, governor and backend. Against a supervisor in another process,
/// `spawner` and `remote` are both the HTTP transport (chaos_remote.hpp),
/// which speaks the part of the spawner's protocol the runner uses; every
/// fault then goes to `remote` by kind, and the run deletes its agents at
/// the end (in process, the tree's shutdown stops them).
struct chaos_context {
  caf::actor spawner;
  caf::actor governor;
  backend_actor backend;
  /// Counts the backend's spawn faults (the spawner, vm_actor and governor
  /// count the faults that pass through them). May be null.
  std::shared_ptr<metrics::metrics> metrics;
  /// Set: a remote run (above).
  caf::actor remote;
};

struct chaos_options {
  chaos::scenario scenario;
  std::vector<chaos::planned_fault> plan;
  uint64_t seed = 0;
  /// From the effective config: what the faults are expected to cause.
  uint32_t heartbeat_ms = 1000;
  uint32_t hang_timeout_ms = 5000;
  supervision_config supervision;
  /// Print a progress line on stderr (a terminal).
  bool progress = false;
};

caf::actor spawn_chaos_runner(caf::actor_system& sys, chaos_context ctx, chaos_options opts,
                              std::function<void(chaos::run_log)> done);

} // namespace agentvisor

#pragma once
// Hand-written run logs for the checker and report tests: one that passes
// every invariant, which each test then breaks in one way.

#include "agentvisor/chaos.hpp"

#include <string>
#include <vector>

namespace chaos_test {

/// 3 agents, detect within 2000 ms, recover within 5000 ms.
agentvisor::chaos::scenario test_scenario();

/// A finished run that keeps every invariant: a kill, an OOM and a hang
/// that were seen and recovered, a cpu_hog survived, one fault skipped;
/// every call answered; three restarts with their backoff; a clean end.
agentvisor::chaos::run_log good_log();

/// A fault record with the given id, kind, target and injection time.
agentvisor::chaos::fault_record fault(uint64_t id, agentvisor::chaos::fault_kind k,
                                      std::string agent_id, double injected_s);

/// The named invariant's result (fails the test if it is missing).
agentvisor::chaos::invariant_result find(const std::vector<agentvisor::chaos::invariant_result>& all,
                                         const std::string& name);

bool contains(const std::string& s, const std::string& part);

} // namespace chaos_test

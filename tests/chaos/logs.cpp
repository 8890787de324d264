#include "logs.hpp"

#include <doctest/doctest.h>

using namespace agentvisor::chaos;

namespace chaos_test {

scenario test_scenario() {
  scenario s;
  s.name = "hand-written";
  s.duration_s = 30;
  s.agent_count = 3;
  s.detect_within_ms = 2000;
  s.recover_within_ms = 5000;
  return s;
}

fault_record fault(uint64_t id, fault_kind k, std::string agent_id, double injected_s) {
  fault_record r;
  r.fault.id = id;
  r.fault.kind = k;
  r.fault.at_s = injected_s;
  r.agent_id = std::move(agent_id);
  r.injected_s = injected_s;
  r.expected_reasons = expected_reasons(k, 0, 100, 1000);
  return r;
}

run_log good_log() {
  run_log log;
  log.scenario_name = "hand-written";
  log.seed = 42;
  log.started_at = "2024-05-01T12:00:00Z";
  log.elapsed_s = 30;
  log.backend = "sandbox";
  log.max_restarts = 5;
  log.period_ms = 10000;
  log.min_backoff_ms = 100;
  log.max_backoff_ms = 1000;

  auto kill = fault(1, fault_kind::kill, "a-1", 2.0);
  kill.down_reason = "crashed: signal 9 (SIGKILL)";
  kill.detected_s = 2.010;
  kill.recovered_s = 2.300;

  auto oom = fault(2, fault_kind::oom, "a-2", 5.0);
  oom.down_reason = "oom";
  oom.detected_s = 5.200;
  oom.recovered_s = 5.900;

  auto hog = fault(3, fault_kind::cpu_hog, "a-3", 8.0);
  hog.fault.duration_ms = 1000;

  auto hang = fault(4, fault_kind::hang, "a-1", 12.0);
  hang.down_reason = "hung";
  hang.detected_s = 13.050;
  hang.recovered_s = 13.500;

  auto skipped = fault(5, fault_kind::kill, "a-2", 12.5);
  skipped.skipped = true;
  skipped.skipped_reason = "agent a-2 was restarting";

  log.faults = {kill, oom, hog, hang, skipped};

  log.calls.sent = 600;
  log.calls.ok = 590;
  log.calls.failed = 10;
  log.calls.retried = 4;
  log.calls.unanswered = 0;
  log.calls.supervisor_received = 604;
  log.calls.supervisor_answered = 604;

  // Backoffs: 100 ms (first failure), 100 ms, 200 ms (a-1's second in a row).
  log.restarts = {
    {"a-1", 2.010, 2.300, 0, "crashed: signal 9 (SIGKILL)"},
    {"a-2", 5.200, 5.900, 0, "oom"},
    {"a-1", 13.050, 13.500, 1, "hung"},
  };
  log.ready = {{0, 0}, {0.5, 3}, {2.010, 2}, {2.300, 3}, {5.200, 2}, {5.900, 3},
               {13.050, 2}, {13.500, 3}, {30, 3}};
  log.healthy_at_end = true;
  return log;
}

invariant_result find(const std::vector<invariant_result>& all, const std::string& name) {
  for (const auto& i : all)
    if (i.name == name)
      return i;
  FAIL("no invariant named " << name);
  return {};
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

} // namespace chaos_test

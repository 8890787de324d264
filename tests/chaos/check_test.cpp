// The invariant checker on hand-written run logs: a good log passes every
// invariant, and each invariant fails on a log that breaks it (and only
// that one), with evidence that names the numbers.

#include "logs.hpp"

#include <doctest/doctest.h>

using namespace agentvisor::chaos;
using chaos_test::contains;
using chaos_test::find;
using chaos_test::good_log;
using chaos_test::test_scenario;

namespace {

const std::vector<std::string> all_names{"faults_observed", "calls_accounted",
                                         "restart_intensity", "backoff", "recovered",
                                         "no_leftovers", "supervisor_alive"};

// Every invariant but `broken` passes; `broken` fails. Returns its result.
invariant_result only_fails(const run_log& log, const std::string& broken,
                            const scenario& s = test_scenario()) {
  auto all = check(s, log);
  for (const auto& i : all) {
    INFO(i.name << ": " << i.evidence);
    CHECK(i.passed == (i.name != broken));
  }
  return find(all, broken);
}

} // namespace

TEST_CASE("an all-good log passes every invariant, with evidence") {
  auto all = check(test_scenario(), good_log());
  REQUIRE(all.size() == all_names.size());
  for (std::size_t i = 0; i < all.size(); ++i) {
    INFO(all[i].name << ": " << all[i].evidence);
    CHECK(all[i].name == all_names[i]);
    CHECK(all[i].passed);
    CHECK(!all[i].evidence.empty());
  }
  auto observed = find(all, "faults_observed");
  CHECK(contains(observed.evidence, "all 4 injected faults"));
  CHECK(contains(observed.evidence, "1 skipped"));
  CHECK(contains(find(all, "calls_accounted").evidence, "600 sent"));
  CHECK(contains(find(all, "restart_intensity").evidence, "3 restart(s) in all"));
}

TEST_CASE("faults_observed fails on a down with the wrong reason") {
  auto log = good_log();
  log.faults[1].down_reason = "crashed: signal 9";
  auto r = only_fails(log, "faults_observed");
  CHECK(contains(r.evidence, "1 of 4"));
  CHECK(contains(r.evidence, "#2 oom on a-2"));
  CHECK(contains(r.evidence, "crashed: signal 9"));
  CHECK(contains(r.evidence, "expected oom"));
}

TEST_CASE("faults_observed fails on a fault that was never detected") {
  auto log = good_log();
  log.faults[3].down_reason.reset();
  log.faults[3].detected_s.reset();
  log.faults[3].recovered_s.reset();
  auto all = check(test_scenario(), log);
  auto r = find(all, "faults_observed");
  CHECK_FALSE(r.passed);
  CHECK(contains(r.evidence, "#4 hang on a-1"));
  CHECK(contains(r.evidence, "never went down"));
  // It did not recover either, and says so separately.
  CHECK_FALSE(find(all, "recovered").passed);
}

TEST_CASE("faults_observed fails on a detection later than detect_within_ms") {
  auto log = good_log();
  log.faults[0].detected_s = 2.0 + 2.5; // the bound is 2000 ms
  auto r = only_fails(log, "faults_observed");
  CHECK(contains(r.evidence, "2500 ms after injection, limit 2000 ms"));
}

TEST_CASE("faults_observed: a fault expecting survival must not take its agent down") {
  auto log = good_log();
  log.faults[2].down_reason = "crashed: signal 9";
  log.faults[2].detected_s = 8.5; // within the cpu_hog's 1 s plus 2 s
  auto r = only_fails(log, "faults_observed");
  CHECK(contains(r.evidence, "#3 cpu_hog on a-3"));
  CHECK(contains(r.evidence, "expected to survive"));

  SUBCASE("unless a later fault on the same agent was injected before the down") {
    auto later = chaos_test::fault(6, fault_kind::kill, "a-3", 8.4);
    later.down_reason = "crashed";
    later.detected_s = 8.5;
    later.recovered_s = 8.9;
    log.faults.push_back(later);
    log.restarts.push_back({"a-3", 8.5, 8.9, 0, "crashed"});
    CHECK(find(check(test_scenario(), log), "faults_observed").passed);
  }
  SUBCASE("unless host memory pressure came before an evicted down") {
    log.faults[2].down_reason = "evicted";
    log.faults.push_back(chaos_test::fault(6, fault_kind::governor_pressure, "", 8.2));
    log.restarts.push_back({"a-3", 8.5, 8.9, 0, "evicted"});
    CHECK(find(check(test_scenario(), log), "faults_observed").passed);
  }
  SUBCASE("unless host memory pressure still under way (injected earlier) evicted it") {
    log.faults[2].down_reason = "evicted";
    auto p = chaos_test::fault(6, fault_kind::governor_pressure, "", 7.5);
    p.fault.duration_ms = 2000;
    log.faults.push_back(p);
    log.restarts.push_back({"a-3", 8.5, 8.9, 0, "evicted"});
    CHECK(find(check(test_scenario(), log), "faults_observed").passed);
    // Pressure long over (7.5 s + 2 s + the 2 s detection bound < 12 s)
    // explains nothing.
    log.faults[2].detected_s = 12.0;
    log.faults[2].fault.duration_ms = 5000; // the down falls in the cpu_hog's window
    CHECK_FALSE(find(check(test_scenario(), log), "faults_observed").passed);
  }
  SUBCASE("but pressure does not excuse a down of another reason") {
    log.faults.push_back(chaos_test::fault(6, fault_kind::governor_pressure, "", 8.2));
    log.restarts.push_back({"a-3", 8.5, 8.9, 0, "evicted"});
    CHECK_FALSE(find(check(test_scenario(), log), "faults_observed").passed);
  }
  SUBCASE("nor after its window") {
    log.faults[2].detected_s = 8.0 + 1.0 + 2.0 + 0.5;
    CHECK(find(check(test_scenario(), log), "faults_observed").passed);
  }
}

TEST_CASE("a skipped fault is no violation, whatever it recorded") {
  auto log = good_log();
  REQUIRE(log.faults[4].skipped);
  log.faults[4].down_reason = "hung";
  auto all = check(test_scenario(), log);
  for (const auto& i : all)
    CHECK(i.passed);
  // Without the skipped flag the same record is a violation.
  log.faults[4].skipped = false;
  log.faults[4].detected_s = 13.0;
  CHECK_FALSE(find(check(test_scenario(), log), "faults_observed").passed);
}

TEST_CASE("calls_accounted fails on a lost call") {
  auto log = good_log();
  SUBCASE("unanswered at the end") {
    log.calls.ok -= 1;
    log.calls.unanswered = 1;
    auto r = only_fails(log, "calls_accounted");
    CHECK(contains(r.evidence, "1 call(s) never answered"));
  }
  SUBCASE("sent but counted nowhere") {
    log.calls.sent += 1;
    auto r = only_fails(log, "calls_accounted");
    CHECK(contains(r.evidence, "sent 601 != ok 590 + failed 10 + unanswered 0 (600)"));
  }
  SUBCASE("received by the supervisor and never answered") {
    log.calls.supervisor_answered -= 1;
    auto r = only_fails(log, "calls_accounted");
    CHECK(contains(r.evidence, "received 604 call(s) but answered 603"));
  }
}

TEST_CASE("restart_intensity fails on too many restarts within one period") {
  auto log = good_log();
  log.restarts.clear();
  // 6 restarts within 10 s (limit 5), each with a generous backoff.
  for (int i = 0; i < 6; ++i)
    log.restarts.push_back({"a-" + std::to_string(i % 3 + 1), 1.0 + i, 1.5 + i, 0, "crashed"});
  auto r = only_fails(log, "restart_intensity");
  CHECK(contains(r.evidence, "6 restart(s) within 10000 ms from 1.000 s"));
  CHECK(contains(r.evidence, "did not escalate"));
  CHECK(contains(r.evidence, "limit 5 per 10000 ms"));

  SUBCASE("but passes when the supervisor escalated") {
    log.escalated = true;
    auto e = find(check(test_scenario(), log), "restart_intensity");
    CHECK(e.passed);
    CHECK(contains(e.evidence, "escalated"));
  }
  SUBCASE("and passes when they spread over more than the period") {
    log.restarts[5].down_s = 11.5; // 10.5 s after the first
    log.restarts[5].ready_s = 12.0;
    auto e = find(check(test_scenario(), log), "restart_intensity");
    CHECK(e.passed);
    CHECK(contains(e.evidence, "at most 5 restart(s)"));
  }
}

TEST_CASE("backoff fails on a restart sooner than min(max, min * 2^failures)") {
  auto log = good_log();
  SUBCASE("the first restart under min_backoff_ms") {
    log.restarts[0].ready_s = log.restarts[0].down_s + 0.050;
    auto r = only_fails(log, "backoff");
    CHECK(contains(r.evidence, "1 of 3"));
    CHECK(contains(r.evidence, "a-1 down at 2.010 s: ready after 50.0 ms, backoff at least 100 ms"));
  }
  SUBCASE("the exponent counts consecutive failures") {
    log.restarts[2].failures = 3; // 100 * 2^3 = 800 ms; it waited 450 ms
    auto r = only_fails(log, "backoff");
    CHECK(contains(r.evidence, "backoff at least 800 ms (3 failure(s) before)"));
  }
  SUBCASE("and the cap bounds it") {
    log.restarts[2].failures = 40; // min(1000, 100 * 2^40): 1000 ms
    log.restarts[2].ready_s = log.restarts[2].down_s + 1.0;
    CHECK(find(check(test_scenario(), log), "backoff").passed);
    log.restarts[2].ready_s = log.restarts[2].down_s + 0.9;
    CHECK(contains(only_fails(log, "backoff").evidence, "backoff at least 1000 ms"));
  }
}

TEST_CASE("recovered fails on a fault not serving again within recover_within_ms") {
  auto log = good_log();
  log.faults[1].recovered_s = 5.0 + 6.0; // the bound is 5000 ms
  auto r = only_fails(log, "recovered");
  CHECK(contains(r.evidence, "#2 oom on a-2"));
  CHECK(contains(r.evidence, "6000 ms"));
}

TEST_CASE("no_leftovers fails on anything left, and names it") {
  auto log = good_log();
  log.leftovers = {"cgroup agentvisor/chaos/a-2", "process 4242 (agentvisor-guest)"};
  auto r = only_fails(log, "no_leftovers");
  CHECK(contains(r.evidence, "2 left"));
  CHECK(contains(r.evidence, "cgroup agentvisor/chaos/a-2"));
  CHECK(contains(r.evidence, "process 4242"));
}

TEST_CASE("supervisor_alive fails on an unhealthy end") {
  auto log = good_log();
  log.healthy_at_end = false;
  auto r = only_fails(log, "supervisor_alive");
  CHECK(contains(r.evidence, "did not answer 200"));
}

TEST_CASE("evidence quotes the first few violations and counts the rest") {
  auto log = good_log();
  log.faults.clear();
  for (uint64_t i = 1; i <= 10; ++i) {
    auto f = chaos_test::fault(i, fault_kind::kill, "a-1", static_cast<double>(i));
    f.down_reason = "hung";
    f.detected_s = i + 0.1;
    f.recovered_s = i + 0.2;
    log.faults.push_back(f);
  }
  auto r = find(check(test_scenario(), log), "faults_observed");
  CHECK_FALSE(r.passed);
  CHECK(contains(r.evidence, "10 of 10"));
  CHECK(contains(r.evidence, "#3 kill"));
  CHECK_FALSE(contains(r.evidence, "#4 kill"));
  CHECK(contains(r.evidence, "and 7 more"));
}

TEST_CASE("an invariant a remote run could not check is 'not checked', never passed, and "
          "does not fail the run") {
  auto log = good_log();
  log.not_checked["no_leftovers"] = "the supervisor's fds are in another process";
  auto inv = check(test_scenario(), log);
  auto r = find(inv, "no_leftovers");
  CHECK_FALSE(r.checked);
  CHECK_FALSE(r.passed);
  CHECK(contains(r.evidence, "not checked (remote): the supervisor's fds"));
  CHECK(all_passed(inv));
  auto json = report_json(test_scenario(), log, inv);
  CHECK(contains(json, "not checked (remote)"));
  bool verdict = contains(json, "\"passed\": true") || contains(json, "\"passed\":true");
  CHECK(verdict);
}

TEST_CASE("what a remote run could check of an unchecked invariant can still fail it") {
  auto log = good_log();
  log.leftovers.push_back("cgroup /sys/fs/cgroup/memory/agentvisor/x/a-1");
  log.not_checked["no_leftovers"] = "the supervisor's fds are in another process";
  auto inv = check(test_scenario(), log);
  auto r = find(inv, "no_leftovers");
  CHECK(r.checked);
  CHECK_FALSE(r.passed);
  CHECK(contains(r.evidence, "a-1"));
  CHECK_FALSE(all_passed(inv));
}

TEST_CASE("events lost by a remote supervisor's ring fail the invariants built on events") {
  auto log = good_log();
  log.events_lost = 3;
  auto inv = check(test_scenario(), log);
  for (auto name : {"faults_observed", "recovered"}) {
    auto r = find(inv, name);
    CHECK_FALSE(r.passed);
    CHECK(contains(r.evidence, "3 agent event(s) lost"));
  }
  CHECK_FALSE(all_passed(inv));
}

TEST_CASE("faults_observed: a later fault on the same agent may pre-empt an expected down") {
  auto log = good_log();
  // The first fault expecting a down went down "crashed" because a kill on
  // the same agent landed before its own down could happen.
  fault_record* first = nullptr;
  for (auto& r : log.faults)
    if (!r.skipped && !r.expected_reasons.empty() && r.detected_s) {
      first = &r;
      break;
    }
  REQUIRE(first != nullptr);
  first->down_reason = "not-expected";
  CHECK_FALSE(find(check(test_scenario(), log), "faults_observed").passed);
  auto kill = chaos_test::fault(99, fault_kind::kill, first->agent_id,
                                first->injected_s + (*first->detected_s - first->injected_s) / 2);
  kill.expected_reasons = {"crashed"};
  kill.down_reason = "crashed";
  kill.detected_s = first->detected_s;
  kill.recovered_s = first->recovered_s;
  log.faults.push_back(kill);
  CHECK(find(check(test_scenario(), log), "faults_observed").passed);
}

TEST_CASE("faults_observed: an earlier fault's own down, seen by a later fault, excuses it") {
  auto log = good_log();
  // A hang whose watchdog has not fired yet when an oom lands on the same
  // agent: the down both records hold is the hang's "hung".
  auto hang = chaos_test::fault(90, fault_kind::hang, "a-1", 20.0);
  hang.expected_reasons = {"hung"};
  hang.down_reason = "hung";
  hang.detected_s = 21.0;
  hang.recovered_s = 21.5;
  auto oom = chaos_test::fault(91, fault_kind::oom, "a-1", 20.5);
  oom.expected_reasons = {"oom"};
  oom.down_reason = "hung";
  oom.detected_s = 21.0;
  oom.recovered_s = 21.5;
  log.faults.push_back(oom);
  auto r = find(check(test_scenario(), log), "faults_observed");
  CHECK_FALSE(r.passed);
  CHECK(contains(r.evidence, "#91 oom on a-1"));
  log.faults.push_back(hang);
  CHECK(find(check(test_scenario(), log), "faults_observed").passed);
  // Not when the earlier fault's record holds a different down: then the
  // oom's "hung" is nobody's.
  log.faults.back().detected_s = 20.9;
  CHECK_FALSE(find(check(test_scenario(), log), "faults_observed").passed);
  // Nor when the earlier fault is on another agent.
  log.faults.back().detected_s = 21.0;
  log.faults.back().agent_id = "a-2";
  CHECK_FALSE(find(check(test_scenario(), log), "faults_observed").passed);
}

TEST_CASE("check_so_far judges only what a running run can: recent faults may still be seen") {
  auto log = good_log();
  auto s = test_scenario(); // detect within 2 s
  // A kill injected at 30 s that has not gone down yet.
  auto pending = chaos_test::fault(50, fault_kind::kill, "a-2", 30.0);
  pending.expected_reasons = {"crashed"};
  log.faults.push_back(pending);
  auto at = [&](double now) {
    auto inv = check_so_far(s, log, now);
    REQUIRE(inv.size() == 3);
    CHECK(inv[0].name == "faults_observed");
    CHECK(inv[1].name == "restart_intensity");
    CHECK(inv[2].name == "backoff");
    return inv[0];
  };
  // 1 s after it: it may still be seen.
  CHECK(at(31.0).passed);
  // 3 s after it, past the 2 s bound: a violation already.
  auto late = at(33.0);
  CHECK_FALSE(late.passed);
  CHECK(contains(late.evidence, "#50 kill on a-2"));
  // Faults not injected yet (held or planned) are not judged.
  log.faults.back().injected_s = 0;
  CHECK(at(40.0).passed);
}

TEST_CASE("faults_observed: the kill that triggers a spawn_failure explains the crashed down it causes") {
  auto log = good_log();
  // spawn_failure on a-3 at 40 s: its trigger kill takes a-3 down "crashed"
  // at 40.010; a fork_bomb injected at 40.005 sees that down.
  auto sf = chaos_test::fault(70, fault_kind::spawn_failure, "a-3", 40.0);
  sf.expected_reasons = {"spawn_failed"};
  sf.down_reason = "spawn_failed";
  sf.detected_s = 40.6;
  sf.recovered_s = 41.2;
  auto bomb = chaos_test::fault(71, fault_kind::fork_bomb, "a-3", 40.005);
  bomb.down_reason = "crashed";
  bomb.detected_s = 40.010;
  log.faults.push_back(bomb);
  auto alone = find(check(test_scenario(), log), "faults_observed");
  CHECK_FALSE(alone.passed);
  CHECK(contains(alone.evidence, "#71 fork_bomb on a-3"));
  log.faults.push_back(sf);
  CHECK(find(check(test_scenario(), log), "faults_observed").passed);
  // Not a crash after the spawn failure's own down: that one is nobody's.
  log.faults.back().detected_s = 40.008;
  CHECK_FALSE(find(check(test_scenario(), log), "faults_observed").passed);
}

// Scenario files: what parse_scenario accepts, the error for each kind of
// bad input (every one names the field), and the three shipped scenarios.

#include "agentvisor/chaos.hpp"
#include "agentvisor/config.hpp"

#include <doctest/doctest.h>

#include <set>
#include <string>

using namespace agentvisor;
using namespace agentvisor::chaos;

namespace {

// A small valid scenario; tests splice one change into it.
constexpr std::string_view minimal = R"({
  "name": "t",
  "duration_s": 10,
  "agents": {"count": 2},
  "faults": {"schedule": [{"at_s": 1, "kind": "kill"}]}
})";

std::string parse_error(std::string_view json, std::string_view origin = {}) {
  auto r = parse_scenario(json, origin);
  if (r.has_value())
    return "(parsed)";
  return r.err().message;
}

// `minimal` with `from` replaced by `to` (which must occur).
std::string with(std::string_view from, std::string_view to) {
  std::string s{minimal};
  auto at = s.find(from);
  REQUIRE(at != std::string::npos);
  s.replace(at, from.size(), to);
  return s;
}

bool starts_with(const std::string& s, std::string_view prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

std::string path(std::string_view file) {
  return std::string{SCENARIO_DIR} + "/" + std::string{file};
}

} // namespace

TEST_CASE("fault kind names round-trip and list every kind") {
  std::set<std::string> seen;
  for (std::size_t i = 0; i < fault_kind_count; ++i) {
    auto k = static_cast<fault_kind>(i);
    auto name = std::string{to_string(k)};
    CHECK(fault_kind_from(name) == k);
    CHECK(fault_kind_list().find(name) != std::string::npos);
    seen.insert(name);
  }
  CHECK(seen.size() == fault_kind_count);
  CHECK_FALSE(fault_kind_from("explode"));
  CHECK_FALSE(fault_kind_from("Kill"));
}

TEST_CASE("expected down reasons per kind") {
  using v = std::vector<std::string>;
  CHECK(expected_reasons(fault_kind::kill, 0, 100, 1000) == v{"crashed"});
  CHECK(expected_reasons(fault_kind::crash, 0, 100, 1000) == v{"exited", "crashed"});
  CHECK(expected_reasons(fault_kind::hang, 0, 100, 1000) == v{"hung"});
  CHECK(expected_reasons(fault_kind::oom, 0, 100, 1000) == v{"oom"});
  CHECK(expected_reasons(fault_kind::spawn_failure, 0, 100, 1000) == v{"spawn_failed"});
  // A partition hangs its agent only when it outlasts the timeout by a beat.
  CHECK(expected_reasons(fault_kind::partition, 1100, 100, 1000) == v{"hung"});
  CHECK(expected_reasons(fault_kind::partition, 500, 100, 1000).empty());
  CHECK(expected_reasons(fault_kind::slow_spawn, 5000, 100, 1000) == v{"crashed"});
  for (auto k : {fault_kind::cpu_hog, fault_kind::disk_fill,
                 fault_kind::fork_bomb, fault_kind::governor_pressure})
    CHECK(expected_reasons(k, 5000, 100, 1000).empty());
}

TEST_CASE("a minimal scenario parses, with the documented defaults") {
  auto r = parse_scenario(minimal);
  REQUIRE_MESSAGE(r.has_value(), r.err().message);
  const auto& s = *r;
  scenario d;
  CHECK(s.name == "t");
  CHECK(s.duration_s == 10);
  CHECK(s.agent_count == 2);
  CHECK(s.memory_mb == d.memory_mb);
  CHECK(s.backend == "sandbox");
  CHECK(s.supervisor_json == "{}");
  CHECK(s.calls_per_s == d.calls_per_s);
  CHECK(s.tools == d.tools);
  REQUIRE(s.schedule.size() == 1);
  CHECK(s.schedule[0].kind == fault_kind::kill);
  CHECK(s.schedule[0].agent == -1);
  CHECK(s.random_per_s == 0);
}

TEST_CASE("every key is read") {
  auto r = parse_scenario(R"({
    "name": "all keys", "description": "d", "duration_s": 20.5, "backend": "qemu",
    "agents": {"count": 3, "memory_mb": 200, "pids": 99, "workspace_mb": 20},
    "supervisor": {"agents": {"heartbeat_ms": 100, "hang_timeout_ms": 1000}},
    "workload": {"calls_per_s": 2.5, "tools": {"search": 1, "execute_command": 0.5},
                 "retryable": false, "call_timeout_ms": 700},
    "faults": {"schedule": [{"at_s": 0.5, "kind": "partition", "agent": 2, "duration_ms": 300},
                            {"at_s": 2, "kind": "cpu_hog"}],
               "random_per_s": 0.5, "random_count": 7, "default_duration_ms": 1500,
               "random_kinds": {"oom": 2, "fork_bomb": 0}},
    "invariants": {"detect_within_ms": 3000, "recover_within_ms": 9000}
  })");
  REQUIRE_MESSAGE(r.has_value(), r.err().message);
  const auto& s = *r;
  CHECK(s.description == "d");
  CHECK(s.duration_s == 20.5);
  CHECK(s.backend == "qemu");
  CHECK(s.agent_count == 3);
  CHECK(s.memory_mb == 200);
  CHECK(s.pids == 99);
  CHECK(s.workspace_mb == 20);
  auto cfg = parse_config(s.supervisor_json);
  REQUIRE(cfg.has_value());
  CHECK(cfg->agents.heartbeat_ms == 100);
  CHECK(s.calls_per_s == 2.5);
  CHECK(s.tools == std::map<std::string, double>{{"search", 1}, {"execute_command", 0.5}});
  CHECK_FALSE(s.retryable);
  CHECK(s.call_timeout_ms == 700);
  REQUIRE(s.schedule.size() == 2);
  CHECK(s.schedule[0].at_s == 0.5);
  CHECK(s.schedule[0].kind == fault_kind::partition);
  CHECK(s.schedule[0].agent == 2);
  CHECK(s.schedule[0].duration_ms == 300);
  CHECK(s.schedule[1].duration_ms == 0); // the default applies in the plan
  CHECK(s.random_per_s == 0.5);
  CHECK(s.random_count == 7);
  CHECK(s.fault_duration_ms == 1500);
  CHECK(s.random_kinds == std::map<fault_kind, double>{{fault_kind::oom, 2}, {fault_kind::fork_bomb, 0}});
  CHECK(s.detect_within_ms == 3000);
  CHECK(s.recover_within_ms == 9000);
}

TEST_CASE("an unknown fault kind is refused, naming the field and the kinds") {
  auto e = parse_error(with(R"("kind": "kill")", R"("kind": "explode")"));
  CHECK(starts_with(e, "faults.schedule[0].kind: unknown fault kind \"explode\" (one of kill, crash, hang,"));
  CHECK(e.find("governor_pressure)") != std::string::npos);
  e = parse_error(with(R"("faults": {)", R"("faults": {"random_per_s": 1, "random_kinds": {"kill": 1, "meteor": 2}, )"));
  CHECK(starts_with(e, "faults.random_kinds.meteor: unknown fault kind \"meteor\""));
  e = parse_error(with(R"("kind": "kill")", R"("kind": 3)"));
  CHECK(starts_with(e, "faults.schedule[0].kind: expected a fault kind (one of kill,"));
  CHECK(e.find(", got 3") != std::string::npos);
}

TEST_CASE("a bad rate is refused, naming the field and the range") {
  auto workload = [](std::string_view w) {
    return with(R"("agents")", std::string{R"("workload": )"} + std::string{w} + R"(, "agents")");
  };
  CHECK(parse_error(workload(R"({"calls_per_s": 0})"))
        == "workload.calls_per_s: expected a number > 0 and at most 100000, got 0");
  CHECK(parse_error(workload(R"({"calls_per_s": -3})"))
        == "workload.calls_per_s: expected a number > 0 and at most 100000, got -3");
  CHECK(parse_error(workload(R"({"calls_per_s": "fast"})"))
        == "workload.calls_per_s: expected a number > 0 and at most 100000, got \"fast\"");
  CHECK(parse_error(with(R"("faults": {)", R"("faults": {"random_per_s": 5000, )"))
        == "faults.random_per_s: expected a number in 0..1000, got 5000");
  CHECK(parse_error(with(R"("faults": {)", R"("faults": {"random_per_s": 1e999, )"))
        == "faults.random_per_s: expected a number in 0..1000, got 1e999");
  CHECK(parse_error(with(R"("duration_s": 10)", R"("duration_s": 0)"))
        == "duration_s: expected a number > 0 and at most 604800, got 0");
  CHECK(parse_error(workload(R"({"tools": {"read_file": -1}})"))
        == "workload.tools.read_file: expected a number in 0..1000000, got -1");
}

TEST_CASE("a missing field is refused, naming it") {
  CHECK(parse_error(R"({"duration_s": 10, "agents": {"count": 1}, "faults": {"schedule": [{"at_s": 1, "kind": "kill"}]}})")
        == "name: missing (required)");
  CHECK(parse_error(with(R"("duration_s": 10,)", "")) == "duration_s: missing (required)");
  CHECK(parse_error(with(R"("agents": {"count": 2},)", "")) == "agents: missing (required)");
  CHECK(parse_error(with(R"({"count": 2})", R"({"memory_mb": 64})")) == "agents.count: missing (required)");
  CHECK(parse_error(with(R"({"at_s": 1, "kind": "kill"})", R"({"kind": "kill"})"))
        == "faults.schedule[0].at_s: missing (required)");
  CHECK(parse_error(with(R"({"at_s": 1, "kind": "kill"})", R"({"at_s": 1})"))
        == "faults.schedule[0].kind: missing (required)");
  CHECK(parse_error(R"({"name": "t", "duration_s": 10, "agents": {"count": 1}})") == "faults: missing (required)");
  CHECK(parse_error(with(R"({"schedule": [{"at_s": 1, "kind": "kill"}]})", "{}"))
        == "faults: expected a non-empty schedule or random_per_s > 0, got neither");
  CHECK(parse_error(with(R"("faults": {)", R"("faults": {"random_per_s": 2, )"))
        == "faults.random_kinds: missing (required when faults.random_per_s > 0)");
}

TEST_CASE("an unknown key is refused, naming its path") {
  CHECK(parse_error(with(R"("duration_s": 10)", R"("duration_s": 10, "duraton_s": 10)"))
        == "duraton_s: unknown key");
  CHECK(parse_error(with(R"({"count": 2})", R"({"count": 2, "colour": "red"})"))
        == "agents.colour: unknown key");
  CHECK(parse_error(with(R"("kind": "kill")", R"("kind": "kill", "target": 1)"))
        == "faults.schedule[0].target: unknown key");
  CHECK(parse_error(with(R"("agents")", R"("workload": {"tools": {"rm_rf": 1}}, "agents")"))
        == "workload.tools.rm_rf: unknown tool \"rm_rf\" (one of read_file, write_file, search, "
           "list_directory, execute_command)");
  CHECK(parse_error(with(R"("duration_s": 10)", R"("duration_s": 10, "duration_s": 11)"))
        == "duration_s: duplicate key");
}

TEST_CASE("wrong types are refused, naming the field and what was expected") {
  CHECK(parse_error(with(R"("name": "t")", R"("name": 5)")) == "name: expected a string, got 5");
  CHECK(parse_error(with(R"({"count": 2})", R"({"count": "four"})"))
        == "agents.count: expected a positive integer, got \"four\"");
  CHECK(parse_error(with(R"({"count": 2})", R"({"count": 2.5})"))
        == "agents.count: expected a positive integer, got 2.5");
  CHECK(parse_error(with(R"({"count": 2})", "[2]")) == "agents: expected an object, got [...]");
  CHECK(parse_error(with(R"([{"at_s": 1, "kind": "kill"}])", R"({"at_s": 1})"))
        == "faults.schedule: expected an array, got {...}");
  CHECK(parse_error(with(R"([{"at_s": 1, "kind": "kill"}])", R"([{"at_s": 1, "kind": "kill"}, 7])"))
        == "faults.schedule[1]: expected an object, got 7");
  CHECK(parse_error(with(R"("kind": "kill")", R"("kind": "kill", "agent": "first")"))
        == "faults.schedule[0].agent: expected an integer in -1..9999, got \"first\"");
  CHECK(parse_error(with(R"("agents")", R"("workload": {"retryable": "yes"}, "agents")"))
        == "workload.retryable: expected true or false, got \"yes\"");
  CHECK(parse_error(with(R"("agents")", R"("supervisor": [], "agents")"))
        == "supervisor: expected an object, got [...]");
  CHECK(parse_error(with(R"("agents")", R"("backend": "vmware", "agents")"))
        == "backend: expected one of sandbox, qemu, firecracker, got \"vmware\"");
}

TEST_CASE("numbers are range-checked, and relations between keys too") {
  CHECK(parse_error(with(R"({"count": 2})", R"({"count": 0})"))
        == "agents.count: expected an integer in 1..10000, got 0");
  CHECK(parse_error(with(R"({"count": 2})", R"({"count": 2, "memory_mb": 8})"))
        == "agents.memory_mb: expected an integer in 16..1048576, got 8");
  CHECK(parse_error(with(R"({"count": 2})", R"({"count": 2, "memory_mb": 64, "workspace_mb": 64})"))
        == "agents.workspace_mb: expected less than agents.memory_mb (64; the workspace's pages "
           "count towards it), got 64");
  CHECK(parse_error(with(R"("at_s": 1)", R"("at_s": 10)"))
        == "faults.schedule[0].at_s: expected less than duration_s (10), got 10");
  CHECK(parse_error(with(R"("kind": "kill")", R"("kind": "kill", "agent": 2)"))
        == "faults.schedule[0].agent: expected -1 (random) or an agent index below agents.count (2), got 2");
  CHECK(parse_error(with(R"("kind": "kill")", R"("kind": "kill", "duration_ms": 100)"))
        == "faults.schedule[0].duration_ms: kill takes no duration (only partition, slow_spawn, "
           "cpu_hog and governor_pressure do)");
  CHECK(parse_error(with(R"("kind": "kill")", R"("kind": "cpu_hog", "duration_ms": 0)"))
        == "faults.schedule[0].duration_ms: expected an integer in 1..3600000, got 0");
  CHECK(parse_error(with(R"("faults": {)", R"("faults": {"random_count": 5, )"))
        == "faults.random_count: given, but faults.random_per_s is 0");
  CHECK(parse_error(with(R"("faults": {)", R"("faults": {"random_per_s": 1000, "random_kinds": {"kill": 1}, )")
                      .replace(std::string{minimal}.find("10,"), 3, "604800,"))
        == "faults.random_per_s: 1000 per second over 604800 s would plan about 604800000 faults; "
           "at most 10000000 (set faults.random_count)");
}

TEST_CASE("the supervisor overrides are checked as a config") {
  auto sup = [](std::string_view o) {
    return with(R"("agents")", std::string{R"("supervisor": )"} + std::string{o} + R"(, "agents")");
  };
  CHECK(parse_error(sup(R"({"agents": {"colour": 1}})")) == "supervisor.agents.colour: unknown key");
  CHECK(parse_error(sup(R"({"supervision": {"max_backoff_ms": -1}})"))
        == "supervisor.supervision.max_backoff_ms: expected a non-negative integer, got -1");
  CHECK(parse_error(sup(R"({"agents": {"heartbeat_ms": 1000, "hang_timeout_ms": 500}})"))
        == "supervisor.agents.hang_timeout_ms: expected more than agents.heartbeat_ms (1000), got 500");
}

TEST_CASE("partitions must be clearly shorter or clearly longer than the hang timeout") {
  auto sched = [](std::string_view entry) {
    return with(R"({"at_s": 1, "kind": "kill"})", entry);
  };
  // Defaults: heartbeat 1000 ms, hang after 5000 ms: 4000..5999 could go either way.
  CHECK(parse_error(sched(R"({"at_s": 1, "kind": "partition", "duration_ms": 5000})"))
        == "faults.schedule[0].duration_ms: a partition of 5000 ms may or may not end in a hang "
           "(hang_timeout_ms 5000, heartbeat_ms 1000): use less than 4000 ms to survive or at "
           "least 6000 ms to hang");
  CHECK(parse_error(sched(R"({"at_s": 1, "kind": "partition", "duration_ms": 3999})")) == "(parsed)");
  // A partition that hangs needs detect_within_ms above the hang timeout.
  CHECK(parse_error(sched(R"({"at_s": 1, "kind": "partition", "duration_ms": 6000})")
                      .replace(0, 1, R"({"invariants": {"detect_within_ms": 5000},)"))
        == "invariants.detect_within_ms: expected more than the supervisor's agents.hang_timeout_ms "
           "(5000) with hang or partition faults, got 5000");
}

TEST_CASE("document-level problems and the origin") {
  CHECK(starts_with(parse_error(""), "malformed JSON: the document is empty"));
  CHECK(parse_error("[]") == "expected a JSON object at the top level, got [...]");
  CHECK(starts_with(parse_error(std::string{minimal} + " {}"), "malformed JSON at byte"));
  CHECK(parse_error(with(R"("name": "t")", R"("name": "")"), "x.json")
        == "x.json: name: expected 1 to 200 bytes of text, got \"\"");
  auto missing = load_scenario("/nonexistent/chaos.json");
  REQUIRE_FALSE(missing.has_value());
  CHECK(missing.err().message
        == "cannot read scenario file /nonexistent/chaos.json: No such file or directory");
}

namespace {

/// A schedule's partitions include one the agent survives and one that
/// hangs it, under the scenario's own watchdog.
void check_both_partitions(const scenario& s, const agentvisor::config& cfg) {
  int surviving = 0, hanging = 0;
  for (const auto& f : s.schedule) {
    if (f.kind != fault_kind::partition)
      continue;
    auto d = f.duration_ms != 0 ? f.duration_ms : s.fault_duration_ms;
    auto e = expected_reasons(f.kind, d, cfg.agents.heartbeat_ms, cfg.agents.hang_timeout_ms);
    (e.empty() ? surviving : hanging)++;
  }
  CHECK(surviving >= 1);
  CHECK(hanging >= 1);
}

} // namespace

TEST_CASE("scenarios/smoke.json: every kind on a schedule, 4 agents, under a minute, tight timeouts") {
  auto r = load_scenario(path("smoke.json"));
  REQUIRE_MESSAGE(r.has_value(), r.err().message);
  const auto& s = *r;
  CHECK(s.agent_count == 4);
  CHECK(s.duration_s < 60);
  std::set<fault_kind> kinds;
  for (const auto& f : s.schedule)
    kinds.insert(f.kind);
  CHECK(kinds.size() == fault_kind_count);
  CHECK(s.random_per_s == 0);
  auto cfg = parse_config(s.supervisor_json);
  REQUIRE(cfg.has_value());
  CHECK(cfg->agents.heartbeat_ms == 100);
  CHECK(cfg->agents.hang_timeout_ms <= 3000);
  CHECK(cfg->agents.allow_faults);
  CHECK(cfg->supervision.max_backoff_ms <= 1000);
  // Both outcomes of a partition are exercised.
  check_both_partitions(s, *cfg);
}

TEST_CASE("scenarios/smoke-qemu.json: every kind on the qemu backend, fewer agents, wider bounds") {
  auto r = load_scenario(path("smoke-qemu.json"));
  REQUIRE_MESSAGE(r.has_value(), r.err().message);
  const auto& s = *r;
  CHECK(s.backend == "qemu");
  CHECK(s.agent_count < 4);
  std::set<fault_kind> kinds;
  for (const auto& f : s.schedule)
    kinds.insert(f.kind);
  CHECK(kinds.size() == fault_kind_count);
  auto cfg = parse_config(s.supervisor_json);
  REQUIRE(cfg.has_value());
  CHECK(cfg->agents.allow_faults);
  // A restart is a VM boot: seconds under TCG.
  CHECK(cfg->qemu.boot_timeout_ms >= 60000);
  CHECK(cfg->agents.ready_timeout_ms >= 60000);
  check_both_partitions(s, *cfg);
}

TEST_CASE("scenarios/roadmap.json: the roadmap's failures at a 200 MB limit") {
  auto r = load_scenario(path("roadmap.json"));
  REQUIRE_MESSAGE(r.has_value(), r.err().message);
  const auto& s = *r;
  CHECK(s.memory_mb == 200);
  std::set<fault_kind> kinds;
  for (const auto& f : s.schedule)
    kinds.insert(f.kind);
  for (auto k : {fault_kind::kill, fault_kind::crash, fault_kind::partition, fault_kind::oom,
                 fault_kind::cpu_hog, fault_kind::fork_bomb, fault_kind::disk_fill,
                 fault_kind::governor_pressure})
    CHECK_MESSAGE(kinds.count(k) == 1, to_string(k));
  auto cfg = parse_config(s.supervisor_json);
  REQUIRE(cfg.has_value());
  CHECK(cfg->agents.allow_faults);
}

TEST_CASE("scenarios/soak.json: 10,000 random faults") {
  auto r = load_scenario(path("soak.json"));
  REQUIRE_MESSAGE(r.has_value(), r.err().message);
  const auto& s = *r;
  CHECK(s.random_count == 10000);
  CHECK(s.random_kinds.size() == fault_kind_count);
  // The duration leaves room for all of them (the plan test counts them).
  CHECK(s.random_per_s * s.duration_s > 1.1 * 10000);
}

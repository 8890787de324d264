// Whole-binary smoke test of `agentvisor bench baseline` and `agentvisor
// bench concurrent`: each runs with tiny sizes and --peers on the real
// actors over real sandboxes, and the JSON document it writes is checked
// field by field (never its timings against targets). Needs root
// (cgroups); exits 77 (skipped) without it.

#include "bench_run.hpp"

#include <doctest/doctest.h>

#include <simdjson.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>

using namespace bench_test;

namespace {

void skip_unless_root() {
  if (::geteuid() != 0) {
    std::fprintf(stderr, "SKIP: agentvisor bench needs root (cgroups, mounts)\n");
    std::exit(77);
  }
}

fs::path out_file(const char* what) {
  return fs::temp_directory_path() / ("bench-cli-" + std::string{what} + "-"
                                      + std::to_string(::getpid()) + ".json");
}

/// What every document has: its name, a UTC timestamp, the machine, the
/// backend.
void check_header(simdjson::dom::element doc, std::string_view benchmark) {
  CHECK(std::string_view(doc["benchmark"]) == benchmark);
  CHECK(std::string_view(doc["backend"]) == "sandbox");
  std::string_view ts = doc["timestamp"];
  CHECK(ts.size() == 20); // 2026-11-23T10:00:00Z
  CHECK(ts[10] == 'T');
  CHECK(ts.back() == 'Z');
  auto machine = doc["machine"];
  CHECK(!std::string_view(machine["hostname"]).empty());
  CHECK(std::string_view(machine["kernel"]).starts_with("Linux "));
  CHECK(int64_t(machine["cpus"]) >= 1);
  CHECK(uint64_t(machine["memory_bytes"]) > 0);
  CHECK(number(doc["wall_seconds"]) > 0);
}

/// Every metric: a name, a positive value (CPU shares may be 0), a known
/// unit, a target or null, pass a bool exactly when there is a target and
/// agreeing with value and target. Returns the names.
std::set<std::string> check_metrics(simdjson::dom::element doc) {
  static const std::set<std::string> units{"ms", "MiB", "KiB", "%", "ratio", "ops/min"};
  std::set<std::string> names;
  int64_t with_target = 0, passed = 0;
  for (auto m : doc["metrics"].get_array()) {
    std::string name{std::string_view(m["name"])};
    INFO(name);
    CHECK(names.insert(name).second);
    std::string unit{std::string_view(m["unit"])};
    CHECK(units.count(unit) == 1);
    double value = number(m["value"]);
    if (unit == "%")
      CHECK(value >= 0);
    else
      CHECK(value > 0);
    CHECK(!std::string_view(m["target_expr"]).empty());
    if (m["target"].is_null()) {
      CHECK(m["pass"].is_null());
      continue;
    }
    double target = number(m["target"]);
    CHECK(target > 0);
    REQUIRE(m["pass"].is_bool());
    bool pass = bool(m["pass"]);
    ++with_target;
    passed += pass ? 1 : 0;
    if (unit == "ops/min")
      CHECK(pass == (value > target));
    else
      CHECK(pass == (value < target));
  }
  CHECK(with_target > 0);
  CHECK(int64_t(doc["summary"]["targets"]) == with_target);
  CHECK(int64_t(doc["summary"]["passed"]) == passed);
  CHECK(int64_t(doc["summary"]["failed"]) == with_target - passed);
  return names;
}

/// A spawn peer: measured with its command, or unavailable with a reason.
bool check_peer(simdjson::dom::object p, const char* name) {
  INFO(name);
  bool available = bool(p["available"]);
  if (available)
    CHECK(!std::string_view(p["command"]).empty());
  else
    CHECK(!std::string_view(p["reason"]).empty());
  return available;
}

} // namespace

TEST_CASE("bench baseline with tiny sizes and peers writes every figure beside its target") {
  skip_unless_root();
  auto out = out_file("baseline");
  auto r = run_bench(AGENTVISOR_PATH, {"bench", "baseline", "--iterations", "3",
                                       "--memory-agents", "3", "--peers", "--out", out.string()});
  if (r.exit_code == 77) {
    std::fprintf(stderr, "SKIP: %s", r.err.c_str());
    std::exit(77);
  }
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  CHECK_MESSAGE(r.err.empty(), "stderr is not a terminal: no progress expected: ", r.err);

  simdjson::dom::parser parser;
  auto doc = load_json(parser, out);
  check_header(doc, "baseline");
  CHECK(int64_t(doc["config"]["iterations"]) == 3);

  auto names = check_metrics(doc);
  for (const char* n : {"spawn_p50", "spawn_p95", "spawn_p99", "spawn_min", "spawn_max",
                        "memory_per_agent", "memory_guest_cgroup_per_agent",
                        "memory_supervisor_per_agent", "supervisor_cpu", "supervisor_cpu_idle",
                        "restart_pooled_p50"})
    CHECK_MESSAGE(names.count(n) == 1, n);
  const char* tools[] = {"read_file", "write_file", "search", "list_directory", "execute_command"};
  for (const char* t : tools) {
    CHECK(names.count(std::string{"tool_"} + t + "_p50") == 1);
    check_stats(doc["tools"][t], t, 3);
  }
  CHECK(std::string_view(doc["tools"]["unit"]) == "ms");
  check_stats(doc["spawn"], "spawn", 3);
  CHECK(std::string_view(doc["spawn"]["unit"]) == "ms");
  check_stats(doc["teardown"], "teardown", 3);

  auto mem = doc["memory"];
  CHECK(int64_t(mem["agents"]) == 3);
  CHECK(number(mem["guest_cgroup_bytes_mean"]) > 0);
  CHECK(uint64_t(mem["supervisor_rss_after_bytes"]) > 0);
  CHECK(number(doc["cpu"]["supervisor_cpu_seconds"]) >= 0);

  auto peers = doc["peers"];
  CHECK(bool(peers["enabled"]));
  for (const char* p : {"bwrap", "unshare", "crun"}) {
    auto peer = peers["spawn"][p];
    if (check_peer(peer, p)) {
      check_stats(peer, p, 3);
      CHECK(number(peer["agentvisor_p50_over_peer_p50"]) > 0);
      CHECK(names.count(std::string{"spawn_p50_over_"} + p + "_p50") == 1);
    }
  }
  auto restart = peers["restart"];
  check_stats(restart["agentvisor_pooled"], "agentvisor_pooled", 3);
  check_stats(restart["agentvisor_cold"], "agentvisor_cold", 3);
  if (check_peer(restart["erlang_otp"], "erlang_otp")) {
    check_stats(restart["erlang_otp"], "erlang_otp", 3);
    CHECK(number(restart["erlang_otp"]["agentvisor_pooled_p50_over_otp_p50"]) > 0);
    CHECK(names.count("restart_pooled_p50_over_otp_p50") == 1);
  }
}

TEST_CASE("bench concurrent with tiny counts and peers writes one round per count") {
  skip_unless_root();
  auto out = out_file("concurrent");
  auto r = run_bench(AGENTVISOR_PATH, {"bench", "concurrent", "--agents", "2,3", "--peers",
                                       "--out", out.string()});
  if (r.exit_code == 77) {
    std::fprintf(stderr, "SKIP: %s", r.err.c_str());
    std::exit(77);
  }
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  CHECK_MESSAGE(r.err.empty(), "stderr is not a terminal: no progress expected: ", r.err);

  simdjson::dom::parser parser;
  auto doc = load_json(parser, out);
  check_header(doc, "concurrent");
  auto names = check_metrics(doc);
  int64_t ops_per_agent = int64_t(doc["config"]["ops_per_agent"]);
  CHECK(ops_per_agent == 10);

  std::set<std::string> available;
  for (const char* p : {"bwrap", "unshare", "crun"})
    if (check_peer(doc["peers"]["spawn"][p], p))
      available.insert(p);

  auto rounds = doc["rounds"].get_array();
  REQUIRE(rounds.size() == 2);
  int64_t counts[] = {2, 3};
  size_t i = 0;
  for (auto round : rounds) {
    int64_t n = counts[i++];
    INFO("agents " << n);
    CHECK(int64_t(round["agents"]) == n);
    CHECK(int64_t(round["ops"]) == n * ops_per_agent);
    CHECK(number(round["total_ms"]) > 0);
    for (const char* phase : {"spawn", "execute", "cleanup"}) {
      check_stats(round[phase], phase, static_cast<uint64_t>(n));
      CHECK(number(round["phase_wall_ms"][phase]) > 0);
    }
    CHECK(number(round["throughput_ops_per_min"]) > 0);
    CHECK(uint64_t(round["memory"]["supervisor_rss_peak_bytes"]) > 0);
    CHECK(number(round["memory"]["guest_cgroup_bytes_sum"]) > 0);
    CHECK(number(round["cpu"]["supervisor_percent_of_one_cpu"]) >= 0);
    for (const auto& p : available) {
      INFO(p);
      CHECK(number(round["peers"][p]["wall_ms"]) > 0);
      CHECK(number(round["peers"][p]["agentvisor_spawn_phase_over_peer"]) > 0);
    }
    auto prefix = "agents_" + std::to_string(n) + "_";
    for (const char* m : {"total", "avg_spawn", "avg_execute", "avg_cleanup", "throughput",
                          "peak_memory", "memory_per_agent", "supervisor_memory_per_agent",
                          "supervisor_cpu"}) {
      auto name = prefix + m;
      CHECK_MESSAGE(names.count(name) == 1, name);
    }
  }
}

#ifdef MICRO_PATH
TEST_CASE("the micro-benchmarks run briefly and write Google Benchmark JSON") {
  auto out = out_file("micro");
  auto r = run_bench(MICRO_PATH, {"--benchmark_min_time=0.01", "--benchmark_out=" + out.string(),
                                  "--benchmark_out_format=json"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  simdjson::dom::parser parser;
  auto doc = load_json(parser, out);
  std::set<std::string> names;
  for (auto b : doc["benchmarks"].get_array()) {
    std::string name{std::string_view(b["name"])};
    INFO(name);
    names.insert(name);
    CHECK(number(b["real_time"]) > 0);
    CHECK(int64_t(b["iterations"]) > 0);
  }
  for (const char* n : {"actor_round_trip_request_then/real_time",
                        "actor_round_trip_co_await_ask/real_time",
                        "scoped_actor_request_receive/real_time", "protocol_encode_call",
                        "protocol_encode_result", "protocol_decode_call", "protocol_decode_result"})
    CHECK_MESSAGE(names.count(n) == 1, n);
}
#endif

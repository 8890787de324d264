// Whole-binary smoke test of agentvisor-bench-spawn: a short run on the real
// sandbox parts, and the JSON document it writes, checked field by field.
// Needs root (cgroups); exits 77 (skipped) without it.

#include "bench_run.hpp"

#include <doctest/doctest.h>

#include <simdjson.h>

#include <fcntl.h>
#include <grp.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

using namespace bench_test;

TEST_CASE("the spawn benchmark refuses bad options with exit code 2 and one line") {
  auto r = run_bench(BENCH_PATH, {"--spawns", "0"});
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "--spawns: expected a positive integer"));
  auto u = run_bench(BENCH_PATH, {"--frobnicate"});
  CHECK(u.exit_code == 2);
  CHECK(contains(u.err, "unknown option"));
}

TEST_CASE("the spawn benchmark says it needs root and exits 77 without it") {
  auto r = run_bench(BENCH_PATH, {"--spawns", "1"}, ::geteuid() == 0);
  if (r.exit_code == 125) {
    MESSAGE("the build tree is not readable by nobody: not checked");
    return;
  }
  CHECK(r.exit_code == 77);
  CHECK(contains(r.err, "must run as root"));
}

TEST_CASE("a short benchmark run writes every figure beside its target, as JSON") {
  if (::geteuid() != 0) {
    std::fprintf(stderr, "SKIP: the spawn benchmark needs root (cgroups, mounts)\n");
    std::exit(77);
  }
  auto out = fs::temp_directory_path() / ("bench-spawn-test-" + std::to_string(::getpid()) + ".json");
  auto r = run_bench(BENCH_PATH, {"--spawns", "20", "--tool-iterations", "50", "--peer-runs", "10",
                      "--out", out.string()});
  if (r.exit_code == 77) {
    std::fprintf(stderr, "SKIP: %s", r.err.c_str());
    std::exit(77);
  }
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  CHECK_MESSAGE(r.err.empty(), "stderr is not a terminal: no progress line expected: ", r.err);

  simdjson::dom::parser parser;
  auto doc = load_json(parser, out);

  CHECK(std::string_view(doc["benchmark"]) == "spawn");
  CHECK(std::string_view(doc["backend"]) == "sandbox");
  std::string_view ts = doc["timestamp"];
  CHECK(ts.size() == 20); // 2026-11-23T10:00:00Z
  CHECK(ts[4] == '-');
  CHECK(ts[10] == 'T');
  CHECK(ts.back() == 'Z');

  auto machine = doc["machine"];
  CHECK(!std::string_view(machine["hostname"]).empty());
  CHECK(std::string_view(machine["kernel"]).starts_with("Linux "));
  CHECK(int64_t(machine["cpus"]) >= 1);
  CHECK(uint64_t(machine["memory_bytes"]) > 0);
  std::string_view cg = machine["cgroup_version"];
  CHECK((cg == "v1" || cg == "v2"));

  auto load = doc["load"];
  CHECK(number(load["cpu_busy_fraction"]) >= 0);
  CHECK(number(load["own_cpu_fraction"]) > 0);

  // Peers: fork and fork+exec always; bwrap when installed.
  auto peers = doc["peers"];
  check_stats(peers["fork_exit"], "fork_exit", 10);
  check_stats(peers["fork_exec_true"], "fork_exec_true", 10);
  bool bwrap = bool(peers["bwrap"]["available"]);
  if (bwrap)
    check_stats(peers["bwrap"], "bwrap", 10);
  else
    CHECK(!std::string_view(peers["bwrap"]["reason"]).empty());

  auto cold = doc["cold_spawn"];
  check_stats(cold, "cold_spawn", 20);
  for (const char* part : {"host_prep", "template_clone_setup", "guest_start"}) {
    INFO(part);
    CHECK(number(cold["breakdown"][part]["p50"]) > 0);
  }
  check_stats(doc["teardown"], "teardown", 20);

  const char* tools[] = {"read_file", "write_file", "search", "list_directory", "execute_command"};
  for (const char* t : tools)
    check_stats(doc["tools"][t], t, 50);

  // Every headline figure beside its target; pass agrees with value and target.
  std::set<std::string> names;
  int64_t with_target = 0, passed = 0;
  for (auto m : doc["metrics"].get_array()) {
    std::string name{std::string_view(m["name"])};
    INFO(name);
    names.insert(name);
    double value = number(m["value"]);
    CHECK(value > 0);
    CHECK(!std::string_view(m["unit"]).empty());
    CHECK(!std::string_view(m["target_expr"]).empty());
    if (m["target"].is_null()) {
      CHECK(m["pass"].is_null());
      continue;
    }
    double target = number(m["target"]);
    bool pass = bool(m["pass"]);
    ++with_target;
    passed += pass ? 1 : 0;
    if (name == "cold_spawn_p50") {
      CHECK(std::string_view(m["unit"]) == "ms");
      CHECK(target == doctest::Approx(0.5 * number(peers["bwrap"]["p50"])).epsilon(0.01));
      CHECK(pass == (value <= target));
    } else {
      CHECK(std::string_view(m["unit"]) == "us");
      CHECK(target == 50);
      CHECK(pass == (value < target));
    }
  }
  CHECK(names.count("cold_spawn_p50") == 1);
  CHECK(names.count("cold_spawn_p99") == 1);
  for (const char* t : tools)
    CHECK(names.count(std::string{"tool_"} + t + "_p50") == 1);
  CHECK(with_target == (bwrap ? 6 : 5));
  CHECK(int64_t(doc["summary"]["targets"]) == with_target);
  CHECK(int64_t(doc["summary"]["passed"]) == passed);
  CHECK(int64_t(doc["summary"]["failed"]) == with_target - passed);
}

// Whole-binary smoke test of agentvisor-bench-supervision: a short run on the
// real actors over real sandboxes, and the JSON it writes, checked field by
// field. Needs root (cgroups); exits 77 (skipped) without it.

#include "bench_run.hpp"

#include <doctest/doctest.h>

#include <simdjson.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>

using namespace bench_test;

TEST_CASE("the supervision benchmark refuses bad options with exit code 2") {
  auto r = run_bench(BENCH_PATH, {"--kills", "many"});
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "--kills"));
  CHECK(run_bench(BENCH_PATH, {"--frobnicate"}).exit_code == 2);
}

TEST_CASE("a short supervision benchmark run writes every figure beside its target") {
  if (::geteuid() != 0) {
    std::fprintf(stderr, "SKIP: the supervision benchmark needs root (cgroups, mounts)\n");
    std::exit(77);
  }
  auto out = fs::temp_directory_path() / ("bench-sup-test-" + std::to_string(::getpid()) + ".json");
  auto r = run_bench(BENCH_PATH, {"--kills", "10", "--restarts", "10", "--handouts", "5",
                                  "--agents", "20", "--out", out.string()});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);

  simdjson::dom::parser parser;
  auto doc = load_json(parser, out);

  CHECK(std::string_view(doc["benchmark"]) == "supervision");
  CHECK(std::string_view(doc["backend"]) == "sandbox");
  CHECK(int64_t(doc["machine"]["cpus"]) >= 1);

  auto down = doc["kill_to_down"];
  check_stats(down, "kill_to_down", 10);
  check_stats(down["kernel_exit"], "kernel_exit", 10);
  // The kernel's part is part of the whole.
  CHECK(number(down["kernel_exit"]["p50"]) <= number(down["p50"]));
  auto repl = doc["kill_to_replacement"];
  check_stats(repl, "kill_to_replacement", 10);
  // Each measured call met the dying agent or waited for the replacement,
  // and was answered ok by the replacement (the bench fails otherwise).
  CHECK(int64_t(repl["answered_on_retry"]) >= 0);
  // The pooled restarts: some took a pool member (a refill slower than the
  // wait between kills makes a cold one, on a loaded machine).
  auto pooled = doc["kill_to_replacement_pooled"];
  check_stats(pooled, "kill_to_replacement_pooled", 10);
  CHECK(int64_t(pooled["restarts_from_pool"]) >= 1);
  CHECK(int64_t(pooled["restarts_from_pool"]) <= 10);
  check_stats(doc["pool_handout"], "pool_handout", 5);
  check_stats(doc["pool_handout"]["request_floor"], "request_floor", 5);
  auto mem = doc["memory"];
  CHECK(int64_t(mem["agents"]) == 20);
  CHECK(uint64_t(mem["rss_after_bytes"]) > 0);

  std::set<std::string> names;
  int64_t with_target = 0, passed = 0;
  for (auto m : doc["metrics"].get_array()) {
    std::string name{std::string_view(m["name"])};
    INFO(name);
    names.insert(name);
    CHECK(!std::string_view(m["unit"]).empty());
    if (m["target"].is_null()) {
      CHECK(m["pass"].is_null());
      continue;
    }
    ++with_target;
    bool pass = bool(m["pass"]);
    passed += pass ? 1 : 0;
    CHECK(pass == (number(m["value"]) < number(m["target"])));
  }
  for (const char* n : {"kill_to_down_p99", "kill_to_down_p50", "kill_to_replacement_pooled_p50",
                        "kill_to_replacement_cold_p50", "pool_handout_p50", "memory_per_agent"})
    CHECK(names.count(n) == 1);
  CHECK(int64_t(doc["summary"]["targets"]) == with_target);
  CHECK(int64_t(doc["summary"]["passed"]) == passed);
}

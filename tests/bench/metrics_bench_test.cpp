// Whole-binary smoke test of agentvisor-bench-metrics: a tiny run (10 agents,
// 10 ms per benchmark) and the Google Benchmark JSON it writes, checked
// field by field. Needs nothing but the built program.

#include "bench_run.hpp"

#include <doctest/doctest.h>

#include <simdjson.h>

#include <unistd.h>

#include <map>
#include <set>
#include <string>

using namespace bench_test;

TEST_CASE("the metrics benchmark refuses bad options with exit code 2") {
  auto r = run_bench(BENCH_PATH, {"--agents=many"});
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "--agents"));
  CHECK(run_bench(BENCH_PATH, {"--agents=-1"}).exit_code == 2);
  CHECK(run_bench(BENCH_PATH, {"--frobnicate"}).exit_code == 2);
}

TEST_CASE("a short metrics benchmark run writes every benchmark to its JSON") {
  auto out = fs::temp_directory_path() / ("bench-metrics-test-" + std::to_string(::getpid()) + ".json");
  const int agents = 10;
  auto r = run_bench(BENCH_PATH, {"--agents=" + std::to_string(agents), "--benchmark_min_time=0.01",
                                  "--benchmark_out=" + out.string(), "--benchmark_out_format=json"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);

  simdjson::dom::parser parser;
  auto doc = load_json(parser, out);
  CHECK(std::string_view(doc["context"]["agents"]) == std::to_string(agents));

  const std::set<std::string> hot{"BM_counter_increment", "BM_histogram_observe", "BM_tool_call"};
  const std::set<std::string> scrape{"BM_collect", "BM_serialize_text", "BM_serialize_openmetrics",
                                     "BM_scrape_text", "BM_scrape_openmetrics"};
  std::set<std::string> names;
  std::map<std::string, double> series, bytes;
  for (auto b : doc["benchmarks"].get_array()) {
    std::string name{std::string_view(b["name"])};
    INFO(name);
    CHECK(names.insert(name).second);
    CHECK(number(b["iterations"]) >= 1);
    CHECK(number(b["real_time"]) > 0);
    CHECK(number(b["cpu_time"]) > 0);
    std::string_view unit = b["time_unit"];
    if (hot.count(name)) {
      CHECK(unit == "ns");
      continue;
    }
    CHECK(unit == "us");
    CHECK(number(b["agents"]) == agents);
    series[name] = number(b["series"]);
    bytes[name] = number(b["bytes"]);
  }
  std::set<std::string> all = hot;
  all.insert(scrape.begin(), scrape.end());
  CHECK(names == all);

  // Every scrape saw the same registry: three series per agent beside the
  // fixed set and the process metrics.
  REQUIRE(series.count("BM_collect") == 1);
  CHECK(series["BM_collect"] > 3 * agents);
  for (const auto& name : scrape)
    CHECK(series[name] == series["BM_collect"]);
  CHECK(bytes["BM_serialize_text"] > 0);
  CHECK(bytes["BM_serialize_openmetrics"] > 0);
  // A whole scrape writes what the serializer alone writes (within the
  // process metrics' changing digits).
  CHECK(bytes["BM_scrape_text"] > bytes["BM_serialize_text"] * 0.9);
  CHECK(bytes["BM_scrape_openmetrics"] > bytes["BM_serialize_openmetrics"] * 0.9);
}

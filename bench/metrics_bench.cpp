// agentvisor-bench-metrics: the cost of the metrics (issue 6) on this
// machine, with Google Benchmark. One counter increment and one histogram
// observation through the metric set's own update functions (what the actors
// call), and a scrape of the registry holding N agents' per-agent series
// plus the fixed set: collect, then serialize in each format (the issue's
// target: under 5 ms each for 1000 agents).
//
// Usage: agentvisor-bench-metrics [--agents=N] [Google Benchmark flags]
//   e.g. --benchmark_out=metrics.json --benchmark_out_format=json
// Exit code 2 on a bad option.

#include "agentvisor/metrics.hpp"

#include <benchmark/benchmark.h>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace am = agentvisor::metrics;

namespace {

int agent_count = 1000;

/// The metric set of a busy supervisor: `agent_count` agents with their
/// series set, every fixed series touched once so that no value is the
/// trivial zero.
struct scrape_state {
  std::unique_ptr<am::metrics> m;
  std::vector<am::agent_series> agents;

  scrape_state() {
    agentvisor::metrics_config cfg;
    cfg.max_agent_series = static_cast<uint32_t>(agent_count);
    m = std::make_unique<am::metrics>(cfg);
    using namespace std::chrono_literals;
    for (int i = 0; i < agent_count; ++i) {
      agents.push_back(m->add_agent("a-" + std::to_string(i)));
      am::metrics::agent_memory(agents.back(), 40000000u + static_cast<unsigned>(i) * 4096u);
      am::metrics::agent_tool_call(agents.back());
      am::metrics::agent_heartbeat_lag(agents.back(), std::chrono::microseconds(i));
      m->agent_state(std::nullopt, agentvisor::vm_state::ready);
      m->spawned(agentvisor::backend_kind::sandbox, am::spawn_result::ok,
                 std::chrono::microseconds(8000 + i));
    }
    for (std::size_t t = 0; t < am::tool_count; ++t)
      for (std::size_t o = 0; o < am::call_outcome_count; ++o)
        m->tool_call(static_cast<am::tool>(t), static_cast<am::call_outcome>(o),
                     std::chrono::microseconds(50 * (t + 1) * (o + 1)));
    for (std::size_t k = 0; k < am::fault_kind_count; ++k)
      m->fault_injected(static_cast<am::fault_kind>(k));
    m->heartbeat_lag(3ms);
  }
  ~scrape_state() {
    for (auto& a : agents)
      m->remove_agent(a);
  }

  static scrape_state& get() {
    static scrape_state s;
    return s;
  }
};

std::size_t series_of(const std::vector<prometheus::MetricFamily>& fs) {
  std::size_t n = 0;
  for (const auto& f : fs)
    n += f.metric.size();
  return n;
}

void set_scrape_counters(benchmark::State& state, const std::vector<prometheus::MetricFamily>& fs,
                         std::size_t bytes) {
  state.counters["agents"] = agent_count;
  state.counters["series"] = static_cast<double>(series_of(fs));
  state.counters["bytes"] = static_cast<double>(bytes);
}

// --- hot path -----------------------------------------------------------------------

void BM_counter_increment(benchmark::State& state) {
  agentvisor::metrics_config cfg;
  am::metrics m(cfg);
  for (auto _ : state)
    m.restarted();
}
BENCHMARK(BM_counter_increment);

void BM_histogram_observe(benchmark::State& state) {
  agentvisor::metrics_config cfg;
  am::metrics m(cfg);
  // A lag in the middle of the 11 buckets: the observation scans half of them.
  const auto lag = std::chrono::milliseconds(40);
  for (auto _ : state)
    m.heartbeat_lag(lag);
}
BENCHMARK(BM_histogram_observe);

/// A tool call as the vm_actor records it: a counter and a 19-bucket
/// histogram.
void BM_tool_call(benchmark::State& state) {
  agentvisor::metrics_config cfg;
  am::metrics m(cfg);
  const auto took = std::chrono::microseconds(300);
  for (auto _ : state)
    m.tool_call(am::tool::execute_command, am::call_outcome::ok, took);
}
BENCHMARK(BM_tool_call);

// --- scrape -------------------------------------------------------------------------

void BM_collect(benchmark::State& state) {
  auto& s = scrape_state::get();
  std::vector<prometheus::MetricFamily> fs;
  for (auto _ : state) {
    fs = s.m->collect();
    benchmark::DoNotOptimize(fs.data());
  }
  set_scrape_counters(state, fs, 0);
}
BENCHMARK(BM_collect)->Unit(benchmark::kMicrosecond);

void BM_serialize_text(benchmark::State& state) {
  auto fs = scrape_state::get().m->collect();
  std::string out;
  for (auto _ : state) {
    out = am::text_serialize(fs);
    benchmark::DoNotOptimize(out.data());
  }
  set_scrape_counters(state, fs, out.size());
}
BENCHMARK(BM_serialize_text)->Unit(benchmark::kMicrosecond);

void BM_serialize_openmetrics(benchmark::State& state) {
  auto fs = scrape_state::get().m->collect();
  std::string out;
  for (auto _ : state) {
    out = am::openmetrics_serialize(fs);
    benchmark::DoNotOptimize(out.data());
  }
  set_scrape_counters(state, fs, out.size());
}
BENCHMARK(BM_serialize_openmetrics)->Unit(benchmark::kMicrosecond);

/// A whole scrape as the api actor does it: collect, then serialize.
void BM_scrape_text(benchmark::State& state) {
  auto& s = scrape_state::get();
  std::vector<prometheus::MetricFamily> fs;
  std::string out;
  for (auto _ : state) {
    fs = s.m->collect();
    out = am::serialize(fs, am::format::text);
    benchmark::DoNotOptimize(out.data());
  }
  set_scrape_counters(state, fs, out.size());
}
BENCHMARK(BM_scrape_text)->Unit(benchmark::kMicrosecond);

void BM_scrape_openmetrics(benchmark::State& state) {
  auto& s = scrape_state::get();
  std::vector<prometheus::MetricFamily> fs;
  std::string out;
  for (auto _ : state) {
    fs = s.m->collect();
    out = am::serialize(fs, am::format::openmetrics);
    benchmark::DoNotOptimize(out.data());
  }
  set_scrape_counters(state, fs, out.size());
}
BENCHMARK(BM_scrape_openmetrics)->Unit(benchmark::kMicrosecond);

/// Takes --agents=N out of argv (Google Benchmark refuses flags it does not
/// know). False, with a message, on a bad value.
bool take_agents(int& argc, char** argv) {
  constexpr std::string_view flag = "--agents=";
  int out = 1;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a.substr(0, flag.size()) != flag) {
      argv[out++] = argv[i];
      continue;
    }
    auto v = a.substr(flag.size());
    int n = 0;
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (ec != std::errc{} || end != v.data() + v.size() || n < 0 || n > 1000000) {
      std::fprintf(stderr, "agentvisor-bench-metrics: --agents wants a count from 0 to 1000000, not '%.*s'\n",
                   static_cast<int>(v.size()), v.data());
      return false;
    }
    agent_count = n;
  }
  argc = out;
  argv[argc] = nullptr;
  return true;
}

} // namespace

int main(int argc, char** argv) {
  if (!take_agents(argc, argv))
    return 2;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv))
    return 2;
  benchmark::AddCustomContext("agents", std::to_string(agent_count));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

// The metric set of src/metrics/metrics.cpp, read back through collect():
// per-agent series and their bounds, the agents-by-state gauges, and label
// values that must equal the actors' own names for the same enums
// (messages.hpp's to_string, linked from the actors' library).

#include "agentvisor/messages.hpp"
#include "agentvisor/metrics.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace am = agentvisor::metrics;
using agentvisor::down_reason;
using agentvisor::metrics_config;
using agentvisor::vm_state;
using prometheus::MetricFamily;

namespace {

const MetricFamily* find_family(const std::vector<MetricFamily>& fs, std::string_view name) {
  for (const auto& f : fs)
    if (f.name == name)
      return &f;
  return nullptr;
}

bool labels_equal(const prometheus::ClientMetric& m, const prometheus::Labels& want) {
  if (m.label.size() != want.size())
    return false;
  for (const auto& l : m.label) {
    auto it = want.find(l.name);
    if (it == want.end() || it->second != l.value)
      return false;
  }
  return true;
}

/// The value of one series (counter, gauge, or a histogram's count), or
/// nothing when the family or the series is absent.
std::optional<double> value_of(const std::vector<MetricFamily>& fs, std::string_view family,
                               const prometheus::Labels& labels = {}) {
  const auto* f = find_family(fs, family);
  if (f == nullptr)
    return std::nullopt;
  for (const auto& m : f->metric) {
    if (!labels_equal(m, labels))
      continue;
    switch (f->type) {
    case prometheus::MetricType::Counter: return m.counter.value;
    case prometheus::MetricType::Gauge: return m.gauge.value;
    case prometheus::MetricType::Histogram: return static_cast<double>(m.histogram.sample_count);
    default: return m.untyped.value;
    }
  }
  return std::nullopt;
}

std::size_t series_count(const std::vector<MetricFamily>& fs, std::string_view family) {
  const auto* f = find_family(fs, family);
  return f == nullptr ? 0 : f->metric.size();
}

std::set<std::string> label_values(const std::vector<MetricFamily>& fs, std::string_view family,
                                   std::string_view label) {
  std::set<std::string> out;
  if (const auto* f = find_family(fs, family))
    for (const auto& m : f->metric)
      for (const auto& l : m.label)
        if (l.name == label)
          out.insert(l.value);
  return out;
}

metrics_config config(bool per_agent = true, uint32_t max = 1000) {
  metrics_config c;
  c.per_agent = per_agent;
  c.max_agent_series = max;
  return c;
}

constexpr const char* per_agent_families[] = {"agentvisor_agent_memory_bytes",
                                              "agentvisor_agent_tool_calls_total",
                                              "agentvisor_agent_heartbeat_lag_seconds"};

} // namespace

TEST_CASE("an agent's series appear with add_agent and go with remove_agent") {
  am::metrics m(config());
  auto s = m.add_agent("a-1");
  REQUIRE(static_cast<bool>(s));
  am::metrics::agent_memory(s, 123456789);
  am::metrics::agent_tool_call(s);
  am::metrics::agent_tool_call(s);
  am::metrics::agent_heartbeat_lag(s, std::chrono::milliseconds(250));
  auto fs = m.registry().Collect();
  CHECK(value_of(fs, "agentvisor_agent_memory_bytes", {{"agent", "a-1"}}) == 123456789.0);
  CHECK(value_of(fs, "agentvisor_agent_tool_calls_total", {{"agent", "a-1"}}) == 2.0);
  CHECK(value_of(fs, "agentvisor_agent_heartbeat_lag_seconds", {{"agent", "a-1"}}) == 0.25);

  m.remove_agent(s);
  CHECK_FALSE(static_cast<bool>(s));
  fs = m.registry().Collect();
  // (prometheus-cpp's Collect leaves a family without series out entirely.)
  for (const char* name : per_agent_families)
    CHECK_MESSAGE(series_count(fs, name) == 0, name);
  // Updates through the emptied handle and a second removal are harmless.
  am::metrics::agent_memory(s, 1);
  am::metrics::agent_tool_call(s);
  m.remove_agent(s);
  CHECK(series_count(m.registry().Collect(), "agentvisor_agent_memory_bytes") == 0);
}

TEST_CASE("a VM's available memory gets its series on the first report, and goes with the agent") {
  am::metrics m(config());
  auto vm = m.add_agent("vm-1");
  auto sb = m.add_agent("sb-1");
  REQUIRE(static_cast<bool>(vm));
  // Nobody reported yet: no series, not even a zero.
  CHECK(series_count(m.registry().Collect(), "agentvisor_agent_machine_available_bytes") == 0);
  m.agent_machine_available(vm, "vm-1", 100ull << 20);
  m.agent_machine_available(vm, "vm-1", 90ull << 20);
  auto fs = m.registry().Collect();
  CHECK(series_count(fs, "agentvisor_agent_machine_available_bytes") == 1);
  CHECK(value_of(fs, "agentvisor_agent_machine_available_bytes", {{"agent", "vm-1"}})
        == static_cast<double>(90ull << 20));
  m.remove_agent(vm);
  m.remove_agent(sb);
  CHECK(series_count(m.registry().Collect(), "agentvisor_agent_machine_available_bytes") == 0);
  // A handle without series (dropped, or removed) takes reports harmlessly.
  m.agent_machine_available(vm, "vm-1", 1);
  CHECK(series_count(m.registry().Collect(), "agentvisor_agent_machine_available_bytes") == 0);
}

TEST_CASE("per-agent series stop at max_agent_series and the dropped counter counts the rest") {
  am::metrics m(config(true, 3));
  std::vector<am::agent_series> got;
  for (int i = 0; i < 5; ++i)
    got.push_back(m.add_agent("a-" + std::to_string(i)));
  CHECK(std::count_if(got.begin(), got.end(), [](const auto& s) { return bool(s); }) == 3);
  CHECK_FALSE(static_cast<bool>(got[3]));
  CHECK_FALSE(static_cast<bool>(got[4]));
  auto fs = m.registry().Collect();
  for (const char* name : per_agent_families)
    CHECK(series_count(fs, name) == 3);
  CHECK(value_of(fs, "agentvisor_agent_series_dropped_total") == 2.0);
  CHECK(label_values(fs, "agentvisor_agent_memory_bytes", "agent")
        == std::set<std::string>{"a-0", "a-1", "a-2"});

  // A slot freed by a removal is taken by the next agent.
  m.remove_agent(got[1]);
  auto again = m.add_agent("a-9");
  CHECK(static_cast<bool>(again));
  fs = m.registry().Collect();
  CHECK(label_values(fs, "agentvisor_agent_memory_bytes", "agent")
        == std::set<std::string>{"a-0", "a-2", "a-9"});
  CHECK(value_of(fs, "agentvisor_agent_series_dropped_total") == 2.0);
  for (auto& s : got)
    m.remove_agent(s);
  m.remove_agent(again);
  CHECK(series_count(m.registry().Collect(), "agentvisor_agent_memory_bytes") == 0);
}

TEST_CASE("a second agent with a live agent's id gets no series and cannot remove the first's") {
  am::metrics m(config());
  auto first = m.add_agent("a-1");
  auto namesake = m.add_agent("a-1");
  REQUIRE(static_cast<bool>(first));
  CHECK_FALSE(static_cast<bool>(namesake));
  am::metrics::agent_memory(first, 77);
  m.remove_agent(namesake);
  auto fs = m.registry().Collect();
  CHECK(value_of(fs, "agentvisor_agent_memory_bytes", {{"agent", "a-1"}}) == 77.0);
  CHECK(value_of(fs, "agentvisor_agent_series_dropped_total") == 1.0);
  // The refused namesake did not use up a slot: with the cap at 2, two more fit.
  am::metrics capped(config(true, 2));
  auto x = capped.add_agent("x");
  auto x2 = capped.add_agent("x");
  auto y = capped.add_agent("y");
  CHECK(static_cast<bool>(x));
  CHECK_FALSE(static_cast<bool>(x2));
  CHECK(static_cast<bool>(y));
  // Once the first is gone, the id can be used again.
  m.remove_agent(first);
  auto later = m.add_agent("a-1");
  CHECK(static_cast<bool>(later));
  m.remove_agent(later);
  capped.remove_agent(x);
  capped.remove_agent(y);
}

TEST_CASE("with per_agent off no agent gets series and none counts as dropped") {
  am::metrics m(config(false));
  auto s = m.add_agent("a-1");
  CHECK_FALSE(static_cast<bool>(s));
  am::metrics::agent_memory(s, 5);
  am::metrics::agent_tool_call(s);
  am::metrics::agent_heartbeat_lag(s, std::chrono::seconds(1));
  auto fs = m.registry().Collect();
  for (const char* name : per_agent_families)
    CHECK(series_count(fs, name) == 0);
  CHECK(value_of(fs, "agentvisor_agent_series_dropped_total") == 0.0);
  m.remove_agent(s);
}

TEST_CASE("agent_state transitions move the agentvisor_agents{state} gauges") {
  am::metrics m(config());
  auto state = [&](vm_state s) {
    return value_of(m.registry().Collect(), "agentvisor_agents",
                    {{"state", std::string(agentvisor::to_string(s))}})
      .value_or(-1);
  };
  m.agent_state(std::nullopt, vm_state::spawning);
  m.agent_state(std::nullopt, vm_state::spawning);
  CHECK(state(vm_state::spawning) == 2);
  m.agent_state(vm_state::spawning, vm_state::ready);
  CHECK(state(vm_state::spawning) == 1);
  CHECK(state(vm_state::ready) == 1);
  m.agent_state(vm_state::ready, vm_state::busy);
  CHECK(state(vm_state::ready) == 0);
  CHECK(state(vm_state::busy) == 1);
  m.agent_state(vm_state::busy, vm_state::draining);
  m.agent_state(vm_state::draining, vm_state::stopped);
  m.agent_state(vm_state::spawning, vm_state::failed);
  CHECK(state(vm_state::busy) == 0);
  CHECK(state(vm_state::draining) == 0);
  CHECK(state(vm_state::stopped) == 1);
  CHECK(state(vm_state::failed) == 1);
  CHECK(state(vm_state::spawning) == 0);
  // Gone: the actor ended.
  m.agent_state(vm_state::stopped, std::nullopt);
  m.agent_state(vm_state::failed, std::nullopt);
  auto fs = m.registry().Collect();
  for (const auto& mt : find_family(fs, "agentvisor_agents")->metric)
    CHECK(mt.gauge.value == 0);
}

TEST_CASE("the state and down-reason label values are the actors' own names") {
  am::metrics m(config());
  auto fs = m.registry().Collect();
  std::set<std::string> states;
  for (std::size_t i = 0; i < am::vm_state_count; ++i)
    states.insert(std::string(agentvisor::to_string(static_cast<vm_state>(i))));
  CHECK(label_values(fs, "agentvisor_agents", "state") == states);

  // Each reason counts under its own name (down_reason starts at 1).
  std::set<std::string> reasons;
  for (std::size_t i = 1; i <= am::down_reason_count; ++i) {
    auto r = static_cast<down_reason>(i);
    auto name = std::string(agentvisor::to_string(r));
    reasons.insert(name);
    for (std::size_t k = 0; k < i; ++k)
      m.agent_down(r);
    INFO(name);
    CHECK(value_of(m.registry().Collect(), "agentvisor_agent_downs_total", {{"reason", name}})
          == static_cast<double>(i));
  }
  CHECK(label_values(m.registry().Collect(), "agentvisor_agent_downs_total", "reason") == reasons);

  // Backends are named as the configuration names them.
  std::set<std::string> backends;
  for (std::size_t b = 0; b < am::backend_count; ++b)
    backends.insert(std::string(agentvisor::to_string(static_cast<agentvisor::backend_kind>(b))));
  CHECK(label_values(fs, "agentvisor_spawns_total", "backend") == backends);
}

TEST_CASE("the update functions reach their series") {
  am::metrics m(config());
  using namespace std::chrono_literals;
  m.spawned(agentvisor::backend_kind::sandbox, am::spawn_result::ok, 20ms);
  m.spawned(agentvisor::backend_kind::sandbox, am::spawn_result::failed, 5s);
  m.tool_call(am::tool_from("read_file"), am::call_outcome::ok, 100us);
  m.tool_call(am::tool_from("no_such_tool"), am::call_outcome::refused, 1us);
  m.restarted();
  m.oom_kill();
  m.pool_size(2, 3);
  m.pool_handout();
  m.pool_miss();
  m.grant_refused(am::refusal::over_budget);
  m.queued(4);
  m.fault_injected(am::fault_kind_from("cpu_hog"));
  m.fault_injected(am::fault_kind_from("nonsense"));
  auto fs = m.registry().Collect();
  CHECK(value_of(fs, "agentvisor_spawns_total", {{"backend", "sandbox"}, {"result", "ok"}}) == 1.0);
  CHECK(value_of(fs, "agentvisor_spawns_total", {{"backend", "sandbox"}, {"result", "failed"}}) == 1.0);
  // Only a spawn that became ready is timed.
  CHECK(value_of(fs, "agentvisor_spawn_duration_seconds", {{"backend", "sandbox"}}) == 1.0);
  CHECK(value_of(fs, "agentvisor_tool_calls_total", {{"tool", "read_file"}, {"outcome", "ok"}}) == 1.0);
  CHECK(value_of(fs, "agentvisor_tool_calls_total", {{"tool", "other"}, {"outcome", "refused"}}) == 1.0);
  CHECK(value_of(fs, "agentvisor_tool_call_duration_seconds", {{"tool", "read_file"}}) == 1.0);
  CHECK(value_of(fs, "agentvisor_restarts_total") == 1.0);
  CHECK(value_of(fs, "agentvisor_oom_kills_total") == 1.0);
  CHECK(value_of(fs, "agentvisor_pool_ready_agents") == 2.0);
  CHECK(value_of(fs, "agentvisor_pool_target_agents") == 3.0);
  CHECK(value_of(fs, "agentvisor_governor_refusals_total", {{"reason", "over_budget"}}) == 1.0);
  CHECK(value_of(fs, "agentvisor_governor_queued_requests") == 4.0);
  CHECK(value_of(fs, "agentvisor_chaos_faults_total", {{"kind", "cpu_hog"}}) == 1.0);
  CHECK(value_of(fs, "agentvisor_chaos_faults_total", {{"kind", "other"}}) == 1.0);
}

TEST_CASE("collect() adds the process metrics to the registry's families") {
  am::metrics m(config());
  auto fs = m.collect();
  CHECK(find_family(fs, "agentvisor_agents") != nullptr);
  CHECK(find_family(fs, "process_resident_memory_bytes") != nullptr);
  CHECK(find_family(fs, "process_cpu_seconds_total") != nullptr);
  // Names are unique across the two sources.
  std::set<std::string> names;
  for (const auto& f : fs)
    CHECK_MESSAGE(names.insert(f.name).second, f.name);
}

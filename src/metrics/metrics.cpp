// The metric set: every family built once, every fixed-label series resolved
// once, so that the update functions are array lookups plus prometheus-cpp's
// atomic add. docs/metrics.md documents each metric.
#include "agentvisor/metrics.hpp"

#include <algorithm>
#include <utility>

namespace agentvisor::metrics {

namespace {

template <class E, std::size_t N>
constexpr std::size_t idx(E x) noexcept {
  auto i = static_cast<std::size_t>(x);
  return i < N ? i : N - 1;
}

constexpr std::array<std::string_view, tool_count> tool_names{
  "read_file", "write_file", "search", "list_directory", "execute_command", "other"};
constexpr std::array<std::string_view, call_outcome_count> outcome_names{
  "ok", "tool_error", "timeout", "agent_down", "refused"};
constexpr std::array<std::string_view, spawn_result_count> spawn_result_names{"ok", "failed"};
constexpr std::array<std::string_view, refusal_count> refusal_names{
  "over_budget", "budget_timeout", "bad_request", "draining"};
constexpr std::array<std::string_view, fault_kind_count> fault_names{
  "kill",      "crash",     "hang",      "oom",   "partition", "spawn_failure", "slow_spawn",
  "cpu_hog",   "disk_fill", "fork_bomb", "governor_pressure", "exit", "abort", "garbage",
  "other"};

// The label values of enums declared in messages.hpp, spelled as their
// to_string does (tests compare the two); kept here so that this library
// needs no actor code.
constexpr std::array<std::string_view, vm_state_count> state_names{
  "spawning", "ready", "busy", "draining", "stopped", "failed"};
constexpr std::array<std::string_view, down_reason_count> down_names{
  "stopped", "exited", "crashed", "oom", "hung", "protocol_error", "spawn_failed", "evicted"};

std::string str(std::string_view s) {
  return std::string{s};
}

double seconds(std::chrono::nanoseconds d) noexcept {
  return std::chrono::duration<double>(d).count();
}

/// Bucket bounds in seconds: spawns are milliseconds here (sandbox) and
/// seconds under TCG (qemu), tool calls tens of microseconds to seconds.
prometheus::Histogram::BucketBoundaries spawn_buckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
}
prometheus::Histogram::BucketBoundaries call_buckets() {
  return {0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
          0.01,    0.025,    0.05,    0.1,    0.25,    0.5,    1,     2.5,    5,     10};
}
prometheus::Histogram::BucketBoundaries lag_buckets() {
  return {0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

} // namespace

std::string_view to_string(tool x) noexcept {
  return tool_names[idx<tool, tool_count>(x)];
}
tool tool_from(std::string_view name) noexcept {
  auto it = std::find(tool_names.begin(), tool_names.end(), name);
  return it == tool_names.end() ? tool::other
                                : static_cast<tool>(std::distance(tool_names.begin(), it));
}
std::string_view to_string(call_outcome x) noexcept {
  return outcome_names[idx<call_outcome, call_outcome_count>(x)];
}
std::string_view to_string(spawn_result x) noexcept {
  return spawn_result_names[idx<spawn_result, spawn_result_count>(x)];
}
std::string_view to_string(refusal x) noexcept {
  return refusal_names[idx<refusal, refusal_count>(x)];
}
std::string_view to_string(fault_kind x) noexcept {
  return fault_names[idx<fault_kind, fault_kind_count>(x)];
}
fault_kind fault_kind_from(std::string_view name) noexcept {
  auto it = std::find(fault_names.begin(), fault_names.end(), name);
  return it == fault_names.end() ? fault_kind::other
                                 : static_cast<fault_kind>(std::distance(fault_names.begin(), it));
}

/// Every family, and the series with fixed labels resolved into arrays.
struct metrics::families {
  explicit families(prometheus::Registry& r)
    : agents(prometheus::BuildGauge()
               .Name("agentvisor_agents")
               .Help("Agents by the phase of their vm_actor.")
               .Register(r)),
      spawns(prometheus::BuildCounter()
               .Name("agentvisor_spawns_total")
               .Help("Machine spawns by backend and result (failed: never became ready).")
               .Register(r)),
      spawn_duration(prometheus::BuildHistogram()
                       .Name("agentvisor_spawn_duration_seconds")
                       .Help("Time from a spawn request to the guest's ready line.")
                       .Register(r)),
      restarts(prometheus::BuildCounter()
                 .Name("agentvisor_restarts_total")
                 .Help("Children the spawner restarted after they went down.")
                 .Register(r)),
      downs(prometheus::BuildCounter()
              .Name("agentvisor_agent_downs_total")
              .Help("Agent machines that went down, by reason.")
              .Register(r)),
      oom_kills(prometheus::BuildCounter()
                  .Name("agentvisor_oom_kills_total")
                  .Help("OOM kills inside agent cgroups (the guest's or a command's).")
                  .Register(r)),
      tool_calls(prometheus::BuildCounter()
                   .Name("agentvisor_tool_calls_total")
                   .Help("Tool calls answered, by tool and outcome.")
                   .Register(r)),
      tool_duration(prometheus::BuildHistogram()
                      .Name("agentvisor_tool_call_duration_seconds")
                      .Help("Time from a tool call's arrival at the vm_actor to its answer.")
                      .Register(r)),
      heartbeat_lag(prometheus::BuildHistogram()
                      .Name("agentvisor_heartbeat_lag_seconds")
                      .Help("How much later than its interval each guest heartbeat arrived.")
                      .Register(r)),
      pool_ready(prometheus::BuildGauge()
                   .Name("agentvisor_pool_ready_agents")
                   .Help("Warm pool members ready to be handed out.")
                   .Register(r)),
      pool_target(prometheus::BuildGauge()
                    .Name("agentvisor_pool_target_agents")
                    .Help("The warm pool's configured size (pool.warm).")
                    .Register(r)),
      pool_handouts(prometheus::BuildCounter()
                      .Name("agentvisor_pool_handouts_total")
                      .Help("Starts and restarts served by a ready warm pool member.")
                      .Register(r)),
      pool_misses(prometheus::BuildCounter()
                    .Name("agentvisor_pool_misses_total")
                    .Help("Starts and restarts of the pool's spec that found no ready member.")
                    .Register(r)),
      budget(prometheus::BuildGauge()
               .Name("agentvisor_governor_budget")
               .Help("The host budget the governor grants from, by resource.")
               .Register(r)),
      budget_bytes(prometheus::BuildGauge()
                     .Name("agentvisor_governor_budget_memory_bytes")
                     .Help("The memory the governor may grant to agents.")
                     .Register(r)),
      granted(prometheus::BuildGauge()
                .Name("agentvisor_governor_granted")
                .Help("Held grants' sum, by resource.")
                .Register(r)),
      granted_bytes(prometheus::BuildGauge()
                      .Name("agentvisor_governor_granted_memory_bytes")
                      .Help("Memory reserved by the grants agents hold.")
                      .Register(r)),
      grants(prometheus::BuildCounter()
               .Name("agentvisor_governor_grants_total")
               .Help("Grants the governor gave.")
               .Register(r)),
      refused(prometheus::BuildCounter()
                .Name("agentvisor_governor_refusals_total")
                .Help("Grant requests the governor refused, by reason.")
                .Register(r)),
      queued(prometheus::BuildGauge()
               .Name("agentvisor_governor_queued_requests")
               .Help("Grant requests waiting for room.")
               .Register(r)),
      in_use(prometheus::BuildGauge()
               .Name("agentvisor_agents_memory_bytes")
               .Help("Memory agents use now, summed from their cgroups.")
               .Register(r)),
      host_available(prometheus::BuildGauge()
                       .Name("agentvisor_host_memory_available_bytes")
                       .Help("The host's MemAvailable at the governor's last check.")
                       .Register(r)),
      evictions(prometheus::BuildCounter()
                  .Name("agentvisor_governor_evictions_total")
                  .Help("Agents the governor evicted under memory pressure.")
                  .Register(r)),
      faults(prometheus::BuildCounter()
               .Name("agentvisor_chaos_faults_total")
               .Help("Chaos faults injected, by kind.")
               .Register(r)),
      agent_memory(prometheus::BuildGauge()
                     .Name("agentvisor_agent_memory_bytes")
                     .Help("One agent's memory use (metrics.per_agent).")
                     .Register(r)),
      agent_calls(prometheus::BuildCounter()
                    .Name("agentvisor_agent_tool_calls_total")
                    .Help("One agent's tool calls answered (metrics.per_agent).")
                    .Register(r)),
      agent_lag(prometheus::BuildGauge()
                  .Name("agentvisor_agent_heartbeat_lag_seconds")
                  .Help("One agent's last heartbeat lag (metrics.per_agent).")
                  .Register(r)),
      agent_machine_available(prometheus::BuildGauge()
                                .Name("agentvisor_agent_machine_available_bytes")
                                .Help("Memory available in one agent's VM, from qemu's balloon "
                                      "statistics (metrics.per_agent; qemu agents only).")
                                .Register(r)),
      agent_series_dropped(prometheus::BuildCounter()
                             .Name("agentvisor_agent_series_dropped_total")
                             .Help("Agents that got no per-agent series: "
                                   "metrics.max_agent_series was reached, or a live "
                                   "agent already had series under that id.")
                             .Register(r)) {
    for (std::size_t s = 0; s < vm_state_count; ++s)
      state_gauges[s] = &agents.Add({{"state", str(state_names[s])}});
    for (std::size_t b = 0; b < backend_count; ++b) {
      auto bn = str(to_string(static_cast<backend_kind>(b)));
      for (std::size_t x = 0; x < spawn_result_count; ++x)
        spawn_counters[b][x] = &spawns.Add(
          {{"backend", bn}, {"result", str(to_string(static_cast<spawn_result>(x)))}});
      spawn_hist[b] = &spawn_duration.Add({{"backend", bn}}, spawn_buckets());
    }
    for (std::size_t d = 0; d < down_reason_count; ++d)
      down_counters[d]
        = &downs.Add({{"reason", str(down_names[d])}});
    for (std::size_t t = 0; t < tool_count; ++t) {
      auto tn = str(tool_names[t]);
      for (std::size_t o = 0; o < call_outcome_count; ++o)
        call_counters[t][o] = &tool_calls.Add({{"tool", tn}, {"outcome", str(outcome_names[o])}});
      call_hist[t] = &tool_duration.Add({{"tool", tn}}, call_buckets());
    }
    for (std::size_t x = 0; x < refusal_count; ++x)
      refusal_counters[x] = &refused.Add({{"reason", str(refusal_names[x])}});
    for (std::size_t k = 0; k < fault_kind_count; ++k)
      fault_counters[k] = &faults.Add({{"kind", str(fault_names[k])}});
    for (std::size_t i = 0; i < resource_names.size(); ++i) {
      budget_gauges[i] = &budget.Add({{"resource", str(resource_names[i])}});
      granted_gauges[i] = &granted.Add({{"resource", str(resource_names[i])}});
    }
    restart_counter = &restarts.Add({});
    oom_counter = &oom_kills.Add({});
    lag_hist = &heartbeat_lag.Add({}, lag_buckets());
    pool_ready_gauge = &pool_ready.Add({});
    pool_target_gauge = &pool_target.Add({});
    handout_counter = &pool_handouts.Add({});
    miss_counter = &pool_misses.Add({});
    budget_bytes_gauge = &budget_bytes.Add({});
    granted_bytes_gauge = &granted_bytes.Add({});
    grant_counter = &grants.Add({});
    queued_gauge = &queued.Add({});
    in_use_gauge = &in_use.Add({});
    host_available_gauge = &host_available.Add({});
    eviction_counter = &evictions.Add({});
    dropped_counter = &agent_series_dropped.Add({});
  }

  /// Count-like budget resources; memory has its own _bytes family.
  static constexpr std::array<std::string_view, 3> resource_names{"agents", "cpus", "pids"};

  prometheus::Family<prometheus::Gauge>& agents;
  prometheus::Family<prometheus::Counter>& spawns;
  prometheus::Family<prometheus::Histogram>& spawn_duration;
  prometheus::Family<prometheus::Counter>& restarts;
  prometheus::Family<prometheus::Counter>& downs;
  prometheus::Family<prometheus::Counter>& oom_kills;
  prometheus::Family<prometheus::Counter>& tool_calls;
  prometheus::Family<prometheus::Histogram>& tool_duration;
  prometheus::Family<prometheus::Histogram>& heartbeat_lag;
  prometheus::Family<prometheus::Gauge>& pool_ready;
  prometheus::Family<prometheus::Gauge>& pool_target;
  prometheus::Family<prometheus::Counter>& pool_handouts;
  prometheus::Family<prometheus::Counter>& pool_misses;
  prometheus::Family<prometheus::Gauge>& budget;
  prometheus::Family<prometheus::Gauge>& budget_bytes;
  prometheus::Family<prometheus::Gauge>& granted;
  prometheus::Family<prometheus::Gauge>& granted_bytes;
  prometheus::Family<prometheus::Counter>& grants;
  prometheus::Family<prometheus::Counter>& refused;
  prometheus::Family<prometheus::Gauge>& queued;
  prometheus::Family<prometheus::Gauge>& in_use;
  prometheus::Family<prometheus::Gauge>& host_available;
  prometheus::Family<prometheus::Counter>& evictions;
  prometheus::Family<prometheus::Counter>& faults;
  prometheus::Family<prometheus::Gauge>& agent_memory;
  prometheus::Family<prometheus::Counter>& agent_calls;
  prometheus::Family<prometheus::Gauge>& agent_lag;
  prometheus::Family<prometheus::Gauge>& agent_machine_available;
  prometheus::Family<prometheus::Counter>& agent_series_dropped;

  std::array<prometheus::Gauge*, vm_state_count> state_gauges{};
  std::array<std::array<prometheus::Counter*, spawn_result_count>, backend_count> spawn_counters{};
  std::array<prometheus::Histogram*, backend_count> spawn_hist{};
  std::array<prometheus::Counter*, down_reason_count> down_counters{};
  std::array<std::array<prometheus::Counter*, call_outcome_count>, tool_count> call_counters{};
  std::array<prometheus::Histogram*, tool_count> call_hist{};
  std::array<prometheus::Counter*, refusal_count> refusal_counters{};
  std::array<prometheus::Counter*, fault_kind_count> fault_counters{};
  std::array<prometheus::Gauge*, resource_names.size()> budget_gauges{};
  std::array<prometheus::Gauge*, resource_names.size()> granted_gauges{};
  prometheus::Counter* restart_counter = nullptr;
  prometheus::Counter* oom_counter = nullptr;
  prometheus::Histogram* lag_hist = nullptr;
  prometheus::Gauge* pool_ready_gauge = nullptr;
  prometheus::Gauge* pool_target_gauge = nullptr;
  prometheus::Counter* handout_counter = nullptr;
  prometheus::Counter* miss_counter = nullptr;
  prometheus::Gauge* budget_bytes_gauge = nullptr;
  prometheus::Gauge* granted_bytes_gauge = nullptr;
  prometheus::Counter* grant_counter = nullptr;
  prometheus::Gauge* queued_gauge = nullptr;
  prometheus::Gauge* in_use_gauge = nullptr;
  prometheus::Gauge* host_available_gauge = nullptr;
  prometheus::Counter* eviction_counter = nullptr;
  prometheus::Counter* dropped_counter = nullptr;
};

metrics::metrics(const metrics_config& cfg)
  : cfg_(cfg),
    registry_(std::make_shared<prometheus::Registry>()),
    f_(std::make_unique<families>(*registry_)) {
}

metrics::~metrics() = default;

void metrics::agent_state(std::optional<vm_state> from, std::optional<vm_state> to) noexcept {
  if (from)
    f_->state_gauges[idx<vm_state, vm_state_count>(*from)]->Decrement();
  if (to)
    f_->state_gauges[idx<vm_state, vm_state_count>(*to)]->Increment();
}

void metrics::spawned(backend_kind b, spawn_result r, std::chrono::nanoseconds took) noexcept {
  auto bi = idx<backend_kind, backend_count>(b);
  f_->spawn_counters[bi][idx<spawn_result, spawn_result_count>(r)]->Increment();
  if (r == spawn_result::ok)
    f_->spawn_hist[bi]->Observe(seconds(took));
}

void metrics::agent_down(down_reason r) noexcept {
  auto i = static_cast<std::size_t>(r);
  if (i >= 1 && i <= down_reason_count)
    f_->down_counters[i - 1]->Increment();
}

void metrics::restarted() noexcept {
  f_->restart_counter->Increment();
}

void metrics::oom_kill() noexcept {
  f_->oom_counter->Increment();
}

void metrics::tool_call(tool t, call_outcome o, std::chrono::nanoseconds took) noexcept {
  auto ti = idx<tool, tool_count>(t);
  f_->call_counters[ti][idx<call_outcome, call_outcome_count>(o)]->Increment();
  // A refusal never reached the guest: its "latency" would only drag the
  // quantiles down.
  if (o != call_outcome::refused)
    f_->call_hist[ti]->Observe(seconds(took));
}

void metrics::heartbeat_lag(std::chrono::nanoseconds lag) noexcept {
  f_->lag_hist->Observe(seconds(std::max(lag, std::chrono::nanoseconds{0})));
}

void metrics::pool_size(std::size_t ready, std::size_t target) noexcept {
  f_->pool_ready_gauge->Set(static_cast<double>(ready));
  f_->pool_target_gauge->Set(static_cast<double>(target));
}

void metrics::pool_handout() noexcept {
  f_->handout_counter->Increment();
}

void metrics::pool_miss() noexcept {
  f_->miss_counter->Increment();
}

void metrics::budget(const agentvisor::budget& total) noexcept {
  f_->budget_bytes_gauge->Set(static_cast<double>(total.memory_bytes));
  f_->budget_gauges[0]->Set(total.agents);
  f_->budget_gauges[1]->Set(total.cpus);
  f_->budget_gauges[2]->Set(total.pids);
}

void metrics::granted(const agentvisor::budget& used, uint32_t holders) noexcept {
  f_->granted_bytes_gauge->Set(static_cast<double>(used.memory_bytes));
  f_->granted_gauges[0]->Set(holders);
  f_->granted_gauges[1]->Set(used.cpus);
  f_->granted_gauges[2]->Set(used.pids);
}

void metrics::grant_given() noexcept {
  f_->grant_counter->Increment();
}

void metrics::grant_refused(refusal r) noexcept {
  f_->refusal_counters[idx<refusal, refusal_count>(r)]->Increment();
}

void metrics::queued(uint32_t n) noexcept {
  f_->queued_gauge->Set(n);
}

void metrics::memory_in_use(uint64_t bytes) noexcept {
  f_->in_use_gauge->Set(static_cast<double>(bytes));
}

void metrics::host_available(uint64_t bytes) noexcept {
  f_->host_available_gauge->Set(static_cast<double>(bytes));
}

void metrics::eviction() noexcept {
  f_->eviction_counter->Increment();
}

void metrics::fault_injected(fault_kind k) noexcept {
  f_->fault_counters[idx<fault_kind, fault_kind_count>(k)]->Increment();
}

agent_series metrics::add_agent(const std::string& agent_id) {
  if (!cfg_.per_agent)
    return {};
  // Reserve a slot first so that concurrent adds never exceed the cap.
  if (agent_series_live_.fetch_add(1, std::memory_order_relaxed) >= cfg_.max_agent_series) {
    agent_series_live_.fetch_sub(1, std::memory_order_relaxed);
    f_->dropped_counter->Increment();
    return {};
  }
  prometheus::Labels labels{{"agent", agent_id}};
  // Family::Add would hand back the live series of a namesake, whose
  // removal would then pull it from under the other owner.
  if (f_->agent_memory.Has(labels)) {
    agent_series_live_.fetch_sub(1, std::memory_order_relaxed);
    f_->dropped_counter->Increment();
    return {};
  }
  agent_series s;
  s.memory_bytes = &f_->agent_memory.Add(labels);
  s.tool_calls = &f_->agent_calls.Add(labels);
  s.heartbeat_lag_seconds = &f_->agent_lag.Add(labels);
  return s;
}

void metrics::remove_agent(agent_series& s) {
  if (!s)
    return;
  f_->agent_memory.Remove(s.memory_bytes);
  f_->agent_calls.Remove(s.tool_calls);
  f_->agent_lag.Remove(s.heartbeat_lag_seconds);
  if (s.machine_available_bytes != nullptr)
    f_->agent_machine_available.Remove(s.machine_available_bytes);
  s = {};
  agent_series_live_.fetch_sub(1, std::memory_order_relaxed);
}

void metrics::agent_machine_available(agent_series& s, const std::string& agent_id,
                                      uint64_t bytes) {
  if (!s)
    return;
  if (s.machine_available_bytes == nullptr)
    s.machine_available_bytes = &f_->agent_machine_available.Add({{"agent", agent_id}});
  s.machine_available_bytes->Set(static_cast<double>(bytes));
}

void metrics::agent_memory(const agent_series& s, uint64_t bytes) noexcept {
  if (s.memory_bytes != nullptr)
    s.memory_bytes->Set(static_cast<double>(bytes));
}

void metrics::agent_tool_call(const agent_series& s) noexcept {
  if (s.tool_calls != nullptr)
    s.tool_calls->Increment();
}

void metrics::agent_heartbeat_lag(const agent_series& s, std::chrono::nanoseconds lag) noexcept {
  if (s.heartbeat_lag_seconds != nullptr)
    s.heartbeat_lag_seconds->Set(seconds(std::max(lag, std::chrono::nanoseconds{0})));
}

std::vector<prometheus::MetricFamily> metrics::collect() const {
  auto out = registry_->Collect();
  auto proc = process_families();
  out.insert(out.end(), std::make_move_iterator(proc.begin()), std::make_move_iterator(proc.end()));
  return out;
}

} // namespace agentvisor::metrics

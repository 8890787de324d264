#pragma once
/// metrics: the supervisor's Prometheus metrics, on prometheus-cpp.
///
/// One `metrics` object per supervisor owns the prometheus::Registry and
/// every family (docs/metrics.md lists them). The actors hold a
/// std::shared_ptr<metrics> (null: no metrics, as in most tests) and update
/// series resolved up front, in arrays indexed by our enums, so an update on
/// a hot path is one atomic operation inside prometheus-cpp: no allocation,
/// no map lookup and no lock of ours. (A histogram observation takes
/// prometheus-cpp's own per-series mutex.)
///
/// Serialization happens only at scrape time, in the api actor: text format
/// 0.0.4 through prometheus-cpp's TextSerializer, OpenMetrics 1.0 through
/// our serializer (openmetrics_serialize), chosen by the Accept header.
///
/// The registry is the one object the actors share; prometheus-cpp makes it
/// thread-safe. The I/O thread never touches it: a scrape is a message to
/// the api actor like every other request.

#include "agentvisor/config.hpp"
#include "agentvisor/messages.hpp"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace agentvisor::metrics {

// --- Label values, as enums so that hot paths index arrays ---------------------

/// The tools of the guest protocol; anything else counts as `other`.
enum class tool : uint8_t { read_file, write_file, search, list_directory, execute_command, other };
inline constexpr std::size_t tool_count = 6;
std::string_view to_string(tool x) noexcept;
tool tool_from(std::string_view name) noexcept;

/// How a tool call ended, as the caller saw it: ok; tool_error (the tool ran
/// and failed, e.g. a missing file); timeout; agent_down (the agent died
/// holding it); refused (draining, bad request, over the bound).
enum class call_outcome : uint8_t { ok, tool_error, timeout, agent_down, refused };
inline constexpr std::size_t call_outcome_count = 5;
std::string_view to_string(call_outcome x) noexcept;

enum class spawn_result : uint8_t { ok, failed };
inline constexpr std::size_t spawn_result_count = 2;
std::string_view to_string(spawn_result x) noexcept;

inline constexpr std::size_t backend_count = 3;     // backend_kind
inline constexpr std::size_t vm_state_count = 6;    // vm_state
inline constexpr std::size_t down_reason_count = 8; // down_reason

/// Why the governor refused a grant (the errc it answered with).
enum class refusal : uint8_t { over_budget, budget_timeout, bad_request, draining };
inline constexpr std::size_t refusal_count = 4;
std::string_view to_string(refusal x) noexcept;

/// Chaos fault kinds (issue "chaos runs") plus the guest's own fault names;
/// an unknown name counts as `other`.
enum class fault_kind : uint8_t {
  kill, crash, hang, oom, partition, spawn_failure, slow_spawn, cpu_hog, disk_fill,
  fork_bomb, governor_pressure, exit, abort, garbage, other
};
inline constexpr std::size_t fault_kind_count = 15;
std::string_view to_string(fault_kind x) noexcept;
fault_kind fault_kind_from(std::string_view name) noexcept;

// --- Per-agent series -------------------------------------------------------------

/// One agent's own series, present while the agent lives (metrics.per_agent,
/// at most metrics.max_agent_series of them). Every pointer is null when the
/// agent got none; the update functions below accept that.
struct agent_series {
  prometheus::Gauge* memory_bytes = nullptr;
  prometheus::Counter* tool_calls = nullptr;
  prometheus::Gauge* heartbeat_lag_seconds = nullptr;
  /// Only for agents in a VM whose backend reports it (qemu): made on the
  /// first report.
  prometheus::Gauge* machine_available_bytes = nullptr;

  explicit operator bool() const noexcept { return memory_bytes != nullptr; }
};

// --- The metric set -----------------------------------------------------------------

class metrics {
public:
  /// Builds every family and series of the set. `cfg.per_agent` and
  /// `cfg.max_agent_series` bound the per-agent series.
  explicit metrics(const metrics_config& cfg);
  ~metrics();
  metrics(const metrics&) = delete;
  metrics& operator=(const metrics&) = delete;

  prometheus::Registry& registry() noexcept { return *registry_; }
  std::shared_ptr<prometheus::Registry> registry_ptr() const noexcept { return registry_; }

  // Agents and spawns (vm_actor, spawner).

  /// A vm_actor moved from `from` to `to` (agentvisor_agents{state}).
  /// `from` empty: it was just created.
  void agent_state(std::optional<vm_state> from, std::optional<vm_state> to) noexcept;
  void spawned(backend_kind b, spawn_result r, std::chrono::nanoseconds took) noexcept;
  void agent_down(down_reason r) noexcept;
  void restarted() noexcept;
  void oom_kill() noexcept;
  void tool_call(tool t, call_outcome o, std::chrono::nanoseconds took) noexcept;
  /// A heartbeat came `lag` later than its interval promised (0 if on time).
  void heartbeat_lag(std::chrono::nanoseconds lag) noexcept;

  // Warm pool (spawner).
  void pool_size(std::size_t ready, std::size_t target) noexcept;
  void pool_handout() noexcept;
  /// A start or restart found no ready pool member and spawned cold.
  void pool_miss() noexcept;

  // Governor.
  void budget(const agentvisor::budget& total) noexcept;
  void granted(const agentvisor::budget& used, uint32_t holders) noexcept;
  void grant_given() noexcept;
  void grant_refused(refusal r) noexcept;
  void queued(uint32_t n) noexcept;
  void memory_in_use(uint64_t bytes) noexcept;
  void host_available(uint64_t bytes) noexcept;
  void eviction() noexcept;

  // Chaos.
  void fault_injected(fault_kind k) noexcept;

  // Per-agent series. add_agent takes prometheus-cpp's family locks: call
  // it when an agent starts and remove_agent when it ends, not per call.
  agent_series add_agent(const std::string& agent_id);
  void remove_agent(agent_series& s);
  static void agent_memory(const agent_series& s, uint64_t bytes) noexcept;
  static void agent_tool_call(const agent_series& s) noexcept;
  static void agent_heartbeat_lag(const agent_series& s, std::chrono::nanoseconds lag) noexcept;
  /// What the agent's VM has available (qemu's balloon statistics); the
  /// series is added on the first call (a family lock once per agent).
  /// `agent_id`: the id add_agent was given.
  void agent_machine_available(agent_series& s, const std::string& agent_id, uint64_t bytes);

  /// The registry's families and the process metrics, collected now
  /// (scrape time only).
  std::vector<prometheus::MetricFamily> collect() const;

private:
  struct families;
  metrics_config cfg_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<families> f_;
  std::atomic<uint32_t> agent_series_live_{0};
};

// --- Exposition formats --------------------------------------------------------------

enum class format : uint8_t { text, openmetrics };

/// OpenMetrics when the Accept header names application/openmetrics-text
/// (with a q above 0), the text format 0.0.4 otherwise.
format negotiate(std::string_view accept) noexcept;

/// "text/plain; version=0.0.4; charset=utf-8" or
/// "application/openmetrics-text; version=1.0.0; charset=utf-8".
std::string_view content_type(format f) noexcept;

/// Prometheus text format 0.0.4 (prometheus-cpp's TextSerializer).
std::string text_serialize(const std::vector<prometheus::MetricFamily>& families);

/// OpenMetrics 1.0 text: counter families named without `_total` and their
/// samples with it, `# UNIT` for names ending in a base unit, escaped label
/// values and help, histogram buckets up to le="+Inf" with _count and _sum,
/// and the closing `# EOF`.
std::string openmetrics_serialize(const std::vector<prometheus::MetricFamily>& families);

std::string serialize(const std::vector<prometheus::MetricFamily>& families, format f);

/// The process metrics every Prometheus exporter has, read from procfs now:
/// process_resident_memory_bytes, process_virtual_memory_bytes,
/// process_cpu_seconds_total, process_open_fds, process_max_fds and
/// process_start_time_seconds. `proc_root` is /proc (tests point it
/// elsewhere); `pid` "self" or a number. A file that cannot be read leaves its
/// metric out rather than reporting a wrong value.
std::vector<prometheus::MetricFamily> process_families(std::string_view proc_root = "/proc",
                                                       std::string_view pid = "self");

} // namespace agentvisor::metrics

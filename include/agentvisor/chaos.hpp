#pragma once
/// chaos: scenario files, the fault plan, the run log, the invariant checker
/// and the report of `agentvisor chaos run`. docs/chaos.md describes the
/// file format and the report.
///
/// This part is plain data and pure functions (no CAF, no I/O but reading
/// the scenario file): the runner (actors/chaos) injects the planned faults
/// into a real supervisor and fills a run_log; check() and the report
/// writers only read it. So the checker is tested on logs a test writes,
/// including logs that must fail.

#include "agentvisor/error.hpp"

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace agentvisor::chaos {

// --- faults ---------------------------------------------------------------------

enum class fault_kind : uint8_t {
  kill,              ///< SIGKILL to the guest: down `crashed` (signal 9), restarted
  crash,             ///< the guest exits non-zero or aborts: down `exited`/`crashed`
  hang,              ///< SIGSTOP to the guest: down `hung` (heartbeat watchdog)
  oom,               ///< the guest allocates past its limit: down `oom` (kernel OOM kill)
  partition,         ///< the channel drops/delays lines for duration_ms: down `hung`
                     ///< when duration_ms > the hang timeout, else the agent survives
  spawn_failure,     ///< the backend fails the next spawn, the target is killed to make
                     ///< that spawn: its restart ends `spawn_failed`
  slow_spawn,        ///< the backend delays the next spawn by duration_ms, the target
                     ///< is killed to make that spawn: down `crashed`, slow recovery
  cpu_hog,           ///< the guest burns CPU for duration_ms: survives (cpu weight)
  disk_fill,         ///< the guest fills its workspace: survives (the cap holds)
  fork_bomb,         ///< the guest forks without end: survives (the pids limit holds)
  governor_pressure, ///< the host budget shrinks for duration_ms: evictions, refusals
};
inline constexpr std::size_t fault_kind_count = 11;
std::string_view to_string(fault_kind k) noexcept;
std::optional<fault_kind> fault_kind_from(std::string_view name) noexcept;
/// "kill, crash, hang, ..." for error messages.
std::string fault_kind_list();
/// The kinds that last a while and so take a duration_ms: partition,
/// slow_spawn, cpu_hog, governor_pressure.
bool has_duration(fault_kind k) noexcept;

/// The down reasons a fault of kind `k` is expected to cause to its target,
/// given the supervisor's heartbeat and hang timeout (empty: the target
/// survives). What fault_record::expected_reasons usually holds; docs/chaos.md
/// has the table. A partition causes `hung` only when it outlasts the hang
/// timeout by a heartbeat (duration_ms >= hang_timeout_ms + heartbeat_ms);
/// parse_scenario refuses partitions in the band where either could happen.
std::vector<std::string> expected_reasons(fault_kind k, uint32_t duration_ms,
                                          uint32_t heartbeat_ms,
                                          uint32_t hang_timeout_ms);

// --- scenario files -------------------------------------------------------------

/// One scheduled fault (`faults.schedule[i]`).
struct scheduled_fault {
  double at_s = 0;
  fault_kind kind = fault_kind::kill;
  /// Index of the target agent (0-based, below the agent count: the parser
  /// refuses others; plan() still takes it modulo the count); -1: random.
  int32_t agent = -1;
  /// 0: the scenario's fault_duration_ms (kinds with a duration only).
  uint32_t duration_ms = 0;
};

struct scenario {
  std::string name;
  std::string description;
  double duration_s = 30;
  /// The agents the run starts (`agents`).
  uint32_t agent_count = 4;
  uint32_t memory_mb = 64;
  uint32_t pids = 64;
  uint32_t workspace_mb = 16;
  /// Backend name (`backend`): sandbox, qemu, firecracker.
  std::string backend = "sandbox";
  /// Overrides merged into the supervisor's config (`supervisor`), kept as
  /// the JSON text of that object: the runner applies it with parse_config.
  std::string supervisor_json = "{}";
  /// The steady workload (`workload`).
  double calls_per_s = 20;
  /// Tool name -> weight. Tools: read_file, write_file, search,
  /// list_directory, execute_command.
  std::map<std::string, double> tools{{"read_file", 1}, {"write_file", 1}, {"list_directory", 1}};
  bool retryable = true;
  uint32_t call_timeout_ms = 5000;
  /// Faults (`faults`): a schedule, and/or random ones from the seed.
  std::vector<scheduled_fault> schedule;
  double random_per_s = 0;
  /// Stop drawing random faults after this many (0: no cap but the duration).
  uint64_t random_count = 0;
  /// Kind -> weight for random faults.
  std::map<fault_kind, double> random_kinds;
  /// Default duration_ms for faults that have one (partition, slow_spawn,
  /// cpu_hog, governor_pressure) when a schedule entry gives none.
  uint32_t fault_duration_ms = 1000;
  /// Invariant bounds (`invariants`).
  uint32_t detect_within_ms = 10000;
  uint32_t recover_within_ms = 30000;
};

/// Parses and validates a scenario. Errors name the field and what was
/// wrong, e.g. `faults.schedule[2].kind: unknown fault kind "explode"
/// (kill, crash, ...)`, `workload.calls_per_s: expected a number > 0`.
/// Unknown keys are errors too (a typo must not silently change a run).
result<scenario> parse_scenario(std::string_view json, std::string_view origin = {});
result<scenario> load_scenario(const std::string& path);

// --- the plan ---------------------------------------------------------------------

struct planned_fault {
  uint64_t id = 0; ///< 1, 2, ... in time order
  double at_s = 0;
  fault_kind kind = fault_kind::kill;
  uint32_t agent = 0; ///< target agent index (governor_pressure: unused)
  uint32_t duration_ms = 0;
};

/// The schedule plus the random faults drawn from `seed`, sorted by time:
/// the same scenario and seed give the same plan (std::mt19937_64, no
/// std::*_distribution, whose results differ between standard libraries).
std::vector<planned_fault> plan(const scenario& s, uint64_t seed);

// --- the run log (filled by the runner) -----------------------------------------

/// What happened to one planned fault. Times are seconds since the run began.
struct fault_record {
  planned_fault fault;
  std::string agent_id; ///< the target's agent id (empty: none)
  double injected_s = 0;
  /// The injection itself failed (e.g. the agent was restarting): not a
  /// violation, the report lists it; `skipped_reason` says why.
  bool skipped = false;
  std::string skipped_reason;
  /// What the runner expects, from the fault kind and the supervisor's
  /// settings: a down with one of these reasons (empty: the agent survives).
  std::vector<std::string> expected_reasons;
  /// The first down of the target after injection: its reason and time.
  std::optional<std::string> down_reason;
  std::optional<double> detected_s;
  /// When the target (or its replacement) was serving again.
  std::optional<double> recovered_s;
};

/// Every tool call, counted by the runner (client side) and by the
/// supervisor (the spawner's received/answered).
struct call_counts {
  uint64_t sent = 0;
  uint64_t ok = 0;           ///< answered with a tool result (ok or a tool error)
  uint64_t failed = 0;       ///< answered with an explicit error
  uint64_t retried = 0;      ///< answered after a retry on a replacement
  uint64_t unanswered = 0;   ///< no answer when the run ended
  uint64_t supervisor_received = 0;
  uint64_t supervisor_answered = 0;
};

/// One restart seen by the runner: the agent's down and its next ready.
struct restart_record {
  std::string agent_id;
  double down_s = 0;
  double ready_s = 0;
  /// The agent's consecutive failures before this restart (0: first).
  uint32_t failures = 0;
  /// The down's reason ("killed", "crashed", "hang", ...).
  std::string reason;
};

struct ready_sample {
  double t_s = 0;
  uint32_t ready = 0;
};

struct run_log {
  std::string scenario_name;
  uint64_t seed = 0;
  std::string started_at; ///< ISO 8601, UTC
  double elapsed_s = 0;
  std::string backend;
  std::vector<fault_record> faults;
  call_counts calls;
  std::vector<restart_record> restarts;
  std::vector<ready_sample> ready;
  /// The supervision settings the run used (for the intensity and backoff
  /// invariants).
  uint32_t max_restarts = 0;
  uint32_t period_ms = 0;
  uint32_t min_backoff_ms = 0;
  uint32_t max_backoff_ms = 0;
  /// The supervisor escalated (restart intensity exceeded).
  bool escalated = false;
  /// A signal (SIGINT, SIGTERM) ended the run early: the invariants are
  /// judged on what ran, calls still out count as unanswered.
  int interrupted_by = 0;
  /// What was left after the run: processes, cgroups, fds, workspaces of
  /// the run (each entry names one).
  std::vector<std::string> leftovers;
  /// GET /healthz answered 200 at the end.
  bool healthy_at_end = false;
  /// Agent events the runner never saw: a remote supervisor's event ring
  /// (GET /v1/events) overflowed past the runner's position. Any: the
  /// invariants built on events (faults_observed, recovered) fail, since a
  /// missed down cannot be told from one that never happened.
  uint64_t events_lost = 0;
  /// Invariants the runner could not check, by name, with why (a remote
  /// run: "the supervisor's fds and mounts are in another process"). Such an
  /// invariant is reported "not checked", never passed; if what could be
  /// checked of it failed, it fails.
  std::map<std::string, std::string> not_checked;
};

// --- invariants -------------------------------------------------------------------

struct invariant_result {
  std::string name;
  bool passed = false;
  /// Why, with numbers: "412 of 412 faults seen with the expected reason",
  /// or the first violations.
  std::string evidence;
  /// false: not checked (run_log::not_checked); `passed` is then false and
  /// the run's verdict ignores it (the report says so).
  bool checked = true;
};

/// Checks every invariant of docs/chaos.md on a finished run:
/// faults_observed, calls_accounted, restart_intensity, backoff,
/// recovered, no_leftovers, supervisor_alive.
std::vector<invariant_result> check(const scenario& s, const run_log& log);

/// The invariants a run can judge while it runs, on its log at `now_s`
/// seconds into it: faults_observed on the faults injected at least
/// detect_within_ms ago (the others may yet be seen), restart_intensity
/// and backoff. For the progress line; the verdict is check()'s.
std::vector<invariant_result> check_so_far(const scenario& s, const run_log& log, double now_s);

/// The verdict: every checked invariant passed (and there is at least one).
/// Unchecked ones do not fail a run; the report lists them as not checked.
bool all_passed(const std::vector<invariant_result>& inv);

// --- the report -------------------------------------------------------------------

/// Latency statistics of one fault kind, in milliseconds.
struct latency_stats {
  std::size_t n = 0;
  double p50 = 0, p95 = 0, p99 = 0, max = 0;
};
/// Detection (injected -> down) and recovery (injected -> serving) by kind.
std::map<fault_kind, latency_stats> detection_by_kind(const run_log& log);
std::map<fault_kind, latency_stats> recovery_by_kind(const run_log& log);

/// report.json: scenario, seed, faults by kind, detection and recovery
/// latency p50/p95/p99/max per kind, tool calls ok/failed/retried, each
/// invariant with its evidence, and `passed`.
std::string report_json(const scenario& s, const run_log& log,
                        const std::vector<invariant_result>& inv);

/// report.html: one self-contained page (inline SVG, no scripts or links):
/// the invariants, recovery-time distribution per fault kind, agents ready
/// over time with the faults marked, the tables of report.json.
std::string report_html(const scenario& s, const run_log& log,
                        const std::vector<invariant_result>& inv);

} // namespace agentvisor::chaos

#pragma once
/// Every message between agentvisor's actors, in one place and with no
/// behaviour: the vm_actor (one per agent), the spawner (OTP-style
/// supervisor of vm_actors, with the warm pool), the resource_governor and
/// the HTTP api. The backend protocol (spawn/stop/kill/usage, agent_started,
/// agent_oom, agent_exited, agent_usage) lives in backend.hpp.
///
/// Each type has an `inspect` overload, and register_messages() adds them to
/// an actor_system_config so that they can cross hosts through CAF's
/// middleman later.
///
/// Errors travel as values: a caf::error in the `agentvisor` category
/// (errc below, with a message naming the agent and what went wrong), which
/// the api maps to an HTTP status. An agent's end travels as its vm_actor's
/// exit reason: a caf::error in the `agentdown` category (down_reason),
/// which the spawner reads from the down_msg of its monitor.
///
///   api ──start/get/list/stop/call──▶ spawner ──grant──▶ resource_governor
///                                        │  ▲                ▲    │
///                              spawns,   │  │ agent_ready,   │    │ evict
///                              monitors  ▼  │ down_msg       │    ▼
///                                      vm_actor ──usage/oom──┘  spawner
///                                        │  ▲
///                   backend spawn/stop/kill  │ guest lines (I/O thread),
///                                        ▼  │ agent_oom/agent_exited
///                                      backend

#include "agentvisor/backend.hpp"
#include "agentvisor/config.hpp"

#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/fwd.hpp>
#include <caf/meta/type_name.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace agentvisor {

// --- atoms ------------------------------------------------------------------
// spawn_atom, kill_atom, stop_atom and usage_atom come from backend.hpp.

using call_atom = caf::atom_constant<caf::atom("call")>;
using start_atom = caf::atom_constant<caf::atom("start")>;
using get_atom = caf::atom_constant<caf::atom("get")>;
using list_atom = caf::atom_constant<caf::atom("list")>;
using fault_atom = caf::atom_constant<caf::atom("fault")>;
using grant_atom = caf::atom_constant<caf::atom("grant")>;
using release_atom = caf::atom_constant<caf::atom("release")>;
using evict_atom = caf::atom_constant<caf::atom("evict")>;
using attach_atom = caf::atom_constant<caf::atom("attach")>;
using shutdown_atom = caf::atom_constant<caf::atom("shutdown")>;
/// Chaos hooks and observers (docs/chaos.md).
using observe_atom = caf::atom_constant<caf::atom("observe")>;
using partition_atom = caf::atom_constant<caf::atom("partition")>;
using pressure_atom = caf::atom_constant<caf::atom("pressure")>;

// --- errors as values -------------------------------------------------------

/// Why a request failed. The api maps each to one HTTP status (in
/// parentheses). Values start at 1: a caf::error with code 0 is "no error".
enum class errc : uint8_t {
  bad_request = 1, ///< a field is missing or wrong (400)
  not_found,       ///< no such agent (404)
  over_budget,     ///< the governor refused: the request can never fit, or its queue is full (429)
  budget_timeout,  ///< the governor's queue deadline passed before it fit (503)
  spawn_failed,    ///< the backend could not start the machine (500)
  agent_down,      ///< the agent went down while the call was pending (502)
  draining,        ///< the agent or the supervisor is shutting down (503)
  timeout,         ///< the call got no answer in time (504)
  escalated,       ///< a spawner exceeded its restart intensity and gave up (503)
  internal,        ///< a bug of ours (500)
};

std::string_view to_string(errc x) noexcept;

/// The category atom of errc errors.
inline constexpr caf::atom_value errc_category = caf::atom("agentvisor");

/// An errc error whose context carries `message` (a sentence naming the
/// agent and what failed).
caf::error make_error(errc code, std::string message);

/// What an error from any actor says: for errc errors, the code and the
/// message; for CAF's own (a request timeout, a dead receiver), errc::timeout
/// or errc::internal and CAF's text; for down errors, errc::agent_down.
struct error_view {
  errc code = errc::internal;
  std::string message;
};
error_view view(const caf::error& err);

// --- an agent's end -----------------------------------------------------------

/// Why an agent machine went down. `stopped` (asked to) and `exited` with
/// code 0 are normal ends (OTP's `normal`/`shutdown`): a `transient` child is
/// not restarted after them; every other reason is abnormal.
enum class down_reason : uint8_t {
  stopped = 1,    ///< stopped on request (API delete, shutdown, supervisor)
  exited,         ///< the guest exited by itself (exit_code)
  crashed,        ///< the guest died of a signal (signal), not the OOM killer
  oom,            ///< the OOM killer ended the guest
  hung,           ///< the heartbeat watchdog saw no line for hang_timeout_ms
  protocol_error, ///< the guest wrote a line the host refuses
  spawn_failed,   ///< the machine never became ready
  evicted,        ///< the governor stopped it under host memory pressure
};

std::string_view to_string(down_reason x) noexcept;
std::optional<down_reason> down_reason_from_string(std::string_view name) noexcept;

/// One agent's end, as the vm_actor saw it.
struct down_info {
  std::string agent_id;
  down_reason reason = down_reason::stopped;
  int exit_code = 0;
  int signal = 0;
  /// A sentence: "OOM kill at limit 33554432 bytes (peak 33554432)",
  /// "no heartbeat for 5000 ms", the protocol error's text, ...
  std::string detail;
};

/// True for the normal ends (stopped, exited 0).
bool is_normal(const down_info& d) noexcept;

/// "oom: OOM kill at limit ..." (reason, then detail).
std::string describe(const down_info& d);

/// The category atom of down errors (a vm_actor's exit reason).
inline constexpr caf::atom_value down_category = caf::atom("agentdown");

/// The exit reason a vm_actor quits with.
caf::error make_down_error(const down_info& d);

/// The down_info inside a vm_actor's exit reason; for any other reason (the
/// actor threw, was killed by CAF) a `crashed` down_info whose detail is
/// CAF's text.
down_info down_info_from(const caf::error& reason, std::string agent_id);

// --- vm_actor: one agent machine --------------------------------------------

/// What a vm_actor is (docs/supervision.md, "vm_actor"): its behaviours.
enum class vm_state : uint8_t { spawning, ready, busy, draining, stopped, failed };
std::string_view to_string(vm_state x) noexcept;

/// A tool call for an agent. `args_json` is one JSON object. A retryable
/// call whose agent goes down is sent once more to the replacement; any
/// other is answered with errc::agent_down and the down reason.
/// timeout_ms 0: the vm_actor's default call timeout.
struct tool_call {
  std::string tool;
  std::string args_json = "{}";
  bool retryable = false;
  uint32_t timeout_ms = 0;
};

/// The guest's answer. When !ok, error_code is a guest tool_errc name
/// ("path_escape", "not_found", ...) and error_message its text.
struct tool_result {
  bool ok = true;
  std::string result_json = "{}";
  std::string error_code;
  std::string error_message;
  /// 1 when the call was retried on a replacement agent.
  uint32_t attempts = 1;
};

/// A chaos fault for the guest (agent_spec.allow_faults must be set):
/// `kind` is a guest fault_kind name (exit, abort, oom, cpu_hog, disk_fill,
/// fork_bomb, garbage), `code` the exit status for exit, `ms` the duration
/// of cpu_hog, `what` the garbage_kind name for garbage.
struct fault_request {
  std::string kind;
  int32_t code = 0;
  uint32_t ms = 1000;
  std::string what = "malformed";
};

/// How a vm_actor runs its agent (from config.agents, per agent).
struct vm_options {
  agent_spec spec;
  uint32_t hang_timeout_ms = 5000;
  uint32_t ready_timeout_ms = 10000;
  uint32_t max_calls_in_flight = 16;
  /// Default call timeout (execute_command's own timeout_ms is added).
  uint32_t call_timeout_ms = 30000;
  /// Poll the backend for usage this often (0: never) and report it to the
  /// governor.
  uint32_t usage_interval_ms = 1000;
};

/// vm_actor -> its parent (the spawner), each time its guest is ready.
struct agent_ready {
  std::string agent_id;
  int pid = 0;
  std::string backend;
  /// From the vm_actor's start to the guest's ready line.
  uint64_t spawn_ns = 0;
};

/// A live agent as the API shows it.
struct agent_info {
  std::string id;
  /// The machine behind the agent now (its vm_actor's spec.id, cgroup and
  /// grant): the agent id, or a pool member's id after a restart that
  /// adopted a warm pool member.
  std::string machine;
  std::string name;
  vm_state state = vm_state::spawning;
  std::string backend;
  restart_type restart = restart_type::permanent;
  uint32_t restarts = 0;
  /// Empty until the agent first went down.
  std::string last_down_reason;
  uint64_t oom_kills = 0;
  uint64_t memory_bytes = 0;
  uint64_t memory_limit_bytes = 0;
  uint32_t pids_limit = 0;
  int pid = 0;
  uint32_t calls_in_flight = 0;
  uint32_t calls_queued = 0;
};

// --- spawner ------------------------------------------------------------------

/// POST /v1/agents, and the spawner's start_child. Zero / empty: the config's
/// default.
struct agent_request {
  std::string name;
  uint64_t memory_mb = 0;
  uint32_t pids = 0;
  uint32_t cpu_weight = 0;
  /// When !restart_set: the config's supervision.restart.
  restart_type restart = restart_type::permanent;
  bool restart_set = false;
  /// The backend to run it in ("sandbox", "qemu", "firecracker"); it must
  /// be one of the supervisor's `backends`. Empty: the config's `backend`.
  std::string backend{};
};

// --- resource_governor --------------------------------------------------------

/// Asked before every spawn. Answered with a grant, or an errc error
/// (over_budget: can never fit or the queue is full; budget_timeout: it
/// waited deadline_ms in the queue).
struct grant_request {
  std::string agent_id;
  uint64_t memory_bytes = 0;
  uint32_t pids = 0;
  uint32_t cpu_weight = 100;
  /// How long the request may wait in the queue; 0: refuse at once.
  uint32_t deadline_ms = 0;
};

struct grant {
  std::string agent_id;
  uint64_t memory_bytes = 0;
  uint32_t pids = 0;
};

/// GET /v1/governor.
struct budget {
  uint64_t memory_bytes = 0;
  uint32_t cpus = 0;
  uint32_t agents = 0;
  uint32_t pids = 0;
};

/// One agent holding a grant, as governor_state lists it.
struct governor_agent {
  std::string agent_id;
  /// Granted (reserved).
  uint64_t memory_bytes = 0;
  uint32_t pids = 0;
  /// From its last usage report (0 before the first).
  uint64_t memory_in_use_bytes = 0;
  uint64_t oom_kills = 0;
  /// The governor asked the spawner to evict it.
  bool evicting = false;
};

struct governor_state {
  budget total;
  /// Granted (reserved) so far. CPUs are shared by weight, never reserved:
  /// used.cpus stays 0.
  budget used;
  /// What agents actually use now, from their usage reports.
  uint64_t memory_in_use_bytes = 0;
  uint32_t queued = 0;
  uint64_t granted_total = 0;
  uint64_t denied_total = 0;
  uint64_t oom_kills_total = 0;
  uint64_t evictions_total = 0;
  /// The host's MemAvailable at the last check (0 before the first read
  /// or while /proc/meminfo cannot be read).
  uint64_t host_available_bytes = 0;
  /// Holders of a grant, in grant order (oldest first).
  std::vector<governor_agent> agents;
  /// The agent ids waiting in the queue, head first.
  std::vector<std::string> queue;
  /// Set while an eviction is in flight: the agent asked to go.
  std::string evicting;
};

/// governor -> spawner: stop this agent (reason evicted) to relieve memory
/// pressure; `why` names the pressure and the policy's choice.
struct evict_request {
  std::string agent_id;
  std::string why;
};

// --- observers (chaos runs) ------------------------------------------------

enum class agent_event_kind : uint8_t { down, ready };

/// spawner -> observers (observe_atom): a child's machine went down, or the
/// child serves (again) on a ready machine. Times are steady_clock
/// nanoseconds, taken when the spawner learnt it.
struct agent_event {
  std::string agent_id;
  std::string machine;
  agent_event_kind kind = agent_event_kind::down;
  /// down: the down_reason's name, and its detail.
  std::string reason;
  std::string detail;
  /// ready: the restarts so far and the consecutive failures the backoff
  /// before this restart used (0 on a first start).
  uint32_t restarts = 0;
  uint32_t failures = 0;
  int64_t at_ns = 0;
};

// --- inspect ------------------------------------------------------------------

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, agent_event& x) {
  return f(caf::meta::type_name("agent_event"), x.agent_id, x.machine, x.kind, x.reason,
           x.detail, x.restarts, x.failures, x.at_ns);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, down_info& x) {
  return f(caf::meta::type_name("down_info"), x.agent_id, x.reason, x.exit_code, x.signal,
           x.detail);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, tool_call& x) {
  return f(caf::meta::type_name("tool_call"), x.tool, x.args_json, x.retryable, x.timeout_ms);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, tool_result& x) {
  return f(caf::meta::type_name("tool_result"), x.ok, x.result_json, x.error_code,
           x.error_message, x.attempts);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, fault_request& x) {
  return f(caf::meta::type_name("fault_request"), x.kind, x.code, x.ms, x.what);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, vm_options& x) {
  return f(caf::meta::type_name("vm_options"), x.spec, x.hang_timeout_ms, x.ready_timeout_ms,
           x.max_calls_in_flight, x.call_timeout_ms, x.usage_interval_ms);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, agent_ready& x) {
  return f(caf::meta::type_name("agent_ready"), x.agent_id, x.pid, x.backend, x.spawn_ns);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, agent_info& x) {
  return f(caf::meta::type_name("agent_info"), x.id, x.machine, x.name, x.state, x.backend, x.restart,
           x.restarts, x.last_down_reason, x.oom_kills, x.memory_bytes, x.memory_limit_bytes,
           x.pids_limit, x.pid, x.calls_in_flight, x.calls_queued);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, agent_request& x) {
  return f(caf::meta::type_name("agent_request"), x.name, x.memory_mb, x.pids, x.cpu_weight,
           x.restart, x.restart_set, x.backend);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, grant_request& x) {
  return f(caf::meta::type_name("grant_request"), x.agent_id, x.memory_bytes, x.pids,
           x.cpu_weight, x.deadline_ms);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, grant& x) {
  return f(caf::meta::type_name("grant"), x.agent_id, x.memory_bytes, x.pids);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, budget& x) {
  return f(caf::meta::type_name("budget"), x.memory_bytes, x.cpus, x.agents, x.pids);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, governor_agent& x) {
  return f(caf::meta::type_name("governor_agent"), x.agent_id, x.memory_bytes, x.pids,
           x.memory_in_use_bytes, x.oom_kills, x.evicting);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, governor_state& x) {
  return f(caf::meta::type_name("governor_state"), x.total, x.used, x.memory_in_use_bytes,
           x.queued, x.granted_total, x.denied_total, x.oom_kills_total, x.evictions_total,
           x.host_available_bytes, x.agents, x.queue, x.evicting);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, evict_request& x) {
  return f(caf::meta::type_name("evict_request"), x.agent_id, x.why);
}

/// Adds every type above and in backend.hpp to `cfg` (message types and the
/// two error categories' renderers). Call before constructing the system.
void register_messages(caf::actor_system_config& cfg);

} // namespace agentvisor

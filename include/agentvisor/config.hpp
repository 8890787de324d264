#pragma once
/// agentvisor's configuration: typed structs filled from JSON (simdjson
/// On-Demand). Every key has a built-in default, so the file is optional.
/// docs/configuration.md documents each key; keep the two in step.

#include "agentvisor/error.hpp"

#include <cstdint>
#include <string>
#include <optional>
#include <string_view>
#include <vector>

namespace agentvisor {

enum class backend_kind : uint8_t { sandbox, qemu, firecracker };
/// qemu's accelerator: `auto` picks kvm when /dev/kvm is usable, else tcg.
enum class qemu_accel : uint8_t { automatic, kvm, tcg };
/// qemu's machine type: `auto` lets the qemu backend choose.
enum class qemu_machine : uint8_t { automatic, microvm, q35 };
enum class restart_strategy : uint8_t {
  one_for_one,
  one_for_all,
  rest_for_one,
  simple_one_for_one,
};
enum class restart_type : uint8_t { permanent, transient, temporary };
enum class log_level : uint8_t { trace, debug, info, warn, error, off };
enum class log_format : uint8_t { plain, json };

std::string_view to_string(backend_kind x);
std::string_view to_string(qemu_accel x);
std::string_view to_string(qemu_machine x);
std::string_view to_string(restart_strategy x);
std::string_view to_string(restart_type x);
std::string_view to_string(log_level x);
std::string_view to_string(log_format x);

/// The backend named `name` ("sandbox", "qemu", "firecracker"), if any.
std::optional<backend_kind> backend_from_string(std::string_view name);

/// The qemu backend's settings (the `qemu` section). Plain values: the qemu
/// backend resolves them (finds the binary on PATH, the guest image, the
/// accelerator), so the config library needs no backend code.
struct qemu_config {
  /// A program name looked up on PATH, or an absolute path.
  std::string binary = "qemu-system-x86_64";
  /// The guest kernel and initramfs. Empty: the build tree's guest image
  /// directory, else /usr/local/share/agentvisor/guest.
  std::string kernel;
  std::string initrd;
  qemu_accel accel = qemu_accel::automatic;
  qemu_machine machine = qemu_machine::automatic;
  uint32_t vcpus = 1;
  /// From qemu's start to the guest's ready line (TCG boots take seconds).
  uint32_t boot_timeout_ms = 60000;
  /// Restore agents from a snapshot of a parked template VM, one per
  /// shape (memory, workspace size), instead of booting each.
  bool snapshots = false;

  bool operator==(const qemu_config&) const = default;
};

/// The firecracker backend's settings (the `firecracker` section).
struct firecracker_config {
  /// A program name looked up on PATH, or an absolute path.
  std::string binary = "firecracker";
  /// The jailer to start firecracker through. Empty: no jailer.
  std::string jailer;
  /// As in qemu_config: empty means the default guest image.
  std::string kernel;
  std::string initrd;
  uint32_t vcpus = 1;
  uint32_t boot_timeout_ms = 10000;
  /// As in qemu_config (not with the jailer).
  bool snapshots = false;

  bool operator==(const firecracker_config&) const = default;
};

/// What the whole host may give to agents, and the governor's pressure
/// policy. For memory_mb, cpus and pids zero means "detect from the host
/// at start-up" (MemTotal minus reserve_mb, online CPUs, pid_max).
struct host_config {
  uint64_t memory_mb = 0;
  uint32_t cpus = 0;
  uint32_t max_agents = 256;
  uint32_t pids = 0;
  /// Memory left to the host itself when memory_mb is detected
  /// (budget = MemTotal - reserve_mb).
  uint64_t reserve_mb = 512;
  /// Memory pressure when agents together use more than this fraction of
  /// the memory budget (docs/governor.md).
  double pressure_high_water = 0.95;
  /// Memory pressure when the host's MemAvailable falls below this; 0: off.
  uint64_t min_available_mb = 256;
  /// How often the governor reads /proc/meminfo.
  uint32_t pressure_check_ms = 1000;
  /// Grant requests that may wait for room at once; beyond: over_budget.
  uint32_t max_queued = 256;
  /// How long the governor waits for an evicted agent's release before it
  /// may pick another victim.
  uint32_t evict_timeout_ms = 30000;

  bool operator==(const host_config&) const = default;
};

/// Limits each agent gets unless its spawn request says otherwise.
struct agent_defaults {
  uint64_t memory_mb = 256;
  uint32_t pids = 128;
  /// cgroup v2 cpu.weight semantics (1..10000, 100 = normal); mapped to v1
  /// cpu.shares as weight * 1024 / 100.
  uint32_t cpu_weight = 100;
  /// The /workspace tmpfs cap. Its pages count towards memory_mb too (a
  /// tmpfs is memory), so keep it below memory_mb.
  uint64_t workspace_mb = 128;
  uint32_t heartbeat_ms = 1000;
  /// Silence after which the watchdog declares an agent hung.
  uint32_t hang_timeout_ms = 5000;
  uint32_t max_calls_in_flight = 16;
  /// Time a guest gets from spawn to its `ready` line.
  uint32_t ready_timeout_ms = 10000;
  /// Let the guests obey chaos faults (the spawner's and vm_actor's
  /// fault_atom). Off in production: a fault ends or burdens the agent.
  bool allow_faults = false;

  bool operator==(const agent_defaults&) const = default;
};

struct pool_config {
  uint32_t warm = 0;

  bool operator==(const pool_config&) const = default;
};

/// OTP-style supervision of agents (names as in Erlang/OTP and Akka).
struct supervision_config {
  restart_strategy strategy = restart_strategy::simple_one_for_one;
  restart_type restart = restart_type::permanent;
  uint32_t max_restarts = 10;
  uint32_t period_ms = 10000;
  uint32_t min_backoff_ms = 10;
  uint32_t max_backoff_ms = 5000;
  double random_factor = 0.2;
  uint32_t shutdown_timeout_ms = 5000;

  bool operator==(const supervision_config&) const = default;
};

struct api_config {
  std::string listen = "127.0.0.1:7878";
  /// Empty: generate a token on first start into state_dir/api.token (0600).
  std::string token_file;
  uint64_t max_body_bytes = 1 << 20;

  bool operator==(const api_config&) const = default;
};

struct metrics_config {
  bool enabled = true;
  bool require_token = false;
  bool per_agent = true;
  uint32_t max_agent_series = 1000;

  bool operator==(const metrics_config&) const = default;
};

struct log_config {
  log_level level = log_level::info;
  log_format format = log_format::plain;

  bool operator==(const log_config&) const = default;
};

struct config {
  /// Names this supervisor's cgroups: agentvisor/<instance>/<agent-id>.
  std::string instance = "default";
  /// Workspaces, generated tokens and other run-time state live here.
  std::string state_dir = "/var/lib/agentvisor";
  bool keep_workspaces = false;
  /// The agentvisor-guest binary (the template process and, later, VM
  /// images). Empty: next to the agentvisor executable.
  std::string guest_binary;
  /// The backend an agent runs in unless its spawn request names one.
  backend_kind backend = backend_kind::sandbox;
  /// The backends this supervisor starts (each at most once); agents may
  /// ask for any of them. Must contain `backend`. Not in the file: just
  /// `backend`.
  std::vector<backend_kind> backends{backend_kind::sandbox};
  host_config host;
  agent_defaults agents;
  pool_config pool;
  supervision_config supervision;
  api_config api;
  metrics_config metrics;
  log_config log;
  qemu_config qemu;
  firecracker_config firecracker;

  bool operator==(const config&) const = default;
};

/// Parses a JSON document into a config, starting from the defaults. Errors
/// name the key path and what was expected, e.g.
/// `agents.memory_mb: expected a positive integer, got "lots"`.
/// `origin` (a file name) prefixes the message when not empty.
result<config> parse_config(std::string_view json, std::string_view origin = {});

/// Reads and parses a config file; a missing or unreadable file is an error
/// naming the path and the errno.
result<config> load_config(const std::string& path);

/// The built-in defaults as a JSON document (what `parse_config("{}")` gives).
std::string default_config_json();

/// The config as JSON, every key present (for logs and `--print-config`).
std::string to_json(const config& cfg);

/// Splits "HOST:PORT" (IPv6 as "[::1]:7878"); an error names the input.
/// The host comes back without brackets; the port must be 1..65535.
struct host_port {
  std::string host;
  uint16_t port = 0;

  bool operator==(const host_port&) const = default;
};
result<host_port> parse_host_port(std::string_view text);

} // namespace agentvisor

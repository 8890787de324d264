#pragma once
/// What the host offers agents, read from procfs: plain code, no CAF, so
/// that it can be tested against a directory that plays /proc.
/// docs/governor.md ("Budget") explains each choice.

#include "agentvisor/config.hpp"
#include "agentvisor/error.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace agentvisor {

/// The two /proc/meminfo fields the governor reads, in bytes.
struct meminfo {
  uint64_t total_bytes = 0;
  uint64_t available_bytes = 0;
};

/// Parses /proc/meminfo text ("MemTotal:  24683620 kB"). Both MemTotal and
/// MemAvailable must be present (MemAvailable exists since Linux 3.14).
result<meminfo> parse_meminfo(std::string_view text);

/// Reads and parses `<proc_root>/meminfo`.
result<meminfo> read_meminfo(const std::string& proc_root);

/// Online CPUs: the "cpuN" lines of /proc/stat (the kernel lists online
/// CPUs only there).
result<uint32_t> parse_online_cpus(std::string_view proc_stat);

/// The pid budget: min(kernel.pid_max, kernel.threads-max), since every
/// thread takes a pid and threads-max caps threads host-wide; at most
/// Linux's PID_MAX_LIMIT (4194304). Reads `<proc_root>/sys/kernel/*`.
result<uint32_t> read_pid_budget(const std::string& proc_root);

/// The budget for all agents: each host_config value, or where it is 0 the
/// detected one. Memory: MemTotal minus host.reserve_mb (left to the host
/// itself). agents is host.max_agents (never detected).
struct host_budget {
  uint64_t memory_bytes = 0;
  uint32_t cpus = 0;
  uint32_t agents = 0;
  uint32_t pids = 0;
};

/// Detects what `cfg` leaves at 0; reads nothing for the others. An error
/// names the file and what was wrong, or the key whose value cannot work
/// (a reserve that leaves less than 64 MiB).
result<host_budget> detect_budget(const host_config& cfg,
                                  const std::string& proc_root = "/proc");

} // namespace agentvisor

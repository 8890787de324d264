#pragma once
/// cgroups for sandboxes, v1 and v2, detected at run time. Links no CAF.
///
/// Each agent gets agentvisor/<instance>/<agent-id> in every controller it
/// needs (v1: memory, pids, cpu, and cpuacct when mounted apart; v2: one
/// directory in the unified hierarchy). Only directories under
/// agentvisor/<instance> are ever created, written, killed or removed.

#include "agentvisor/error.hpp"

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace agentvisor::sandbox {

enum class cgroup_version : uint8_t { v1, v2 };

/// Where the controllers are mounted on this host.
struct cgroup_layout {
  cgroup_version version = cgroup_version::v1;
  std::string unified; ///< v2 mount point
  std::string memory;  ///< v1 mount points ("" when absent)
  std::string pids;
  std::string cpu;
  std::string cpuacct; ///< set only when mounted apart from cpu
};

/// Reads /proc/self/mountinfo. v2 is used when the unified hierarchy offers
/// the memory and pids controllers; otherwise v1 needs memory and pids
/// mounts. The error says which controllers are missing.
result<cgroup_layout> detect_cgroups();
result<cgroup_layout> detect_cgroups(std::string_view mountinfo,
                                     std::string_view unified_controllers);

struct cgroup_limits {
  uint64_t memory_bytes = 0;
  uint32_t pids = 0;
  uint32_t cpu_weight = 100; ///< 1..10000, v2 semantics
};

struct cgroup_usage {
  uint64_t memory_bytes = 0;
  uint64_t memory_peak_bytes = 0;
  uint64_t pids = 0;
  uint64_t cpu_usage_ns = 0;
  uint64_t oom_kills = 0;
};

/// The instance directory agentvisor/<instance> in each hierarchy. Creating
/// it (and, on v2, enabling controllers for its children) is idempotent.
class cgroup_instance {
public:
  static result<cgroup_instance> open(const cgroup_layout& layout,
                                      std::string_view instance);

  /// Kills the processes of and removes every agent cgroup left under this
  /// instance by a dead earlier supervisor of the same instance. The caller
  /// must hold the instance lock (see instance_lock) so that it is never a
  /// live supervisor's. Returns how many agent cgroups were removed.
  result<size_t> remove_stale() const;

  /// Removes agentvisor/<instance> (and agentvisor/ when no other instance
  /// uses it) once every agent cgroup is gone. Best effort: a directory
  /// still in use stays.
  void remove() const;

  const cgroup_layout& layout() const noexcept { return layout_; }
  /// agentvisor/<instance> under each hierarchy in use.
  const std::vector<std::string>& dirs() const noexcept { return dirs_; }

private:
  cgroup_layout layout_;
  std::vector<std::string> dirs_;
};

/// One agent's cgroup. Not RAII: removal may have to wait for processes to
/// exit, so the owner calls kill_all() and remove() (retrying on EBUSY).
class agent_cgroup {
public:
  static result<agent_cgroup> create(const cgroup_instance& inst,
                                     std::string_view agent_id,
                                     const cgroup_limits& limits);

  cgroup_version version() const noexcept { return version_; }
  /// The agent's directory in each hierarchy (memory first).
  const std::vector<std::string>& dirs() const noexcept { return dirs_; }
  /// The directory with the memory controller.
  const std::string& memory_dir() const noexcept { return dirs_.front(); }

  /// An fd that becomes ready on an OOM kill in this cgroup. v1: an eventfd
  /// registered through cgroup.event_control on memory.oom_control (read it
  /// as an eventfd). v2: memory.events, which signals POLLPRI on change.
  /// The caller owns the fd.
  result<int> open_oom_fd() const;

  /// OOM kills so far (v1 memory.oom_control, v2 memory.events). The v1
  /// counter lags the eventfd by a few ms: do not conclude "no OOM" from it
  /// at the moment the eventfd fires.
  result<uint64_t> oom_kills() const;

  result<cgroup_usage> usage() const;

  /// SIGKILLs every process in the cgroup (v2: cgroup.kill when present).
  /// Does not wait for them to exit: remove() says EBUSY until they have,
  /// so retry both (a later kill_all also catches a child forked in the
  /// instant of the kill).
  result<void> kill_all() const;

  /// Removes the directories; fails with EBUSY while processes remain.
  result<void> remove() const;

private:
  cgroup_version version_ = cgroup_version::v1;
  std::vector<std::string> dirs_;
  std::string cpuacct_dir_; ///< v1 dir for cpu usage (cpu or cpuacct)
};

/// Writes `value` to `path` (one write, as cgroupfs wants). Errors name the
/// file and errno.
result<void> write_file(const std::string& path, std::string_view value);
/// Reads a small file whole.
result<std::string> read_file(const std::string& path);

/// The two directory calls this module makes. A real cgroupfs creates a new
/// directory's interface files (memory.max, cgroup.procs, ...) itself and
/// removes them with it; a plain directory does neither. Tests that run the
/// code against a fake cgroupfs in a temp dir install ops that do what the
/// kernel would; production code never changes them.
struct cgroup_dir_ops {
  int (*make_dir)(const char* path, mode_t mode);
  int (*remove_dir)(const char* path);
};

/// Installs `ops` and returns the ones in use before (mkdir and rmdir by
/// default). Not thread-safe: for tests only, before any cgroup call.
cgroup_dir_ops set_cgroup_dir_ops_for_testing(cgroup_dir_ops ops);

/// True when `name` is safe as one path component (no '/', not . or ..,
/// [A-Za-z0-9_.-], at most 64 characters): agent ids and instance names
/// become directory names.
bool valid_name(std::string_view name);

} // namespace agentvisor::sandbox

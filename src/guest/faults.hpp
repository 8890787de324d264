#pragma once
/// Chaos faults (--allow-faults only). `exit`, `abort` and `oom` hit the
/// guest itself (the first two never return); `garbage` writes one bad line on the
/// channel at once; the others run in a forked job child so the loop stays
/// responsive, and report when that child ends.

#include "workspace.hpp"

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace agentvisor::guest {

/// The file disk_fill writes, in the workspace root.
inline constexpr const char* disk_fill_file = ".agentvisor-disk-fill";

/// `exit`: _exit(code). Does not return.
[[noreturn]] void fault_exit(int code);
/// `abort`: abort(). Does not return.
[[noreturn]] void fault_abort();
/// `oom`: allocates and touches memory in the guest until it is killed,
/// on a thread of its own: the loop goes on heartbeating while the kernel
/// reclaims towards the OOM kill (seconds under load), so the watchdog
/// does not take an OOM on its way for a hang. Inline if no thread starts.
void fault_oom();

/// `garbage`: appends the bad line `what` names to `out` (newline included)
/// and returns its length without the newline. The only way the guest ever
/// writes a line the protocol forbids.
std::size_t fault_garbage(garbage_kind what, std::string& out);

class fault_jobs {
public:
  fault_jobs() = default;
  fault_jobs(const fault_jobs&) = delete;
  fault_jobs& operator=(const fault_jobs&) = delete;
  ~fault_jobs();

  /// Forks the job child of a cpu_hog, disk_fill or fork_bomb fault.
  status start(const fault& f, const workspace& ws);

  /// As command_table::on_exit: reaps `pid` if it is a job's child.
  bool on_exit(pid_t pid);

  /// Appends a result line for each finished job that has an id. A job is
  /// finished once its child is reaped and its process group is empty (a
  /// fork bomb's children are all dead and reaped), or 5 s after the reap.
  void flush_results(std::string& out);

  /// SIGKILLs every job's process group.
  void kill_all();

private:
  struct job {
    fault f;
    pid_t pid = -1;
    unique_fd report; ///< the child writes "<count> <errno>\n" before it ends
    bool reaped = false;
    std::chrono::steady_clock::time_point reaped_at;
    int wstatus = 0;
    std::string text;
  };
  std::vector<job> jobs_;
};

} // namespace agentvisor::guest

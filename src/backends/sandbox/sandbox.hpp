#pragma once
/// Builds one sandbox: clone3 into new PID, mount, network, IPC and UTS
/// namespaces (plus a user namespace when not root), a fresh root filesystem
/// switched to with pivot_root, no capabilities, no_new_privs and a seccomp
/// filter, then runs an entry function as the sandbox's PID 1. Links no CAF.
///
/// The root filesystem: read-only binds of the host's /usr (and /bin, /sbin,
/// /lib* as the host has them: symlinks on merged-/usr Debian), a generated
/// /etc (passwd, group, hosts, hostname; never the host's), a minimal /dev,
/// a fresh /proc, a private size-capped /tmp and a writable /workspace.

#include "agentvisor/error.hpp"

#include <linux/filter.h>
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace agentvisor::sandbox {

/// A compiled seccomp filter (BPF), built once and applied in each child.
struct seccomp_program {
  std::vector<sock_filter> code;
};

/// The deny list (EPERM): mount and the new mount API, umount, pivot_root,
/// chroot, ptrace, process_vm_*, kexec, bpf, perf_event_open, keyrings,
/// unshare, setns, clone with namespace flags (clone3: ENOSYS, so libc falls
/// back to clone), module loading, reboot, swap, io_uring, userfaultfd,
/// clock and hostname changes, raw and packet sockets.
result<seccomp_program> build_seccomp();

/// The syscall names build_seccomp() denies (for docs and tests).
const std::vector<const char*>& denied_syscalls();

struct sandbox_spec {
  std::string agent_id;
  std::string hostname;
  /// An empty host directory used only as the mount point of the new root
  /// inside the child's mount namespace (the host never sees the mount).
  std::string rootfs_dir;
  /// Becomes fd 3 in the sandbox: the guest channel.
  int channel_fd = -1;
  /// A detached mount (fsmount/open_tree) attached at /workspace; -1: the
  /// child mounts a fresh tmpfs of workspace_bytes there itself.
  int workspace_fd = -1;
  uint64_t workspace_bytes = 256ull << 20;
  uint64_t tmp_bytes = 64ull << 20;
  /// A network namespace to join (setns) instead of having clone create
  /// one: a fresh namespace with only `lo`, up (see netns_pool). The caller
  /// keeps the fd and may close it once clone_sandbox returns. -1: clone
  /// creates the namespace (CLONE_NEWNET) and the child brings `lo` up.
  /// Not with user_namespace (the child could not join it).
  int netns_fd = -1;
  /// cgroup v1: the agent's cgroup.procs files, joined first thing.
  std::vector<std::string> cgroup_procs;
  /// cgroup v2: the agent's cgroup directory fd, for CLONE_INTO_CGROUP.
  int cgroup_v2_fd = -1;
  /// A cgroup file with the agent's memory usage, opened before pivot_root
  /// and left as fd 4 for the guest's heartbeats ("" for none).
  std::string memory_file;
  /// The guest's environment (KEY=VALUE); its commands inherit it.
  std::vector<std::string> env;
  /// Identity inside the sandbox (outside too, unless user_namespace).
  uid_t uid = 20000;
  gid_t gid = 20000;
  /// Unprivileged mode: map our own uid/gid to 0 in a new user namespace.
  bool user_namespace = false;
};

/// The sandbox's process as its creator sees it.
struct child_process {
  pid_t pid = -1;
  int pidfd = -1;
  /// Read end of a close-on-exec pipe: EOF means the sandbox is set up and
  /// the entry function runs; otherwise it carries "step: error" text.
  int status_fd = -1;
};

/// The function the sandbox runs as PID 1 (fds: 0-2 /dev/null, 3 channel,
/// 4 memory file if any). Its return value is the exit code.
using entry_fn = int (*)(void* arg);

/// Clones the sandbox. With `as_sibling` (CLONE_PARENT) the child becomes
/// our parent's child: a template process uses it so that the supervisor
/// reaps its agents directly. Must be called from a single-threaded process
/// (or one that only runs async-signal-safe code in the child).
result<child_process> clone_sandbox(const sandbox_spec& spec,
                                    const seccomp_program& filter,
                                    entry_fn entry, void* arg,
                                    bool as_sibling);

/// Why this kernel will not let an unprivileged process (no CAP_SYS_ADMIN,
/// approximated by euid != 0) create a user namespace, read from the
/// sysctls that decide it: user.max_user_namespaces (0), Debian's
/// kernel.unprivileged_userns_clone (0) and Ubuntu's
/// kernel.apparmor_restrict_unprivileged_userns (1). nullopt when none of
/// them forbids it (a container's seccomp policy still may).
std::optional<std::string> user_namespace_refusal();

/// Blocks until the child reports: setup done (EOF) or failed (the text).
/// Closes status_fd.
result<void> wait_setup(int status_fd, const std::string& agent_id);

/// Creates a detached, size-capped tmpfs for a workspace (fsopen/fsmount)
/// owned by uid:gid. Needs CAP_SYS_ADMIN; the caller owns the fd.
result<int> make_workspace_mount(uint64_t bytes, uid_t uid, gid_t gid);

} // namespace agentvisor::sandbox

#pragma once
/// The actor behind both microVM backends (qemu, firecracker): one VMM
/// process per agent booting our guest image, whose PID 1 is
/// `agentvisor-guest --vm-init` (src/guest/vm_init.hpp). What differs
/// between the VMMs is how the process starts and how the guest's two
/// channels reach us:
///  - qemu: configured by its argv; the channels are socketpairs it inherits
///    (virtio-serial ports), plus a third for QMP;
///  - firecracker: configured through its API socket (api.hpp); the guest
///    connects back over vsock, which firecracker forwards to Unix sockets
///    we listen on.
/// Everything else is shared: the workspace image (a sparse file made ext4
/// by mke2fs), the boot timeout, the control channel's events turned into
/// agent_oom and agent_exited for the owner, stop/kill/usage/signal, spawn
/// faults, clean-up of the VM's directory on every path. The qemu and
/// firecracker folders each fill a vmm_config and check their host.

#include "agentvisor/backend.hpp"
#include "agentvisor/io.hpp"
#include "agentvisor/vm_control.hpp"

#include <caf/fwd.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace agentvisor::microvm {

enum class vmm_kind : uint8_t { firecracker, qemu };

/// Where a qemu VM's files are; its argv names them.
struct qemu_files {
  std::string dir;
  std::string workspace; ///< the raw ext4 image
  std::string console_log;
  /// The fds (in qemu) of the socketpairs: guest channel, control, QMP.
  int channel_fd = 3, control_fd = 4, qmp_fd = 5;
};

struct vmm_config {
  vmm_kind kind = vmm_kind::qemu;
  /// "qemu" or "firecracker": logs, errors, agent_started::backend.
  std::string name;
  std::string instance = "default";
  /// Each VM's files live in state_dir/vms/<instance>/<id>, removed when
  /// the VM ends.
  std::string state_dir = "/var/lib/agentvisor";
  /// The VMM: a path, or a name looked up in PATH.
  std::string binary;
  /// firecracker only: the jailer binary; empty: no jailer.
  std::string jailer;
  std::string kernel;
  std::string initrd;
  uint32_t vcpus = 1;
  /// From the spawn request to the guest's `booted`.
  uint32_t boot_timeout_ms = 10000;
  bool allow_faults = false;
  /// Keep an agent's workspace image when its VM ends, as
  /// state_dir/workspaces/<instance>/<id>.ext4 (keep_workspaces).
  bool keep_workspaces = false;
  uint32_t uid = 20000;
  uint32_t gid = 20000;
  /// Snapshot pool: the first spawn of each VM shape (memory, workspace
  /// size) also boots a parked template VM and snapshots it; later spawns of
  /// that shape restore the snapshot instead of booting (qemu: migration to
  /// and from a file; firecracker: /snapshot/create and /snapshot/load).
  bool snapshots = false;
  /// The guest kernel's command line for these boot parameters.
  std::function<std::string(const vm::boot_params&)> kernel_cmdline;
  /// qemu only: its argv for an agent (`spec`: name and memory) booting
  /// with these parameters.
  std::function<std::vector<std::string>(const agent_spec&, const qemu_files&,
                                         const vm::boot_params&)>
    qemu_argv;
};

/// The guest's boot parameters for an agent on a VMM with this transport
/// ("virtio-serial" or "vsock"); the workspace is the first virtio disk.
vm::boot_params boot_params_for(const agent_spec& spec, std::string transport);

/// Guest memory on top of the agent's memory limit. Debian's kernel keeps
/// about 50 MiB of a VM (MemTotal 142 MiB of 192), the unpacked initramfs
/// 11 MiB more, and the kernel needs room to work near the limit: with a
/// 64 MiB reserve a 128 MiB agent met the VM-wide OOM killer at 88 MiB,
/// never its own limit. With 96 MiB the agent's cgroup limit is reached
/// first, so an OOM is the agent's, as on the sandbox backend.
inline constexpr uint64_t guest_reserve_mib = 96;

/// The VM's memory for an agent: ceil(memory_bytes / MiB) + guest_reserve_mib.
inline uint64_t vm_memory_mib(uint64_t memory_bytes) {
  constexpr uint64_t mib = 1ull << 20;
  return (memory_bytes + mib - 1) / mib + guest_reserve_mib;
}

/// After a stop's grace period the guest SIGKILLs the agent, reports its
/// exit and reboots; the VMM is SIGKILLed only this much later, so the exit
/// report is not lost to the race.
inline constexpr uint32_t stop_margin_ms = 1000;

/// A name looked up in PATH, or a path checked as is; empty when not found.
std::string find_program(const std::string& name);

/// Spawns the actor; the caller has checked the host. The actor kills what
/// VMs remain, and removes their directories, when it terminates.
backend_actor spawn_vm_backend(caf::actor_system& sys, io::io_thread& io, vmm_config cfg);

} // namespace agentvisor::microvm

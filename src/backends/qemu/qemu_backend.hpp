#pragma once
/// The qemu backend (backend_actor): one qemu-system-x86_64 per agent,
/// `-M microvm` (or `-M q35` where microvm is missing), KVM when /dev/kvm is
/// usable and TCG otherwise, booting our guest image. The actor is the
/// shared microVM actor (src/backends/microvm); this folder decides the
/// machine, the accelerator and qemu's argv. docs/backends.md ("qemu").

#include "agentvisor/backend.hpp"
#include "agentvisor/error.hpp"
#include "agentvisor/io.hpp"

#include "vm_backend.hpp"

#include <caf/fwd.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace agentvisor::qemu {

struct backend_options {
  std::string instance = "default";
  std::string state_dir = "/var/lib/agentvisor";
  std::string binary = "qemu-system-x86_64";
  /// The guest image (scripts/build-guest-image). Empty: vmlinux and
  /// initrd.img in the image directory found next to the executable
  /// (default_image_dir).
  std::string kernel;
  std::string initrd;
  /// "auto" (kvm when /dev/kvm opens read-write, else tcg), "kvm", "tcg".
  std::string accel = "auto";
  /// "auto" (microvm when this qemu has it, else q35), "microvm", "q35".
  std::string machine = "auto";
  uint32_t vcpus = 1;
  /// TCG boots take seconds (tens on a loaded host).
  uint32_t boot_timeout_ms = 60000;
  bool allow_faults = false;
  /// Keep each workspace image when its VM ends (keep_workspaces).
  bool keep_workspaces = false;
  /// Restore agents from a snapshot of a parked template VM per shape
  /// (microvm::vmm_config::snapshots).
  bool snapshots = false;
};

/// What check_host settled for this host.
struct host_choice {
  std::string binary; ///< resolved path
  std::string accel;  ///< "kvm" or "tcg"
  std::string machine; ///< "microvm" or "q35"
  std::string kernel, initrd;
  /// The host's TSC rate: told to a TCG guest, which has no device to
  /// calibrate its clock against on microvm (it hangs at boot otherwise).
  uint32_t tsc_khz = 0;
  /// Why the choice differs from what one would guess (KVM present but
  /// not working), for the start-up log; empty when nothing to say.
  std::string note;
};

/// Resolves accel, machine and image; errors name what is missing (the
/// binary, /dev/kvm when accel is kvm, the kernel or initrd, a machine this
/// qemu lacks). With accel auto and a /dev/kvm that opens, boots the kernel
/// once under KVM to see that it runs (a nested host may offer a KVM that
/// fails on the guest's first instructions) and falls back to TCG if not.
/// Blocking (runs qemu): start-up only.
result<host_choice> check_host(const backend_options& opts, const std::string& exe);

/// Where scripts/build-guest-image put the image for this executable: the
/// build tree's build/guest-image, or <prefix>/share/agentvisor/guest.
std::string default_image_dir(const std::string& exe);

/// The guest kernel's command line for these boot parameters.
std::string kernel_cmdline(const host_choice& host, const vm::boot_params& p);

/// qemu's argv for an agent (`spec`: its name and memory) booting with
/// `p` (its fds 3-5 are the socketpairs).
std::vector<std::string> argv(const host_choice& host, uint32_t vcpus, const agent_spec& spec,
                              const microvm::qemu_files& files, const vm::boot_params& p);

/// check_host, then the actor. `exe` is the running executable (for the
/// default image directory).
result<backend_actor> spawn_qemu_backend(caf::actor_system& sys, io::io_thread& io,
                                         const backend_options& opts, const std::string& exe);

/// The actor over an already checked host (tests, benchmarks).
backend_actor spawn_qemu_backend(caf::actor_system& sys, io::io_thread& io,
                                 const backend_options& opts, const host_choice& host);

} // namespace agentvisor::qemu

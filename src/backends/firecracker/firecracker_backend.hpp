#pragma once
/// The Firecracker backend (backend_actor, the shared microVM actor in
/// src/backends/microvm configured for firecracker): one firecracker
/// process (optionally under the jailer) per agent, configured through its API
/// socket, booting our guest image (kernel + initramfs whose PID 1 is
/// `agentvisor-guest --vm-init`). The guest connects back over vsock: the
/// guest protocol channel (vm::vsock_channel_port) goes straight to the
/// agent's owner, the control channel (vm::vsock_control_port) to this actor,
/// which turns its events into agent_oom and agent_exited, as the sandbox
/// backend does from cgroup events. docs/backends.md ("firecracker").

#include "agentvisor/backend.hpp"
#include "agentvisor/error.hpp"
#include "agentvisor/io.hpp"

#include "vm_backend.hpp"

#include <caf/fwd.hpp>

#include <cstdint>
#include <string>

namespace agentvisor::firecracker {

struct backend_options {
  std::string instance = "default";
  /// Each VM's files live in state_dir/vms/<instance>/<id>, removed when
  /// the VM ends.
  std::string state_dir = "/var/lib/agentvisor";
  /// The firecracker binary: a path, or a name looked up in PATH.
  std::string binary = "firecracker";
  /// The jailer binary; empty: run firecracker directly.
  std::string jailer;
  /// The guest image (scripts/build-guest-image): kernel and initramfs.
  std::string kernel;
  std::string initrd;
  uint32_t vcpus = 1;
  /// From the spawn request to the guest's `booted`.
  uint32_t boot_timeout_ms = 10000;
  /// Chaos runs may arm spawn faults (agents.allow_faults).
  bool allow_faults = false;
  /// Keep each workspace image when its VM ends (keep_workspaces).
  bool keep_workspaces = false;
  /// Restore agents from a snapshot of a parked template VM per shape
  /// (microvm::vmm_config::snapshots). Not with the jailer.
  bool snapshots = false;
  /// The jailer drops firecracker to these ids.
  uint32_t uid = 20000;
  uint32_t gid = 20000;
};

/// Why this host cannot run the backend, naming what is missing: /dev/kvm
/// (absent or not read-writable), the firecracker binary, the jailer, the
/// kernel or the initramfs. Blocking (a few stat calls): start-up only.
result<void> check_host(const backend_options& opts);

/// Checks the host (check_host), then spawns the backend actor. The actor
/// kills what VMs remain, and removes their directories, when it terminates.
result<backend_actor> spawn_firecracker_backend(caf::actor_system& sys, io::io_thread& io,
                                                backend_options opts);

/// Spawns the actor without check_host: for tests that play firecracker
/// with a fake program (tests/microvm/fake_vmm.cpp).
backend_actor spawn_firecracker_backend_unchecked(caf::actor_system& sys, io::io_thread& io,
                                                  backend_options opts);

using microvm::guest_reserve_mib;
using microvm::stop_margin_ms;
using microvm::vm_memory_mib;

/// The kernel command line: fixed words plus vm::to_cmdline.
std::string boot_args(const vm::boot_params& p);
std::string boot_args(const agent_spec& spec);

} // namespace agentvisor::firecracker

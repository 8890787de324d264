#include "firecracker_backend.hpp"

#include "agentvisor/vm_control.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace agentvisor::firecracker {

std::string boot_args(const vm::boot_params& p) {
  // reboot=k: the guest's reboot at the end (init) makes firecracker exit.
  return "console=ttyS0 reboot=k panic=-1 pci=off quiet" + vm::to_cmdline(p);
}

std::string boot_args(const agent_spec& spec) {
  return boot_args(microvm::boot_params_for(spec, "vsock"));
}

result<void> check_host(const backend_options& opts) {
  // A setting that cannot work, whatever the host has.
  if (opts.snapshots && !opts.jailer.empty())
    return error{"firecracker backend: snapshots do not work with the jailer yet (each "
                 "restore would need the template's files linked into its chroot)"};
  int kvm = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0)
    return error::from_errno("firecracker backend: /dev/kvm (KVM is needed to run microVMs)", errno);
  ::close(kvm);
  if (microvm::find_program(opts.binary).empty())
    return error{"firecracker backend: the firecracker binary '" + opts.binary
                 + "' was not found (not in PATH or not executable)"};
  if (!opts.jailer.empty() && microvm::find_program(opts.jailer).empty())
    return error{"firecracker backend: the jailer binary '" + opts.jailer + "' was not found"};
  if (opts.kernel.empty())
    return error{"firecracker backend: no guest kernel configured"};
  if (::access(opts.kernel.c_str(), R_OK) != 0)
    return error::from_errno("firecracker backend: guest kernel " + opts.kernel, errno);
  if (!opts.initrd.empty() && ::access(opts.initrd.c_str(), R_OK) != 0)
    return error::from_errno("firecracker backend: guest initramfs " + opts.initrd, errno);
  return {};
}

backend_actor spawn_firecracker_backend_unchecked(caf::actor_system& sys, io::io_thread& io,
                                                  backend_options opts) {
  microvm::vmm_config cfg;
  cfg.kind = microvm::vmm_kind::firecracker;
  cfg.name = "firecracker";
  cfg.instance = std::move(opts.instance);
  cfg.state_dir = std::move(opts.state_dir);
  cfg.binary = std::move(opts.binary);
  cfg.jailer = std::move(opts.jailer);
  cfg.kernel = std::move(opts.kernel);
  cfg.initrd = std::move(opts.initrd);
  cfg.vcpus = opts.vcpus;
  cfg.boot_timeout_ms = opts.boot_timeout_ms;
  cfg.allow_faults = opts.allow_faults;
  cfg.keep_workspaces = opts.keep_workspaces;
  cfg.uid = opts.uid;
  cfg.gid = opts.gid;
  cfg.snapshots = opts.snapshots;
  cfg.kernel_cmdline = [](const vm::boot_params& p) { return boot_args(p); };
  return microvm::spawn_vm_backend(sys, io, std::move(cfg));
}

result<backend_actor> spawn_firecracker_backend(caf::actor_system& sys, io::io_thread& io,
                                                backend_options opts) {
  if (auto ok = check_host(opts); !ok)
    return ok.err();
  return spawn_firecracker_backend_unchecked(sys, io, std::move(opts));
}

} // namespace agentvisor::firecracker

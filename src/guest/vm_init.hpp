#pragma once
/// `agentvisor-guest --vm-init`: PID 1 of a microVM (qemu, firecracker).
///
/// It does inside the VM what the sandbox backend does from the host: mounts
/// what the agent needs, loads the image's modules, opens the guest channel
/// and the control channel (include/agentvisor/vm_control.hpp), puts the
/// agent in a cgroup with the spec's memory and pids limits, mounts the
/// workspace, and forks the agent's main loop (run_agent). It then watches
/// the agent: OOM kills and usage go to the host on the control channel, and
/// when the agent ends it reports `exited` and reboots the VM, which makes
/// the VMM exit (qemu -no-reboot, firecracker on reboot).

namespace agentvisor::guest {

/// Never returns when it runs as PID 1 (the VM is rebooted); returns 2 when
/// not PID 1 (refused: it would mount over the host).
int run_vm_init();

} // namespace agentvisor::guest

#pragma once
/// The VM control channel: newline-delimited JSON between a microVM backend
/// (qemu, firecracker) on the host and `agentvisor-guest --vm-init`, PID 1
/// inside the VM. It carries what the sandbox backend learns from the host
/// kernel (cgroup OOM events, the guest's exit status, usage), which a VM
/// hides from the host. The guest protocol proper (tool calls, heartbeats)
/// runs on a second channel and goes straight to the agent's owner, as with
/// the sandbox backend. docs/guest-protocol.md documents both; keep them in
/// step. The codec has no behaviour and links no CAF.
///
/// Transports (the kernel command line's `agentvisor.transport=`):
///  - virtio-serial: two virtserialports named channel_port_name and
///    control_port_name (qemu);
///  - vsock: the guest connects to the host (CID 2) on vsock_channel_port and
///    vsock_control_port (firecracker forwards them to `<uds_path>_<port>`).

#include "agentvisor/error.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace agentvisor::vm {

inline constexpr std::string_view channel_port_name = "org.agentvisor.channel";
inline constexpr std::string_view control_port_name = "org.agentvisor.control";
inline constexpr uint32_t vsock_channel_port = 1024;
inline constexpr uint32_t vsock_control_port = 1025;

/// The longest control line either way, newline excluded (a `start` with
/// the agent's environment is the longest).
inline constexpr std::size_t max_control_line_bytes = 64 * 1024;

// --- guest (init) -> host ----------------------------------------------------

/// Init has mounted what it needs, opened both channels and started the
/// agent process.
struct booted {
  std::string kernel;         ///< uname -r
  uint64_t memory_bytes = 0;  ///< MemTotal
  uint64_t boot_ms = 0;       ///< CLOCK_BOOTTIME when init got here
  bool operator==(const booted&) const = default;
};

/// An OOM kill inside the agent's cgroup in the VM (the agent may live on).
struct oom {
  uint64_t limit_bytes = 0;
  uint64_t peak_bytes = 0;
  bool operator==(const oom&) const = default;
};

/// Usage of the agent's cgroup in the VM, sent every heartbeat period.
struct usage {
  uint64_t memory_bytes = 0;
  uint64_t memory_peak_bytes = 0;
  uint64_t pids = 0;
  uint64_t cpu_usage_ns = 0;
  uint64_t oom_kills = 0;
  bool operator==(const usage&) const = default;
};

/// The agent process ended; init powers the VM off right after. Exactly one
/// of code (signal == 0) and signal applies.
struct exited {
  int32_t code = 0;
  int32_t signal = 0;
  bool oom = false; ///< the OOM killer ended it
  uint64_t peak_bytes = 0;
  bool operator==(const exited&) const = default;
};

/// Init could not set the VM up (a module, a mount, a channel); it powers
/// off after writing this.
struct init_failed {
  std::string message;
  bool operator==(const init_failed&) const = default;
};

/// A parked init (boot_params::park) has opened both channels and waits
/// for `start`: the host may now pause the VM and snapshot it. Nothing of
/// an agent exists yet, so one snapshot serves every agent of its shape.
struct parked {
  bool operator==(const parked&) const = default;
};

using guest_event = std::variant<booted, oom, usage, exited, init_failed, parked>;

// --- host -> guest (init) ----------------------------------------------------

/// The first line the host writes: init waits for it before it starts the
/// agent, which gets these KEY=VALUE pairs in its environment (so do the
/// commands it runs).
struct start {
  std::vector<std::string> env;
  /// The agent's `agentvisor.*` words (to_cmdline), replacing the kernel
  /// command line's: a VM restored from a snapshot booted with a parked
  /// template's. Empty: the command line's stand.
  std::string params;
  bool operator==(const start&) const = default;
};

/// Ask the agent to end (SIGTERM), SIGKILL it after grace_ms, power off.
struct stop {
  uint32_t grace_ms = 5000;
  bool operator==(const stop&) const = default;
};

/// Send the agent process this signal (chaos: kill or stop the guest
/// without killing the VM).
struct signal {
  int32_t signum = 0;
  bool operator==(const signal&) const = default;
};

using host_request = std::variant<start, stop, signal>;

/// Each appends one line, '\n' included.
void encode(const guest_event& x, std::string& out);
void encode(const host_request& x, std::string& out);

/// Errors name the message and field ("exited.signal: expected an integer").
result<guest_event> decode_guest_event(std::string_view line);
result<host_request> decode_host_request(std::string_view line);

// --- kernel command line -------------------------------------------------------

/// What init reads from /proc/cmdline (`agentvisor.*` keys); the backends
/// write it with to_cmdline.
struct boot_params {
  std::string transport = "virtio-serial"; ///< or "vsock"
  uint32_t heartbeat_ms = 1000;
  bool allow_faults = false;
  uint32_t pids = 128;
  /// The agent's cgroup memory.max inside the VM; 0: what is left after
  /// init's reserve.
  uint64_t memory_bytes = 0;
  /// The workspace's block device ("" : a tmpfs of workspace_bytes).
  std::string workspace_device = "/dev/vda";
  uint64_t workspace_bytes = 128ull << 20;
  std::string agent_id;
  /// A template boot (`agentvisor.park=1`): init opens its channels, reports
  /// `parked` and waits for a `start` whose params say which agent it is;
  /// only then does it set up the agent's cgroup and workspace. While it
  /// waits, a lost channel (a vsock reset by a snapshot restore) is opened
  /// again.
  bool park = false;
  bool operator==(const boot_params&) const = default;
};

/// " agentvisor.transport=... agentvisor.id=..." (leading space).
std::string to_cmdline(const boot_params& p);

/// Reads the agentvisor.* words of a kernel command line; unknown
/// agentvisor.* keys and bad values are errors naming the key.
result<boot_params> parse_cmdline(std::string_view cmdline);

} // namespace agentvisor::vm

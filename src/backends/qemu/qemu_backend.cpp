#include "qemu_backend.hpp"

#include "agentvisor/vm_control.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string_view>

namespace agentvisor::qemu {

namespace fs = std::filesystem;

namespace {

/// The host's TSC rate in kHz from /proc/cpuinfo ("cpu MHz"), 0 if unknown.
uint32_t host_tsc_khz() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (!line.starts_with("cpu MHz")) continue;
    auto colon = line.find(':');
    if (colon == std::string::npos) break;
    return static_cast<uint32_t>(std::strtod(line.c_str() + colon + 1, nullptr) * 1000);
  }
  return 0;
}

/// Whether `binary -M help` lists `machine`.
bool has_machine(const std::string& binary, std::string_view machine) {
  std::string cmd = "'" + binary + "' -M help 2>/dev/null";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return false;
  char buf[512];
  bool found = false;
  while (std::fgets(buf, sizeof buf, p)) {
    std::string_view l(buf);
    if (l.starts_with(machine) && l.size() > machine.size() && l[machine.size()] == ' ')
      found = true;
  }
  ::pclose(p);
  return found;
}

} // namespace

std::string default_image_dir(const std::string& exe) {
  auto dir = fs::path(exe).parent_path();
  for (auto candidate : {dir / "../../guest-image", dir / "../share/agentvisor/guest"}) {
    std::error_code ec;
    if (fs::exists(candidate / "initrd.img", ec))
      return fs::weakly_canonical(candidate, ec).string();
  }
  return (dir / "../../guest-image").lexically_normal().string();
}

result<host_choice> check_host(const backend_options& opts, const std::string& exe) {
  host_choice h;
  h.binary = microvm::find_program(opts.binary);
  if (h.binary.empty())
    return error{"qemu backend: the qemu binary '" + opts.binary
                 + "' was not found (install qemu-system-x86, or set qemu.binary)"};
  bool kvm = false;
  if (int fd = ::open("/dev/kvm", O_RDWR | O_CLOEXEC); fd >= 0) {
    kvm = true;
    ::close(fd);
  }
  if (opts.accel == "kvm" && !kvm)
    return error::from_errno("qemu backend: qemu.accel is kvm but /dev/kvm is not usable", errno);
  if (opts.accel != "auto" && opts.accel != "kvm" && opts.accel != "tcg")
    return error{"qemu backend: qemu.accel must be auto, kvm or tcg, not \"" + opts.accel + "\""};
  h.accel = opts.accel == "auto" ? (kvm ? "kvm" : "tcg") : opts.accel;
  if (opts.machine == "auto") {
    h.machine = has_machine(h.binary, "microvm") ? "microvm" : "q35";
  } else if (opts.machine == "microvm" || opts.machine == "q35") {
    if (!has_machine(h.binary, opts.machine))
      return error{"qemu backend: " + h.binary + " has no machine " + opts.machine};
    h.machine = opts.machine;
  } else {
    return error{"qemu backend: qemu.machine must be auto, microvm or q35, not \"" + opts.machine + "\""};
  }
  auto dir = default_image_dir(exe);
  h.kernel = opts.kernel.empty() ? dir + "/vmlinux" : opts.kernel;
  h.initrd = opts.initrd.empty() ? dir + "/initrd.img" : opts.initrd;
  for (const auto& [what, path] : {std::pair{"kernel", h.kernel}, std::pair{"initrd", h.initrd}})
    if (::access(path.c_str(), R_OK) != 0)
      return error::from_errno(std::string("qemu backend: guest ") + what + " " + path
                                 + " (build it: scripts/build-guest-image)", errno);
  h.tsc_khz = host_tsc_khz();
  return h;
}

std::string kernel_cmdline(const host_choice& host, const agent_spec& spec) {
  vm::boot_params p;
  p.transport = "virtio-serial";
  p.heartbeat_ms = spec.heartbeat_ms;
  p.allow_faults = spec.allow_faults;
  p.pids = spec.pids;
  p.memory_bytes = spec.memory_bytes;
  p.workspace_device = "/dev/vda";
  p.workspace_bytes = spec.workspace_bytes;
  p.agent_id = spec.id;
  // reboot=t with -no-reboot: init's reboot at the end makes qemu exit.
  std::string s = "console=ttyS0 reboot=t panic=-1 quiet";
  if (host.accel == "tcg" && host.machine == "microvm" && host.tsc_khz > 0) {
    // microvm under TCG has no clock to calibrate the TSC against; give
    // the rate (TCG's TSC is the host's) and skip the timer checks.
    s += " tsc_early_khz=" + std::to_string(host.tsc_khz)
         + " lpj=" + std::to_string(uint64_t(host.tsc_khz) * 1000 / 250) + " no_timer_check";
  }
  return s + vm::to_cmdline(p);
}

std::vector<std::string> argv(const host_choice& host, uint32_t vcpus, const agent_spec& spec,
                              const microvm::qemu_files& f) {
  bool micro = host.machine == "microvm";
  std::string machine = micro ? "microvm,acpi=on,x-option-roms=off,rtc=on" : "q35";
  if (micro && host.accel == "tcg") machine += ",pit=on,pic=on";
  const char* bus = micro ? "device" : "pci";
  auto dev = [&](std::string_view name) { return std::string(name) + "-" + bus; };
  return {
    host.binary,
    "-name", "agentvisor-" + spec.id,
    "-M", machine,
    "-accel", host.accel,
    "-m", std::to_string(microvm::vm_memory_mib(spec.memory_bytes)) + "M",
    "-smp", std::to_string(vcpus),
    "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
    "-kernel", host.kernel,
    "-initrd", host.initrd,
    "-append", kernel_cmdline(host, spec),
    "-serial", "file:" + f.console_log,
    "-device", dev("virtio-serial"),
    "-chardev", "socket,id=channel,fd=" + std::to_string(f.channel_fd),
    "-device", "virtserialport,chardev=channel,name=" + std::string(vm::channel_port_name),
    "-chardev", "socket,id=control,fd=" + std::to_string(f.control_fd),
    "-device", "virtserialport,chardev=control,name=" + std::string(vm::control_port_name),
    "-chardev", "socket,id=qmp,fd=" + std::to_string(f.qmp_fd),
    "-mon", "chardev=qmp,mode=control",
    "-drive", "id=workspace,file=" + f.workspace + ",format=raw,if=none,cache=unsafe",
    "-device", dev("virtio-blk") + ",drive=workspace",
    "-device", dev("virtio-balloon") + ",id=balloon0",
  };
}

backend_actor spawn_qemu_backend(caf::actor_system& sys, io::io_thread& io,
                                 const backend_options& opts, const host_choice& host) {
  microvm::vmm_config cfg;
  cfg.kind = microvm::vmm_kind::qemu;
  cfg.name = "qemu";
  cfg.instance = opts.instance;
  cfg.state_dir = opts.state_dir;
  cfg.binary = host.binary;
  cfg.kernel = host.kernel;
  cfg.initrd = host.initrd;
  cfg.vcpus = opts.vcpus;
  cfg.boot_timeout_ms = opts.boot_timeout_ms;
  cfg.allow_faults = opts.allow_faults;
  cfg.kernel_cmdline = [host](const agent_spec& s) { return kernel_cmdline(host, s); };
  cfg.qemu_argv = [host, vcpus = opts.vcpus](const agent_spec& s, const microvm::qemu_files& f) {
    return argv(host, vcpus, s, f);
  };
  return microvm::spawn_vm_backend(sys, io, std::move(cfg));
}

result<backend_actor> spawn_qemu_backend(caf::actor_system& sys, io::io_thread& io,
                                         const backend_options& opts, const std::string& exe) {
  auto host = check_host(opts, exe);
  if (!host) return std::move(host).err();
  return spawn_qemu_backend(sys, io, opts, *host);
}

} // namespace agentvisor::qemu

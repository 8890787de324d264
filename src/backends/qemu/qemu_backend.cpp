#include "qemu_backend.hpp"

#include "agentvisor/vm_control.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <optional>
#include <vector>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
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

/// Whether KVM runs this guest kernel: /dev/kvm may open and yet fail
/// (nested virtualisation without the features the kernel uses: the guest
/// never prints a line, or qemu reports "KVM internal error ... emulation
/// failure" and pauses the VM, or aborts setting an MSR). Boots the kernel
/// with no initramfs and no init: a working KVM prints the kernel's first
/// lines at once (earlyprintk), panics at "no working init" and, with
/// panic=-1, reboot=t (a triple fault: resets on every machine type) and
/// -no-reboot, exits within a second or two. No line within 3 s, no exit
/// within 20 s or an exit that is not clean is a no, with qemu's last
/// words. Blocking: start-up only, once per process and kernel.
std::optional<std::string> kvm_fails(const std::string& binary, const std::string& machine,
                                     const std::string& kernel) {
  static std::map<std::string, std::optional<std::string>> known;
  auto key = binary + '\0' + machine + '\0' + kernel;
  if (auto k = known.find(key); k != known.end())
    return k->second;
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0)
    return std::string{"pipe: "} + std::strerror(errno);
  std::vector<std::string> args{binary, "-M", machine == "microvm" ? "microvm" : "q35",
                                "-accel", "kvm", "-m", "128M", "-nodefaults", "-no-user-config",
                                "-display", "none", "-no-reboot", "-kernel", kernel,
                                "-append", "console=ttyS0 earlyprintk=ttyS0 reboot=t panic=-1 "
                                           "init=/agentvisor-kvm-probe",
                                "-serial", "stdio"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) {
    int err = errno;
    ::close(out[0]);
    ::close(out[1]);
    return std::string{"fork: "} + std::strerror(err);
  }
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::dup2(out[1], 2);
    int null = ::open("/dev/null", O_RDONLY);
    if (null >= 0) ::dup2(null, 0);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(out[1]);
  using clock = std::chrono::steady_clock;
  auto start = clock::now();
  std::string text, stalled;
  bool eof = false;
  while (!eof) {
    bool printed = text.find("Linux version") != std::string::npos;
    auto deadline = start + (printed ? std::chrono::seconds(20) : std::chrono::seconds(3));
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
    if (left <= 0) {
      stalled = printed ? "no exit within 20 s" : "the guest kernel printed nothing within 3 s";
      break;
    }
    pollfd p{out[0], POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    char buf[4096];
    auto n = ::read(out[0], buf, sizeof buf);
    if (n <= 0) eof = true;
    else if (text.size() < (1u << 16)) text.append(buf, static_cast<size_t>(n));
    // A KVM internal error pauses the VM: it would never exit by itself.
    if (text.find("KVM internal error") != std::string::npos) break;
  }
  ::close(out[0]);
  int status = 0;
  if (!eof) ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  std::optional<std::string> why;
  if (!eof || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    // qemu's own complaints are the reason; the kernel's log is not.
    std::string said;
    for (std::size_t at = 0; at < text.size();) {
      auto nl = text.find('\n', at);
      auto line = text.substr(at, nl == std::string::npos ? std::string::npos : nl - at);
      if ((line.starts_with("qemu-system") && line.find("warning") == std::string::npos)
          || line.starts_with("KVM") || line.find("emulation failure") != std::string::npos)
        said += (said.empty() ? "" : "; ") + line;
      if (nl == std::string::npos) break;
      at = nl + 1;
    }
    why = !stalled.empty() ? stalled + (said.empty() ? "" : "; " + said)
          : !said.empty()  ? said
                           : "qemu exited with status " + std::to_string(status);
  }
  known.emplace(key, why);
  return why;
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
  h.accel = opts.accel == "auto" ? (kvm ? "kvm" : "tcg") : opts.accel;
  if (opts.accel == "auto" && kvm) {
    if (auto why = kvm_fails(h.binary, h.machine, h.kernel)) {
      h.accel = "tcg";
      h.note = "/dev/kvm is there but KVM does not run the guest (" + *why + "): using TCG";
    }
  }
  h.tsc_khz = host_tsc_khz();
  return h;
}

std::string kernel_cmdline(const host_choice& host, const vm::boot_params& p) {
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
                              const microvm::qemu_files& f, const vm::boot_params& p) {
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
    "-append", kernel_cmdline(host, p),
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
  cfg.keep_workspaces = opts.keep_workspaces;
  cfg.snapshots = opts.snapshots;
  cfg.kernel_cmdline = [host](const vm::boot_params& p) { return kernel_cmdline(host, p); };
  cfg.qemu_argv = [host, vcpus = opts.vcpus](const agent_spec& s, const microvm::qemu_files& f,
                                             const vm::boot_params& p) {
    return argv(host, vcpus, s, f, p);
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

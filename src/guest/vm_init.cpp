#include "vm_init.hpp"

#include "agent.hpp"

#include "agentvisor/vm_control.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace agentvisor::guest {

namespace {

constexpr const char* cgroup_root = "/sys/fs/cgroup";
constexpr const char* agent_cgroup = "/sys/fs/cgroup/agent";
/// The image's modules, one path a line in load order (scripts/build-guest-image).
constexpr const char* module_list = "/lib/modules/agentvisor.load";
/// How long init waits for a channel device or the workspace disk to
/// appear after its driver loaded (TCG boots are slow).
constexpr int device_wait_ms = 20000;

uint64_t now_ms(clockid_t clock = CLOCK_MONOTONIC) {
  timespec ts{};
  ::clock_gettime(clock, &ts);
  return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1000000;
}

void sleep_ms(int ms) {
  timespec ts{ms / 1000, long(ms % 1000) * 1000000};
  while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

void console(const std::string& what) {
  std::fprintf(stderr, "agentvisor-guest init: %s\n", what.c_str());
}

std::string errno_text(const std::string& what) {
  return what + ": " + std::strerror(errno);
}

bool write_all(int fd, std::string_view s) {
  while (!s.empty()) {
    auto n = ::write(fd, s.data(), s.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        pollfd p{fd, POLLOUT, 0};
        ::poll(&p, 1, 100);
        continue;
      }
      return false;
    }
    s.remove_prefix(size_t(n));
  }
  return true;
}

bool write_file(const std::string& path, const std::string& value) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = write_all(fd, value);
  ::close(fd);
  return ok;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

uint64_t read_u64(const std::string& path) {
  auto s = read_file(path);
  return std::strtoull(s.c_str(), nullptr, 10);
}

/// The value of `key` in a "key value" file (memory.events, cpu.stat).
uint64_t read_key(const std::string& path, std::string_view key) {
  std::istringstream in(read_file(path));
  std::string k;
  uint64_t v = 0;
  while (in >> k >> v)
    if (k == key) return v;
  return 0;
}

/// Mounts the API file systems and gives init a console (the initramfs
/// has no /dev/console node: devtmpfs brings it).
std::optional<std::string> mount_basics() {
  struct m { const char* src; const char* dst; const char* type; const char* opts; };
  const m mounts[] = {
    {"proc", "/proc", "proc", nullptr},
    {"sysfs", "/sys", "sysfs", nullptr},
    {"devtmpfs", "/dev", "devtmpfs", nullptr},
    {"tmpfs", "/tmp", "tmpfs", "mode=1777"},
    {"tmpfs", "/run", "tmpfs", "mode=755"},
  };
  for (const auto& x : mounts) {
    ::mkdir(x.dst, 0755);
    if (::mount(x.src, x.dst, x.type, MS_NOSUID, x.opts) != 0 && errno != EBUSY)
      return errno_text(std::string("mount ") + x.type + " on " + x.dst);
  }
  if (::fcntl(2, F_GETFD) < 0 || ::fcntl(1, F_GETFD) < 0) {
    int fd = ::open("/dev/console", O_RDWR);
    if (fd >= 0) {
      for (int i = 0; i < 3; ++i)
        if (::fcntl(i, F_GETFD) < 0) ::dup2(fd, i);
      if (fd > 2) ::close(fd);
    }
  }
  return std::nullopt;
}

std::optional<std::string> load_modules() {
  std::ifstream in(module_list);
  if (!in) return std::nullopt; // an image with everything built in
  std::string path;
  while (std::getline(in, path)) {
    if (path.empty() || path[0] == '#') continue;
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno_text("open module " + path);
    long r = ::syscall(SYS_finit_module, fd, "", 0);
    int err = errno;
    ::close(fd);
    if (r != 0 && err != EEXIST) {
      errno = err;
      return errno_text("finit_module " + path);
    }
  }
  return std::nullopt;
}

/// /dev/vportNpM of the virtio-serial port named `name`, once it appears.
std::optional<std::string> find_port(std::string_view name) {
  DIR* d = ::opendir("/sys/class/virtio-ports");
  if (!d) return std::nullopt;
  std::optional<std::string> found;
  while (auto* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::string port = e->d_name;
    auto n = read_file("/sys/class/virtio-ports/" + port + "/name");
    while (!n.empty() && (n.back() == '\n' || n.back() == '\0')) n.pop_back();
    if (n == name) {
      found = "/dev/" + port;
      break;
    }
  }
  ::closedir(d);
  return found;
}

/// Opens a channel: a virtio-serial port by name, or a vsock connection to
/// the host on `port`. Waits for the device (its driver probes after the
/// module loaded).
int open_channel(const vm::boot_params& p, std::string_view name, uint32_t port,
                 std::string& error) {
  auto deadline = now_ms() + device_wait_ms;
  while (true) {
    if (p.transport == "vsock") {
      int fd = ::socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd >= 0) {
        sockaddr_vm addr{};
        addr.svm_family = AF_VSOCK;
        addr.svm_cid = VMADDR_CID_HOST;
        addr.svm_port = port;
        if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) return fd;
        error = errno_text("connect vsock port " + std::to_string(port));
        ::close(fd);
      } else {
        error = errno_text("socket AF_VSOCK");
      }
    } else if (auto dev = find_port(name)) {
      int fd = ::open(dev->c_str(), O_RDWR | O_CLOEXEC | O_NOCTTY);
      if (fd >= 0) return fd;
      error = errno_text("open " + *dev + " (" + std::string(name) + ")");
    } else {
      error = "no virtio-serial port named " + std::string(name);
    }
    if (now_ms() > deadline) return -1;
    sleep_ms(5);
  }
}

std::optional<std::string> setup_cgroup(const vm::boot_params& p) {
  ::mkdir(cgroup_root, 0755);
  if (::mount("cgroup2", cgroup_root, "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0)
    return errno_text("mount cgroup2 on /sys/fs/cgroup");
  if (!write_file(std::string(cgroup_root) + "/cgroup.subtree_control", "+memory +pids"))
    return errno_text("enable memory and pids controllers");
  write_file(std::string(cgroup_root) + "/cgroup.subtree_control", "+cpu"); // best effort
  if (::mkdir(agent_cgroup, 0755) != 0 && errno != EEXIST) return errno_text("mkdir /sys/fs/cgroup/agent");
  if (!write_file(std::string(agent_cgroup) + "/pids.max", std::to_string(p.pids)))
    return errno_text("write pids.max");
  if (p.memory_bytes > 0 &&
      !write_file(std::string(agent_cgroup) + "/memory.max", std::to_string(p.memory_bytes)))
    return errno_text("write memory.max");
  return std::nullopt;
}

std::optional<std::string> mount_workspace(const vm::boot_params& p) {
  ::mkdir("/workspace", 0755);
  if (p.workspace_device.empty()) {
    auto opts = "size=" + std::to_string(p.workspace_bytes) + ",mode=755";
    if (::mount("workspace", "/workspace", "tmpfs", MS_NOSUID | MS_NODEV, opts.c_str()) != 0)
      return errno_text("mount tmpfs workspace");
    return std::nullopt;
  }
  auto deadline = now_ms() + device_wait_ms;
  while (::access(p.workspace_device.c_str(), F_OK) != 0) {
    if (now_ms() > deadline) return "workspace device " + p.workspace_device + " did not appear";
    sleep_ms(5);
  }
  if (::mount(p.workspace_device.c_str(), "/workspace", "ext4", MS_NOSUID | MS_NODEV, nullptr) != 0)
    return errno_text("mount " + p.workspace_device + " (ext4) on /workspace");
  return std::nullopt;
}

[[noreturn]] void power_off() {
  ::sync();
  ::kill(-1, SIGKILL);
  // The backends run the VM so that a reboot ends it (qemu -no-reboot with
  // reboot=t, firecracker with reboot=k).
  ::reboot(RB_AUTOBOOT);
  for (;;) ::pause();
}

class init {
public:
  explicit init(vm::boot_params p) : p_(std::move(p)) {}

  void send(const vm::guest_event& e) {
    if (control_ < 0) return;
    line_.clear();
    vm::encode(e, line_);
    if (!write_all(control_, line_)) console(errno_text("write to control channel"));
  }

  [[noreturn]] void fail(const std::string& what) {
    console(what);
    send(vm::init_failed{what});
    sleep_ms(100);
    power_off();
  }

  [[noreturn]] void run() {
    open_channels();
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    ::sigprocmask(SIG_BLOCK, &mask, nullptr);

    if (p_.park) send(vm::parked{});
    auto start = wait_for_start();
    if (p_.park && start.params.empty()) fail("control: a parked init's start has no params");
    if (!start.params.empty()) {
      // decode_host_request checked them; the transport is the one in use.
      auto agent = vm::parse_cmdline(start.params);
      if (!agent) fail("control: start.params: " + agent.err().message);
      agent->transport = p_.transport;
      bool was_parked = p_.park;
      p_ = std::move(*agent);
      // The template's kernel read the workspace disk's first blocks (the
      // partition scan) from another image: forget them before mounting.
      if (was_parked) forget_cached_blocks(p_.workspace_device);
    }
    if (auto e = setup_cgroup(p_)) fail(*e);
    if (auto e = mount_workspace(p_)) fail(*e);

    agent_ = ::fork();
    if (agent_ < 0) fail(errno_text("fork agent"));
    if (agent_ == 0) {
      for (auto& e : start.env) ::putenv(e.data());
      run_agent_child(channel_);
    }
    ::close(channel_);
    channel_ = -1;

    utsname u{};
    ::uname(&u);
    send(vm::booted{u.release, read_key("/proc/meminfo", "MemTotal:") * 1024,
                    now_ms(CLOCK_BOOTTIME)});
    loop(mask);
  }

private:
  void open_channels() {
    std::string err;
    control_ = open_channel(p_, vm::control_port_name, vm::vsock_control_port, err);
    if (control_ < 0) fail("control channel: " + err);
    channel_ = open_channel(p_, vm::channel_port_name, vm::vsock_channel_port, err);
    if (channel_ < 0) fail("guest channel: " + err);
  }

  static void forget_cached_blocks(const std::string& device) {
    if (device.empty()) return;
    int fd = ::open(device.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return; // mount_workspace waits for it and says so
    if (::ioctl(fd, BLKFLSBUF, 0) != 0) console(errno_text("BLKFLSBUF " + device));
    ::close(fd);
  }

  /// The host's `start`: the first control line. A parked init waits as
  /// long as it takes (the host snapshots it meanwhile), and opens its
  /// channels again when they drop: a restored firecracker VM's vsock
  /// connections are reset, and the new host listens anew.
  vm::start wait_for_start() {
    auto deadline = now_ms() + device_wait_ms;
    while (p_.park || now_ms() < deadline) {
      if (auto nl = pending_.find('\n'); nl != std::string::npos) {
        auto r = vm::decode_host_request(std::string_view(pending_).substr(0, nl));
        pending_.erase(0, nl + 1);
        if (!r) fail("control: " + r.err().message);
        if (auto* s = std::get_if<vm::start>(&*r)) return std::move(*s);
        fail("control: expected start first");
      }
      pollfd p{control_, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      char buf[4096];
      auto n = ::read(control_, buf, sizeof buf);
      if (n <= 0 && p_.park && (n == 0 || errno != EINTR)) {
        ::close(control_);
        ::close(channel_);
        pending_.clear();
        open_channels();
        continue;
      }
      if (n == 0) fail("control channel closed before start");
      if (n > 0) pending_.append(buf, size_t(n));
      if (pending_.size() > vm::max_control_line_bytes) fail("control: start line too long");
    }
    fail("no start from the host within " + std::to_string(device_wait_ms) + " ms");
  }

  [[noreturn]] void run_agent_child(int channel) {
    write_file(std::string(agent_cgroup) + "/cgroup.procs", "0");
    ::close(control_);
    if (channel != 3) {
      ::dup2(channel, 3);
      ::close(channel);
    }
    sigset_t all;
    sigfillset(&all);
    ::sigprocmask(SIG_UNBLOCK, &all, nullptr);
    ::setsid();
    agent_options opts;
    opts.workspace = "/workspace";
    opts.channel_fd = 3;
    opts.heartbeat_ms = p_.heartbeat_ms;
    opts.allow_faults = p_.allow_faults;
    opts.memory_file = std::string(agent_cgroup) + "/memory.current";
    ::_exit(run_agent(opts));
  }

  vm::usage read_usage() {
    std::string g = agent_cgroup;
    vm::usage u;
    u.memory_bytes = read_u64(g + "/memory.current");
    u.memory_peak_bytes = read_u64(g + "/memory.peak");
    u.pids = read_u64(g + "/pids.current");
    u.cpu_usage_ns = read_key(g + "/cpu.stat", "usage_usec") * 1000;
    u.oom_kills = read_key(g + "/memory.events", "oom_kill");
    return u;
  }

  /// Reports OOM kills since the last look; remembers when the last came.
  void check_oom() {
    auto kills = read_key(std::string(agent_cgroup) + "/memory.events", "oom_kill");
    if (kills <= oom_kills_) return;
    oom_kills_ = kills;
    last_oom_ms_ = now_ms();
    send(vm::oom{p_.memory_bytes, read_u64(std::string(agent_cgroup) + "/memory.peak")});
  }

  void on_request(std::string_view line) {
    auto r = vm::decode_host_request(line);
    if (!r) {
      console("control: " + r.err().message);
      return;
    }
    if (auto* s = std::get_if<vm::stop>(&*r)) {
      ::kill(agent_, SIGTERM);
      arm(kill_timer_, s->grace_ms, 0);
    } else if (auto* s = std::get_if<vm::signal>(&*r)) {
      ::kill(agent_, s->signum);
    }
  }

  static void arm(int tfd, uint32_t first_ms, uint32_t every_ms) {
    itimerspec its{};
    its.it_value = {first_ms / 1000, long(first_ms % 1000) * 1000000};
    if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0) its.it_value.tv_nsec = 1;
    its.it_interval = {every_ms / 1000, long(every_ms % 1000) * 1000000};
    ::timerfd_settime(tfd, 0, &its, nullptr);
  }

  [[noreturn]] void agent_ended(int status) {
    check_oom();
    vm::exited e;
    if (WIFSIGNALED(status)) {
      e.signal = WTERMSIG(status);
      // The OOM killer's SIGKILL: a kill counted in the agent's cgroup just
      // before it died.
      e.oom = e.signal == SIGKILL && last_oom_ms_ != 0 && now_ms() - last_oom_ms_ < 2000;
    } else {
      e.code = WEXITSTATUS(status);
    }
    e.peak_bytes = read_u64(std::string(agent_cgroup) + "/memory.peak");
    send(e);
    if (p_.transport == "vsock") {
      // Let the host read the last line before the VM goes.
      ::shutdown(control_, SHUT_WR);
      pollfd pf{control_, POLLIN, 0};
      ::poll(&pf, 1, 200);
    }
    power_off();
  }

  [[noreturn]] void loop(const sigset_t& mask) {
    int sfd = ::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    int tick = ::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    kill_timer_ = ::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    if (sfd < 0 || tick < 0 || kill_timer_ < 0) fail(errno_text("signalfd/timerfd"));
    uint32_t every = p_.heartbeat_ms < 100 ? 100 : p_.heartbeat_ms;
    arm(tick, every, every);
    std::string in = std::move(pending_);
    char buf[4096];
    for (;;) {
      pollfd fds[4] = {{sfd, POLLIN, 0}, {tick, POLLIN, 0}, {kill_timer_, POLLIN, 0},
                       {control_, POLLIN, 0}};
      if (::poll(fds, control_ >= 0 ? 4 : 3, -1) < 0) continue;
      if (fds[0].revents & POLLIN) {
        signalfd_siginfo si;
        while (::read(sfd, &si, sizeof si) == sizeof si) {}
        // SIGTERM to init (a VMM's graceful stop through ACPI does not come
        // here; this is a console user): stop the agent as `stop` would.
        if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) ::kill(agent_, SIGTERM);
        int status = 0;
        pid_t pid;
        while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0)
          if (pid == agent_) agent_ended(status);
      }
      if (fds[1].revents & POLLIN) {
        uint64_t n;
        (void)!::read(tick, &n, sizeof n);
        check_oom();
        send(read_usage());
      }
      if (fds[2].revents & POLLIN) {
        uint64_t n;
        (void)!::read(kill_timer_, &n, sizeof n);
        ::kill(agent_, SIGKILL);
      }
      if (control_ >= 0 && (fds[3].revents & (POLLIN | POLLHUP))) {
        auto n = ::read(control_, buf, sizeof buf);
        if (n <= 0) {
          // The host went away: nobody will read the agent's results.
          if (n == 0 || errno != EINTR) {
            console("control channel closed by the host; stopping the agent");
            ::close(control_);
            control_ = -1;
            ::kill(agent_, SIGKILL);
          }
          continue;
        }
        in.append(buf, size_t(n));
        size_t nl;
        while ((nl = in.find('\n')) != std::string::npos) {
          on_request(std::string_view(in).substr(0, nl));
          in.erase(0, nl + 1);
        }
        if (in.size() > vm::max_control_line_bytes) in.clear();
      }
    }
  }

  vm::boot_params p_;
  int control_ = -1;
  int channel_ = -1; ///< until the agent has it
  int kill_timer_ = -1;
  pid_t agent_ = -1;
  uint64_t oom_kills_ = 0;
  uint64_t last_oom_ms_ = 0;
  std::string line_;
  std::string pending_; ///< control bytes read before the main loop
};

} // namespace

int run_vm_init() {
  if (::getpid() != 1) {
    std::fprintf(stderr, "agentvisor-guest: --vm-init must run as PID 1 of a VM\n");
    return 2;
  }
  if (auto e = mount_basics()) {
    console(*e);
    power_off();
  }
  // The kernel gives init no PATH; commands agents run look there.
  ::setenv("PATH", "/bin:/sbin", 1);
  ::setenv("HOME", "/workspace", 1);
  auto params = vm::parse_cmdline(read_file("/proc/cmdline"));
  if (!params) {
    console(params.err().message);
    power_off();
  }
  init i(*params);
  if (auto e = load_modules()) i.fail(*e);
  i.run();
}

} // namespace agentvisor::guest

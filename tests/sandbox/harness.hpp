#pragma once
// A synchronous driver of the real sandbox parts for tests and benchmarks:
// the real template process (agentvisor-guest --template), real cgroups,
// real workspaces, and the guest's real protocol over the channel. It does
// what the sandbox backend does, minus the actors, and blocks with a
// timeout guard wherever the backend would wait for a message.

#include "cgroup.hpp"
#include "template.hpp"

#include "agentvisor/guest_protocol.hpp"
#include "agentvisor/json.hpp"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace harness {

namespace sb = agentvisor::sandbox;
namespace guest = agentvisor::guest;
using namespace std::chrono_literals;

inline int pidfd_open(pid_t pid) {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

/// Reads newline-delimited lines from an fd with a deadline.
class line_reader {
public:
  explicit line_reader(int fd) : fd_(fd) {}
  /// The next line, or nullopt on EOF or timeout.
  std::optional<std::string> next(std::chrono::milliseconds timeout = 10s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (auto nl = buf_.find('\n'); nl != std::string::npos) {
        auto line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return line;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0)
        return std::nullopt;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0)
        continue;
      char tmp[65536];
      auto n = ::read(fd_, tmp, sizeof tmp);
      if (n <= 0)
        return std::nullopt;
      buf_.append(tmp, static_cast<size_t>(n));
    }
  }

private:
  int fd_;
  std::string buf_;
};

/// An agent started through the template, from the test's point of view.
struct agent {
  std::string id;
  pid_t pid = -1;
  int pidfd = -1;
  int channel = -1;
  int oom_fd = -1;
  int workspace_fd = -1;
  sb::agent_cgroup cgroup;
  std::optional<line_reader> reader;
  guest::decoder dec;
  uint64_t next_call = 1;
  bool reaped = false;
  int wait_status = 0; // si_code/si_status packed: see exit_* below
  int exit_code = -1;
  int exit_signal = 0;

  void send(const std::string& line) {
    std::string l = line;
    if (l.empty() || l.back() != '\n')
      l += '\n';
    if (::write(channel, l.data(), l.size()) != static_cast<ssize_t>(l.size()))
      throw std::runtime_error("write to guest " + id + ": " + std::strerror(errno));
  }

  /// The next message that is not a heartbeat.
  std::optional<guest::guest_message> next_message(std::chrono::milliseconds timeout = 10s) {
    for (;;) {
      auto line = reader->next(timeout);
      if (!line)
        return std::nullopt;
      auto m = dec.decode_guest(*line);
      if (!m)
        throw std::runtime_error("guest " + id + " sent a bad line: " + m.err().message);
      if (!std::holds_alternative<guest::heartbeat>(*m))
        return std::move(*m);
    }
  }

  /// Runs one tool and returns its result.
  guest::call_result call(const std::string& tool, const std::string& args_json,
                          std::chrono::milliseconds timeout = 10s) {
    auto id_ = next_call++;
    send(guest::encode(guest::call{id_, tool, args_json}));
    for (;;) {
      auto m = next_message(timeout);
      if (!m)
        throw std::runtime_error("no result from guest " + id + " for " + tool);
      if (auto* r = std::get_if<guest::call_result>(&*m); r && r->id == id_)
        return *r;
    }
  }

  /// Waits for the process to end (reaping it); false on timeout.
  bool wait_exit(std::chrono::milliseconds timeout = 10s) {
    if (reaped)
      return true;
    pollfd p{pidfd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0)
      return false;
    siginfo_t si{};
    if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &si, WEXITED) != 0)
      return false;
    reaped = true;
    if (si.si_code == CLD_EXITED)
      exit_code = si.si_status;
    else
      exit_signal = si.si_status;
    return true;
  }

  /// True once the OOM fd has fired (v1 eventfd counter or v2 POLLPRI).
  bool oom_fired(std::chrono::milliseconds timeout = 0ms) const {
    pollfd p{oom_fd, POLLIN | POLLPRI, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0)
      return false;
    return (p.revents & (POLLIN | POLLPRI)) != 0;
  }
};

/// The template process plus the per-test cgroup instance.
class sandbox_host {
public:
  /// Throws on a broken environment; `available()` tells whether cgroups
  /// can be created at all (tests skip with exit 77 otherwise).
  static std::optional<std::string> unavailable_reason() {
    if (::geteuid() != 0)
      return "sandbox tests need root (cgroups, mounts): run as root";
    auto layout = sb::detect_cgroups();
    if (!layout)
      return layout.err().message;
    return std::nullopt;
  }

  /// `template_args` go to `agentvisor-guest --template` after that flag
  /// (e.g. "--netns-pool", "0").
  sandbox_host(const std::string& guest_path, const std::string& instance,
               const std::vector<std::string>& template_args = {})
    : instance_(instance) {
    auto layout = sb::detect_cgroups();
    if (!layout)
      throw std::runtime_error(layout.err().message);
    auto inst = sb::cgroup_instance::open(*layout, instance);
    if (!inst)
      throw std::runtime_error(inst.err().message);
    inst_ = std::move(*inst);
    state_ = std::filesystem::temp_directory_path() / ("agentvisor-" + instance);
    std::filesystem::create_directories(state_ / "rootfs");
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
      throw std::runtime_error("socketpair");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, sv[1], 3);
    std::vector<const char*> argv{guest_path.c_str(), "--template"};
    for (const auto& a : template_args)
      argv.push_back(a.c_str());
    argv.push_back(nullptr);
    int rc = posix_spawn(&template_pid_, guest_path.c_str(), &fa, nullptr,
                         const_cast<char* const*>(argv.data()), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(sv[1]);
    if (rc != 0)
      throw std::runtime_error("spawn template " + guest_path + ": " + std::strerror(rc));
    control_ = sv[0];
    replies_.emplace(control_);
    auto line = replies_->next();
    auto r = line ? sb::decode_spawn_reply(*line) : agentvisor::result<sb::spawn_reply>{
                                                       agentvisor::error{"no reply"}};
    if (!r || r->kind != sb::reply_kind::ready)
      throw std::runtime_error("template did not become ready: "
                               + (line ? *line : std::string{"EOF"}));
  }

  ~sandbox_host() {
    for (auto& a : failed_)
      destroy(*a);
    ::close(control_); // the template exits on EOF
    int st;
    ::waitpid(template_pid_, &st, 0);
    (void) inst_.remove_stale();
    inst_.remove();
    std::error_code ec;
    std::filesystem::remove_all(state_, ec);
  }

  struct options {
    uint64_t memory_bytes = 256ull << 20;
    uint32_t pids = 128;
    uint64_t workspace_bytes = 64ull << 20;
    bool allow_faults = false;
    uint32_t heartbeat_ms = 1000;
  };

  /// Where a spawn's time went, for benchmarks: steady_clock readings taken
  /// before the cgroup is created, once the host-side preparation (cgroup,
  /// OOM fd, workspace, socketpair) is done, once the request is sent, and
  /// once the template's reply has arrived.
  struct spawn_timing {
    std::chrono::steady_clock::time_point start, prepared, sent, replied;
  };

  /// Spawns an agent; the reply (spawned or failed) has arrived on return.
  /// Throws with the template's error text on failure. Fills `timing` when
  /// given.
  std::unique_ptr<agent> spawn(const std::string& id, const options& o,
                               spawn_timing* timing = nullptr) {
    using clock = std::chrono::steady_clock;
    if (timing)
      timing->start = clock::now();
    auto a = std::make_unique<agent>();
    a->id = id;
    auto cg = sb::agent_cgroup::create(inst_, id, {o.memory_bytes, o.pids, 100});
    if (!cg)
      throw std::runtime_error(cg.err().message);
    a->cgroup = std::move(*cg);
    auto oom = a->cgroup.open_oom_fd();
    if (!oom)
      throw std::runtime_error(oom.err().message);
    a->oom_fd = *oom;
    auto ws = sb::make_workspace_mount(o.workspace_bytes, 20000, 20000);
    if (!ws)
      throw std::runtime_error(ws.err().message);
    a->workspace_fd = *ws;
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
      throw std::runtime_error("socketpair");
    a->channel = sv[0];
    a->reader.emplace(sv[0]);
    sb::spawn_request req;
    req.req = ++next_req_;
    req.spec.agent_id = id;
    req.spec.hostname = id;
    req.spec.rootfs_dir = (state_ / "rootfs").string();
    req.spec.channel_fd = sv[1];
    req.spec.workspace_fd = a->workspace_fd;
    req.spec.tmp_bytes = 16ull << 20;
    if (a->cgroup.version() == sb::cgroup_version::v1) {
      for (const auto& d : a->cgroup.dirs())
        req.spec.cgroup_procs.push_back(d + "/cgroup.procs");
      req.spec.memory_file = a->cgroup.memory_dir() + "/memory.usage_in_bytes";
    } else {
      cgroup_fd_ = ::open(a->cgroup.memory_dir().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      req.spec.cgroup_v2_fd = cgroup_fd_;
      req.spec.memory_file = a->cgroup.memory_dir() + "/memory.current";
    }
    req.guest.allow_faults = o.allow_faults;
    req.guest.heartbeat_ms = o.heartbeat_ms;
    if (timing)
      timing->prepared = clock::now();
    auto sent = sb::send_spawn_request(control_, req);
    if (timing)
      timing->sent = clock::now();
    ::close(sv[1]);
    if (cgroup_fd_ >= 0) {
      ::close(cgroup_fd_);
      cgroup_fd_ = -1;
    }
    if (!sent)
      throw std::runtime_error(sent.err().message);
    auto line = replies_->next();
    if (timing)
      timing->replied = clock::now();
    if (!line)
      throw std::runtime_error("template sent no reply for " + id);
    auto r = sb::decode_spawn_reply(*line);
    if (!r)
      throw std::runtime_error(r.err().message);
    if (r->pid > 0) {
      a->pid = r->pid;
      a->pidfd = pidfd_open(r->pid);
    }
    if (r->kind != sb::reply_kind::spawned) {
      failed_.push_back(std::move(a)); // reaped and cleaned by the caller's teardown
      throw std::runtime_error(r->error);
    }
    return a;
  }

  /// Reads hello and ready; false if they did not come.
  static bool handshake(agent& a) {
    auto h = a.next_message();
    auto r = a.next_message();
    return h && std::holds_alternative<guest::hello>(*h) && r
           && std::holds_alternative<guest::ready>(*r);
  }

  /// Kills what is left, reaps, removes the cgroup (retrying while busy),
  /// closes every fd. Returns the removal error text, empty when clean.
  static std::string destroy(agent& a) {
    if (!a.reaped && a.pid > 0) {
      ::syscall(SYS_pidfd_send_signal, a.pidfd, SIGKILL, nullptr, 0);
      a.wait_exit();
    }
    (void) a.cgroup.kill_all();
    std::string err;
    for (int i = 0; i < 400; ++i) {
      auto r = a.cgroup.remove();
      if (r) {
        err.clear();
        break;
      }
      err = r.err().message;
      ::usleep(5000);
    }
    for (int* fd : {&a.pidfd, &a.channel, &a.oom_fd, &a.workspace_fd})
      if (*fd >= 0) {
        ::close(*fd);
        *fd = -1;
      }
    return err;
  }

  const sb::cgroup_instance& instance() const { return inst_; }
  const std::filesystem::path& state_dir() const { return state_; }
  pid_t template_pid() const { return template_pid_; }

private:
  std::string instance_;
  sb::cgroup_instance inst_;
  std::filesystem::path state_;
  pid_t template_pid_ = -1;
  int control_ = -1;
  int cgroup_fd_ = -1;
  uint64_t next_req_ = 0;
  std::optional<line_reader> replies_;
  std::vector<std::unique_ptr<agent>> failed_;
};

} // namespace harness

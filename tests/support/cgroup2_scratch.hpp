#pragma once
// A scratch cgroup on this host's cgroup2 mount, for tests of the cgroup2
// directory mechanics (cgroup.procs, cgroup.events and its POLLPRI
// notification). These work on any cgroup2 mount, even one that offers no
// controllers (the unified mount of a hybrid v1 host), so they run for real
// where the v2 memory and pids controllers are not available.
//
// The directory has a unique name (agentvisor-test-<purpose>-<pid>-<n>) at
// the top of the cgroup2 mount; nothing else is created, written or killed.
// Header-only and free of doctest and of our libraries, so that tests of
// any suite can use it.

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace test_support {

/// The first cgroup2 mount point in /proc/self/mountinfo, or "" if none.
inline std::string cgroup2_mount() {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    auto dash = line.find(" - cgroup2 ");
    if (dash == std::string::npos)
      continue;
    std::istringstream fields(line.substr(0, dash));
    std::string f, mnt;
    for (int i = 0; i < 5 && fields >> f; ++i)
      mnt = f; // the fifth field is the mount point
    return mnt;
  }
  return {};
}

/// A file's whole content ("" when it cannot be read).
inline std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class cgroup2_scratch {
public:
  /// What create() found: a scratch cgroup, or why there is none. `skip` is
  /// set when the host cannot offer one (not root, no cgroup2 mount, a
  /// read-only cgroupfs); `error` when making it failed otherwise.
  struct made {
    std::unique_ptr<cgroup2_scratch> cgroup;
    std::string skip;
    std::string error;
  };

  static made create(const std::string& purpose) {
    made m;
    if (::geteuid() != 0) {
      m.skip = "needs root to create a cgroup on the cgroup2 mount";
      return m;
    }
    auto mnt = cgroup2_mount();
    if (mnt.empty()) {
      m.skip = "no cgroup2 mount in /proc/self/mountinfo";
      return m;
    }
    static int counter = 0;
    auto path = mnt + "/agentvisor-test-" + purpose + "-" + std::to_string(::getpid())
                + "-" + std::to_string(++counter);
    if (::mkdir(path.c_str(), 0755) != 0) {
      int err = errno;
      auto what = "mkdir " + path + ": " + std::strerror(err);
      (err == EROFS || err == EACCES || err == EPERM ? m.skip : m.error) = what;
      return m;
    }
    m.cgroup.reset(new cgroup2_scratch(std::move(path)));
    return m;
  }

  cgroup2_scratch(const cgroup2_scratch&) = delete;
  cgroup2_scratch& operator=(const cgroup2_scratch&) = delete;

  /// Kills whatever is still in the cgroup (only processes a test moved into
  /// this cgroup of ours can be there), waits until it is empty, removes it.
  ~cgroup2_scratch() {
    for (int i = 0; i < 400; ++i) {
      for (pid_t pid : procs())
        ::kill(pid, SIGKILL);
      if (::rmdir(path_.c_str()) == 0 || errno == ENOENT)
        return;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::fprintf(stderr, "cgroup2_scratch: could not remove %s: %s\n", path_.c_str(),
                 std::strerror(errno));
  }

  const std::string& path() const noexcept { return path_; }

  /// Moves `pid` into the cgroup; "" on success, else the error text.
  std::string move_in(pid_t pid) const {
    auto file = path_ + "/cgroup.procs";
    int fd = ::open(file.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0)
      return "open " + file + ": " + std::strerror(errno);
    auto text = std::to_string(pid);
    auto n = ::write(fd, text.data(), text.size());
    int err = errno;
    ::close(fd);
    if (n < 0)
      return "write " + text + " to " + file + ": " + std::strerror(err);
    return {};
  }

  /// The pids in cgroup.procs.
  std::vector<pid_t> procs() const {
    std::vector<pid_t> out;
    std::istringstream in(slurp(path_ + "/cgroup.procs"));
    pid_t pid;
    while (in >> pid)
      out.push_back(pid);
    return out;
  }

  /// cgroup.events as the kernel shows it ("populated 0\nfrozen 0\n").
  std::string events() const { return slurp(path_ + "/cgroup.events"); }

private:
  explicit cgroup2_scratch(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

} // namespace test_support

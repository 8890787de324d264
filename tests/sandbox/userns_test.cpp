// Unprivileged sandboxes (sandbox_spec::user_namespace) on the real kernel:
// clone_sandbox called by a process without privileges. Run as root, the
// test forks a runner that drops to nobody (65534) first; run as any other
// user, the runner is that user. No cgroups: creating them needs privileges
// or delegation this mode does not assume (see docs/sandbox.md).
//
// The sandbox checks itself from inside and reports each check as a line on
// its channel ("ok <check>" or "FAIL <check>: <detail>"); its exit code is
// the number of failed checks. The runner reports its own steps on a pipe.

#include "sandbox.hpp"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <grp.h>
#include <linux/magic.h>
#include <poll.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

namespace sb = agentvisor::sandbox;
namespace fs = std::filesystem;

namespace {

constexpr const char* box_hostname = "userns-box";
constexpr uid_t nobody = 65534;

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

std::string slurp(const char* path) {
  std::ifstream in(path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// The "Name:\tvalue" line of /proc/self/status.
std::string status_field(const std::string& name) {
  std::istringstream in(slurp("/proc/self/status"));
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(name + ":", 0) == 0)
      return line.substr(line.find_first_not_of(" \t", name.size() + 1));
  return {};
}

/// The per-mount options of the mount at `mnt` in /proc/self/mountinfo.
std::string mount_opts(const std::string& mnt) {
  std::istringstream in(slurp("/proc/self/mountinfo"));
  std::string line, found;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string id, parent, dev, root, point, opts;
    if (f >> id >> parent >> dev >> root >> point >> opts && point == mnt)
      found = opts; // the last one is on top
  }
  return found;
}

void write_all(int fd, const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    auto n = ::write(fd, text.data() + done, text.size() - done);
    if (n <= 0)
      return;
    done += static_cast<size_t>(n);
  }
}

struct inside_args {
  uid_t outer_uid;
  gid_t outer_gid;
};

// --- Inside the sandbox (PID 1 of its namespaces) ----------------------------

int inside(void* p) {
  const auto& a = *static_cast<const inside_args*>(p);
  int failed = 0;
  auto report = [&](bool ok, const std::string& check, const std::string& detail) {
    write_all(3, (ok ? "ok " : "FAIL ") + check + (ok ? "" : ": " + detail) + "\n");
    failed += ok ? 0 : 1;
  };

  report(::getuid() == 0 && ::geteuid() == 0 && ::getgid() == 0,
         "uid and gid are 0 inside",
         "uid " + std::to_string(::getuid()) + " gid " + std::to_string(::getgid()));
  auto uid_map = slurp("/proc/self/uid_map");
  auto gid_map = slurp("/proc/self/gid_map");
  std::istringstream um(uid_map), gm(gid_map);
  unsigned long in_u = 1, out_u = 0, n_u = 0, in_g = 1, out_g = 0, n_g = 0;
  um >> in_u >> out_u >> n_u;
  gm >> in_g >> out_g >> n_g;
  report(in_u == 0 && out_u == a.outer_uid && n_u == 1 && in_g == 0 && out_g == a.outer_gid
           && n_g == 1,
         "0 maps to the creator's uid and gid, and nothing else is mapped",
         "uid_map '" + uid_map + "' gid_map '" + gid_map + "'");
  report(contains(slurp("/proc/self/setgroups"), "deny"), "setgroups is denied",
         slurp("/proc/self/setgroups"));

  {
    const char* path = "/workspace/written-inside";
    int fd = ::open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    bool ok = fd >= 0 && ::write(fd, "hello", 5) == 5;
    char buf[8]{};
    ok = ok && ::pread(fd, buf, sizeof buf, 0) == 5 && std::string(buf) == "hello";
    std::string err = std::strerror(errno);
    if (fd >= 0)
      ::close(fd);
    struct statfs sf {};
    bool tmpfs = ::statfs("/workspace", &sf) == 0 && sf.f_type == TMPFS_MAGIC;
    report(ok && tmpfs, "/workspace is a writable tmpfs",
           std::string(ok ? "" : err) + (tmpfs ? "" : " (not a tmpfs)"));
  }
  {
    int fd = ::open("/written-to-root", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    int err = errno;
    if (fd >= 0)
      ::close(fd);
    report(fd < 0 && err == EROFS, "the root is read-only", std::strerror(err));
  }

  auto passwd = slurp("/etc/passwd");
  report(contains(passwd, "agent:x:0:0:agent:/workspace:/bin/sh\n")
           && !contains(passwd, "\ndaemon:") && !contains(passwd, "/root:/bin/bash"),
         "/etc/passwd is the sandbox's, not the host's", passwd);

  char self[32]{};
  auto n = ::readlink("/proc/self", self, sizeof self - 1);
  report(::getpid() == 1 && n == 1 && self[0] == '1', "/proc shows the sandbox as PID 1",
         "getpid " + std::to_string(::getpid()) + ", /proc/self -> " + std::string(self));

  utsname u{};
  ::uname(&u);
  report(std::string(u.nodename) == box_hostname, "the hostname is the sandbox's", u.nodename);

  errno = 0;
  int rc = ::mount("none", "/tmp", "tmpfs", 0, nullptr);
  int mount_err = errno;
  report(rc == -1 && mount_err == EPERM && status_field("Seccomp") == "2",
         "mount() fails with EPERM under a seccomp filter",
         "rc " + std::to_string(rc) + " " + std::strerror(mount_err) + ", Seccomp: "
           + status_field("Seccomp"));
  report(status_field("CapEff") == "0000000000000000"
           && status_field("CapBnd") == "0000000000000000"
           && status_field("NoNewPrivs") == "1",
         "no capabilities, an empty bounding set and no_new_privs",
         "CapEff " + status_field("CapEff") + " CapBnd " + status_field("CapBnd")
           + " NoNewPrivs " + status_field("NoNewPrivs"));
  return failed;
}

// --- The unprivileged runner (a forked child of the test) --------------------

constexpr int runner_refused = 77; // the kernel refuses user namespaces

/// Gives the runner's own mount namespace the kind of flags a hardened host
/// has on its mounts (read-only noexec noatime /usr, noexec noatime /dev).
/// A user namespace locks such flags: a bind remount that would drop one of
/// them fails with EPERM, so the sandbox must carry them over (locked_flags
/// in sandbox.cpp). Needs root; the host never sees these mounts.
bool harden_own_mounts(const std::function<void(const std::string&)>& say) {
  auto step = [&](const char* what, bool ok) {
    if (!ok)
      say(std::string("harden: ") + what + ": " + std::strerror(errno));
    return ok;
  };
  return step("unshare mount namespace", ::unshare(CLONE_NEWNS) == 0)
         && step("make / private",
                 ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0)
         && step("bind /usr", ::mount("/usr", "/usr", nullptr, MS_BIND | MS_REC, nullptr) == 0)
         && step("remount /usr",
                 ::mount(nullptr, "/usr", nullptr,
                         MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
                           | MS_NOATIME,
                         nullptr)
                   == 0)
         && step("bind /dev", ::mount("/dev", "/dev", nullptr, MS_BIND | MS_REC, nullptr) == 0)
         && step("remount /dev",
                 ::mount(nullptr, "/dev", nullptr,
                         MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NOEXEC | MS_NOATIME, nullptr)
                   == 0);
}

int run_unprivileged(const sb::seccomp_program& filter, const std::string& rootfs,
                     int channel, int report_fd, bool harden) {
  std::function<void(const std::string&)> say = [&](const std::string& line) {
    write_all(report_fd, line + "\n");
  };
  ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  if (harden) {
    if (!harden_own_mounts(say))
      return 2;
    say("hardened: /usr " + mount_opts("/usr") + ", /dev " + mount_opts("/dev"));
  }
  if (::geteuid() == 0) {
    if (::setgroups(0, nullptr) != 0 || ::setresgid(nobody, nobody, nobody) != 0
        || ::setresuid(nobody, nobody, nobody) != 0) {
      say(std::string("cannot drop to nobody: ") + std::strerror(errno));
      return 2;
    }
    ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0); // the uid change cleared it
  }
  say("runner uid " + std::to_string(::getuid()) + " euid " + std::to_string(::geteuid())
      + " CapEff " + status_field("CapEff"));

  sb::sandbox_spec spec;
  spec.agent_id = "userns-1";
  spec.hostname = box_hostname;
  spec.rootfs_dir = rootfs;
  spec.channel_fd = channel;
  spec.workspace_fd = -1;
  spec.workspace_bytes = 8ull << 20;
  spec.tmp_bytes = 8ull << 20;
  spec.cgroup_v2_fd = -1;
  spec.user_namespace = true;
  inside_args args{::getuid(), ::getgid()};
  auto child = sb::clone_sandbox(spec, filter, inside, &args, false);
  ::close(channel); // the sandbox has its own copy
  if (!child) {
    say("clone_sandbox: " + child.err().message);
    if (auto why = sb::user_namespace_refusal()) {
      say("REFUSED " + *why);
      return runner_refused;
    }
    return 3;
  }
  auto setup = sb::wait_setup(child->status_fd, spec.agent_id);
  if (!setup)
    say(setup.err().message);
  siginfo_t si{};
  if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(child->pidfd), &si,
               WEXITED)
      != 0) {
    say(std::string("waitid: ") + std::strerror(errno));
    return 4;
  }
  say("sandbox " + std::string(si.si_code == CLD_EXITED ? "exited " : "killed by signal ")
      + std::to_string(si.si_status));
  if (!setup)
    return 5;
  return si.si_code == CLD_EXITED && si.si_status == 0 ? 0 : 6;
}

/// Reads fds until EOF on all of them, for at most `timeout`.
std::vector<std::string> read_until_eof(std::vector<int> fds, std::chrono::seconds timeout) {
  std::vector<std::string> out(fds.size());
  auto deadline = std::chrono::steady_clock::now() + timeout;
  size_t open = fds.size();
  while (open > 0 && std::chrono::steady_clock::now() < deadline) {
    std::vector<pollfd> p;
    for (int fd : fds)
      p.push_back({fd, POLLIN, 0});
    if (::poll(p.data(), p.size(), 100) <= 0)
      continue;
    for (size_t i = 0; i < p.size(); ++i) {
      if (fds[i] < 0 || !p[i].revents)
        continue;
      char buf[4096];
      auto n = ::read(fds[i], buf, sizeof buf);
      if (n > 0) {
        out[i].append(buf, static_cast<size_t>(n));
      } else {
        fds[i] = -1; // poll ignores negative fds
        --open;
      }
    }
  }
  return out;
}

struct outcome {
  int status = 0;
  std::string runner_says, inside_says;
  bool rootfs_untouched = false;
};

/// Forks the runner, collects what it and the sandbox say, reaps it.
outcome run(bool harden) {
  outcome o;
  auto filter = sb::build_seccomp();
  REQUIRE(filter);
  auto base = fs::temp_directory_path() / ("agentvisor-userns-" + std::to_string(::getpid()));
  auto rootfs = base / "rootfs";
  fs::create_directories(rootfs);
  struct cleanup {
    fs::path dir;
    ~cleanup() {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  } cleanup_base{base};
  // The mount point of the new root must be reachable by the runner: /tmp
  // and base are world-searchable, rootfs is the runner's own.
  if (::geteuid() == 0)
    REQUIRE(::chown(rootfs.c_str(), nobody, nobody) == 0);

  int chan[2], rep[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, chan) == 0);
  REQUIRE(::pipe2(rep, O_CLOEXEC) == 0);
  pid_t runner = ::fork();
  REQUIRE(runner >= 0);
  if (runner == 0) {
    ::close(chan[0]);
    ::close(rep[0]);
    ::_exit(run_unprivileged(*filter, rootfs.string(), chan[1], rep[1], harden));
  }
  ::close(chan[1]);
  ::close(rep[1]);
  auto texts = read_until_eof({rep[0], chan[0]}, std::chrono::seconds(30));
  ::close(rep[0]);
  ::close(chan[0]);
  int st = 0;
  pid_t got = 0;
  for (int i = 0; i < 100 && (got = ::waitpid(runner, &st, WNOHANG)) == 0; ++i)
    ::usleep(100000);
  if (got == 0) { // still there after 10 s more
    ::kill(runner, SIGKILL);
    ::waitpid(runner, &st, 0);
  }
  o.status = st;
  o.runner_says = texts[0];
  o.inside_says = texts[1];
  // Nothing of the sandbox's mounts reached the host.
  o.rootfs_untouched = fs::is_empty(rootfs);
  return o;
}

/// The checks both cases share; false when the kernel refused (skipped).
bool check(const outcome& o) {
  auto runner_log = "runner:\n" + o.runner_says;
  auto inside_log = "inside the sandbox:\n" + o.inside_says;
  INFO(runner_log);
  INFO(inside_log);
  REQUIRE(WIFEXITED(o.status));
  if (WEXITSTATUS(o.status) == runner_refused) {
    MESSAGE("skipped: the kernel refuses unprivileged user namespaces: " << o.runner_says);
    return false;
  }
  if (::geteuid() == 0)
    CHECK(contains(o.runner_says, "runner uid 65534 euid 65534 CapEff 0000000000000000\n"));
  CHECK(WEXITSTATUS(o.status) == 0);
  CHECK(contains(o.runner_says, "sandbox exited 0\n"));
  for (const char* c : {"uid and gid are 0 inside",
                        "0 maps to the creator's uid and gid, and nothing else is mapped",
                        "setgroups is denied", "/workspace is a writable tmpfs",
                        "the root is read-only", "/etc/passwd is the sandbox's, not the host's",
                        "/proc shows the sandbox as PID 1", "the hostname is the sandbox's",
                        "mount() fails with EPERM under a seccomp filter",
                        "no capabilities, an empty bounding set and no_new_privs"})
    CHECK_MESSAGE(contains(o.inside_says, std::string("ok ") + c + "\n"), c);
  CHECK_FALSE(contains(o.inside_says, "FAIL"));
  CHECK(o.rootfs_untouched);
  return true;
}

} // namespace

TEST_CASE("an unprivileged process gets a working sandbox through a user namespace "
          "(real kernel; as nobody when the test runs as root)") {
  check(run(false));
}

TEST_CASE("an unprivileged sandbox keeps the host's locked mount flags (real kernel; /usr "
          "and /dev made noexec,noatime in a private mount namespace first)") {
  if (::geteuid() != 0) {
    MESSAGE("skipped: needs root to give its own mount namespace hardened flags");
    return;
  }
  auto o = run(true);
  if (check(o))
    CHECK(contains(o.runner_says, "hardened: /usr ro,nosuid,nodev,noexec,noatime, /dev "
                                  "rw,nosuid,noexec,noatime\n"));
}

TEST_CASE("clone_sandbox says why when the kernel refuses user namespaces (real kernel; "
          "user.max_user_namespaces set to 0 inside a user namespace of the test's own)") {
  // The user.* sysctls are per user namespace: a process may lower them in
  // a namespace it owns without touching the host's setting.
  auto filter = sb::build_seccomp();
  REQUIRE(filter);
  int rep[2];
  REQUIRE(::pipe2(rep, O_CLOEXEC) == 0);
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::close(rep[0]);
    auto say = [&](const std::string& line) { write_all(rep[1], line + "\n"); };
    auto outer_uid = std::to_string(::geteuid());
    auto outer_gid = std::to_string(::getegid());
    auto put = [](const char* path, const std::string& text) {
      int fd = ::open(path, O_WRONLY | O_CLOEXEC);
      bool ok = fd >= 0
                && ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
      if (fd >= 0)
        ::close(fd);
      return ok;
    };
    if (::unshare(CLONE_NEWUSER) != 0) {
      say(std::string("SKIP unshare(CLONE_NEWUSER): ") + std::strerror(errno));
      ::_exit(0);
    }
    if (!put("/proc/self/setgroups", "deny")
        || !put("/proc/self/uid_map", "0 " + outer_uid + " 1\n")
        || !put("/proc/self/gid_map", "0 " + outer_gid + " 1\n")
        || !put("/proc/sys/user/max_user_namespaces", "0\n")) {
      say(std::string("setup of the outer namespace: ") + std::strerror(errno));
      ::_exit(1);
    }
    sb::sandbox_spec spec;
    spec.agent_id = "refused";
    spec.hostname = "refused";
    spec.rootfs_dir = "/nonexistent";
    spec.channel_fd = rep[1];
    spec.user_namespace = true;
    auto r = sb::clone_sandbox(spec, *filter, inside, nullptr, false);
    if (r) {
      say("clone_sandbox succeeded");
      ::_exit(1);
    }
    say("error: " + r.err().message);
    say("errno: " + std::to_string(r.err().sys_errno));
    say("refusal: " + sb::user_namespace_refusal().value_or("none"));
    ::_exit(0);
  }
  ::close(rep[1]);
  auto said = read_until_eof({rep[0]}, std::chrono::seconds(10))[0];
  ::close(rep[0]);
  int st = 0;
  REQUIRE(::waitpid(child, &st, 0) == child);
  INFO(said);
  if (said.rfind("SKIP ", 0) == 0) {
    MESSAGE("skipped: " << said);
    return;
  }
  CHECK(WIFEXITED(st));
  CHECK(WEXITSTATUS(st) == 0);
  CHECK(contains(said, "error: clone3 for sandbox refused: No space left on device (user "
                       "namespaces are disabled: sysctl user.max_user_namespaces is 0)\n"));
  CHECK(contains(said, "errno: " + std::to_string(ENOSPC) + "\n"));
  CHECK(contains(said, "refusal: user namespaces are disabled: sysctl "
                       "user.max_user_namespaces is 0\n"));
  // The host's own setting is untouched.
  CHECK(slurp("/proc/sys/user/max_user_namespaces") != "0\n");
}

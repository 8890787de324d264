#include "sandbox.hpp"

#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/mount.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <string>

namespace agentvisor::sandbox {

namespace {

// --- seccomp ---------------------------------------------------------------

const std::vector<const char*> denied = {
  "mount", "umount2", "pivot_root", "chroot", "open_tree", "move_mount",
  "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
  "ptrace", "process_vm_readv", "process_vm_writev",
  "kexec_load", "kexec_file_load", "bpf", "perf_event_open",
  "keyctl", "add_key", "request_key", "unshare", "setns",
  "init_module", "finit_module", "delete_module", "reboot",
  "swapon", "swapoff", "io_uring_setup", "io_uring_enter",
  "io_uring_register", "userfaultfd", "acct", "quotactl",
  "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
  "sethostname", "setdomainname", "syslog", "iopl", "ioperm",
  "name_to_handle_at", "open_by_handle_at", "lookup_dcookie", "vhangup",
};

// --- child side --------------------------------------------------------------

struct child_args {
  const sandbox_spec* spec;
  const seccomp_program* filter;
  entry_fn entry;
  void* arg;
  int status_wr;
  uid_t outer_uid;
  gid_t outer_gid;
  // Prepared before clone so the child only makes syscalls.
  std::string root, passwd, group, hosts, uid_map, gid_map;
};

[[noreturn]] void fail(const child_args& a, const char* step, const std::string& what = {}) {
  int err = errno;
  std::string msg = step;
  if (!what.empty())
    msg += " " + what;
  msg += ": ";
  msg += std::strerror(err);
  (void) !::write(a.status_wr, msg.data(), msg.size());
  ::_exit(127);
}

void write_text(const child_args& a, const std::string& path, const std::string& text,
                mode_t mode = 0644) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0 || ::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size()))
    fail(a, "write", path);
  ::close(fd);
}

// Flags a bind remount must keep: inside a user namespace the kernel refuses
// a remount that would clear the source mount's nosuid/nodev/noexec/atime.
unsigned long locked_flags(const char* path) {
  struct statvfs sv;
  if (::statvfs(path, &sv) != 0)
    return 0;
  unsigned long f = 0;
  if (sv.f_flag & ST_NOSUID) f |= MS_NOSUID;
  if (sv.f_flag & ST_NODEV) f |= MS_NODEV;
  if (sv.f_flag & ST_NOEXEC) f |= MS_NOEXEC;
  if (sv.f_flag & ST_NOATIME) f |= MS_NOATIME;
  if (sv.f_flag & ST_NODIRATIME) f |= MS_NODIRATIME;
  if (sv.f_flag & ST_RELATIME) f |= MS_RELATIME;
  return f;
}

void mount_or_fail(const child_args& a, const char* src, const std::string& dst,
                   const char* type, unsigned long flags, const char* data = nullptr) {
  if (::mount(src, dst.c_str(), type, flags, data) != 0)
    fail(a, "mount", std::string{type ? type : src ? src : "(remount)"} + " on " + dst);
}

void mkdir_or_fail(const child_args& a, const std::string& path, mode_t mode = 0755) {
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST)
    fail(a, "mkdir", path);
}

// A read-only bind of a host directory, or the same symlink where the host
// has one (merged /usr: /bin -> usr/bin). Absent host paths are skipped.
void mirror_host_path(const child_args& a, const char* host) {
  struct stat st;
  if (::lstat(host, &st) != 0)
    return;
  std::string dst = a.root + host;
  if (S_ISLNK(st.st_mode)) {
    char target[256];
    auto n = ::readlink(host, target, sizeof target - 1);
    if (n < 0)
      fail(a, "readlink", host);
    target[n] = '\0';
    if (::symlink(target, dst.c_str()) != 0)
      fail(a, "symlink", dst);
    return;
  }
  if (!S_ISDIR(st.st_mode))
    return;
  mkdir_or_fail(a, dst);
  mount_or_fail(a, host, dst, nullptr, MS_BIND | MS_REC);
  mount_or_fail(a, nullptr, dst, nullptr,
                MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | locked_flags(host));
}

void bind_device(const child_args& a, const char* dev) {
  std::string dst = a.root + dev;
  int fd = ::open(dst.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0666);
  if (fd < 0)
    fail(a, "create", dst);
  ::close(fd);
  mount_or_fail(a, dev, dst, nullptr, MS_BIND);
  mount_or_fail(a, nullptr, dst, nullptr,
                MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NOEXEC | locked_flags(dev));
}

void loopback_up(const child_args& a) {
  int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0)
    fail(a, "socket for lo");
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (::ioctl(s, SIOCGIFFLAGS, &ifr) != 0)
    fail(a, "SIOCGIFFLAGS lo");
  ifr.ifr_flags |= IFF_UP;
  if (::ioctl(s, SIOCSIFFLAGS, &ifr) != 0)
    fail(a, "SIOCSIFFLAGS lo");
  ::close(s);
}

void drop_privileges(const child_args& a) {
  const auto& s = *a.spec;
  // The bounding set first (needs CAP_SETPCAP), so nothing can come back
  // through execve of a file with capabilities.
  for (int cap = 0; cap <= 63; ++cap)
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL)
      fail(a, "PR_CAPBSET_DROP");
  ::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
  if (!s.user_namespace) {
    if (::setgroups(0, nullptr) != 0)
      fail(a, "setgroups");
    if (::setresgid(s.gid, s.gid, s.gid) != 0)
      fail(a, "setresgid");
    if (::setresuid(s.uid, s.uid, s.uid) != 0)
      fail(a, "setresuid");
  }
  // Inside a user namespace we stay uid 0 there: clear every capability set.
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  if (::syscall(SYS_capset, &hdr, data) != 0)
    fail(a, "capset");
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
    fail(a, "PR_SET_NO_NEW_PRIVS");
  // An agent never outlives its supervisor (set after the uid change, which
  // clears it).
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0)
    fail(a, "PR_SET_PDEATHSIG");
}

int child_main(void* p) {
  auto& a = *static_cast<child_args*>(p);
  const auto& s = *a.spec;

  // cgroup v1: join the agent's cgroups before anything is allocated. "0"
  // means the writer itself, whatever its pid namespace.
  for (const auto& procs : s.cgroup_procs) {
    int fd = ::open(procs.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0 || ::write(fd, "0", 1) != 1)
      fail(a, "join cgroup", procs);
    ::close(fd);
  }
  // A pooled network namespace: joined here, its loopback is up already.
  if (s.netns_fd >= 0 && ::setns(s.netns_fd, CLONE_NEWNET) != 0)
    fail(a, "setns network namespace");
  if (s.user_namespace) {
    // A process that changed its uids without an exec since (a root
    // supervisor dropping to a service user, a setuid launcher) is not
    // dumpable, and then its /proc/self files belong to the host's root,
    // whom the new namespace does not map: writing them fails with EACCES.
    // Dumpable only for the three writes.
    int dumpable = ::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
    if (dumpable != 1 && ::prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0)
      fail(a, "PR_SET_DUMPABLE");
    // setgroups must be denied before an unprivileged gid_map is accepted.
    write_text(a, "/proc/self/setgroups", "deny");
    write_text(a, "/proc/self/uid_map", a.uid_map);
    write_text(a, "/proc/self/gid_map", a.gid_map);
    if (dumpable != 1 && ::prctl(PR_SET_DUMPABLE, dumpable, 0, 0, 0) != 0)
      fail(a, "PR_SET_DUMPABLE");
  }
  int memory_fd = -1;
  if (!s.memory_file.empty()) {
    memory_fd = ::open(s.memory_file.c_str(), O_RDONLY | O_CLOEXEC);
    if (memory_fd < 0)
      fail(a, "open", s.memory_file);
  }

  // Nothing we mount may propagate back to the host.
  mount_or_fail(a, nullptr, "/", nullptr, MS_REC | MS_PRIVATE);
  mount_or_fail(a, "tmpfs", a.root, "tmpfs", MS_NOSUID | MS_NODEV,
                "size=4m,mode=0755,nr_inodes=4096");
  for (const char* d : {"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"})
    mirror_host_path(a, d);
  for (const char* d : {"/etc", "/proc", "/dev", "/tmp", "/workspace", "/run"})
    mkdir_or_fail(a, a.root + d);
  write_text(a, a.root + "/etc/passwd", a.passwd);
  write_text(a, a.root + "/etc/group", a.group);
  write_text(a, a.root + "/etc/hosts", a.hosts);
  write_text(a, a.root + "/etc/hostname", s.hostname + "\n");
  for (const char* dev : {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"})
    bind_device(a, dev);
  for (auto [link, target] : {std::pair{"/dev/fd", "/proc/self/fd"},
                              std::pair{"/dev/stdin", "/proc/self/fd/0"},
                              std::pair{"/dev/stdout", "/proc/self/fd/1"},
                              std::pair{"/dev/stderr", "/proc/self/fd/2"}})
    if (::symlink(target, (a.root + link).c_str()) != 0)
      fail(a, "symlink", a.root + link);
  auto tmp_opts = "size=" + std::to_string(s.tmp_bytes) + ",mode=1777";
  mount_or_fail(a, "tmpfs", a.root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, tmp_opts.c_str());
  auto ws = a.root + "/workspace";
  if (s.workspace_fd >= 0) {
    if (::syscall(SYS_move_mount, s.workspace_fd, "", AT_FDCWD, ws.c_str(),
                  MOVE_MOUNT_F_EMPTY_PATH) != 0)
      fail(a, "move_mount workspace to", ws);
  } else {
    auto ws_opts = "size=" + std::to_string(s.workspace_bytes) + ",mode=0755,uid="
                   + std::to_string(s.user_namespace ? 0 : s.uid)
                   + ",gid=" + std::to_string(s.user_namespace ? 0 : s.gid);
    mount_or_fail(a, "tmpfs", ws, "tmpfs", MS_NOSUID | MS_NODEV, ws_opts.c_str());
  }
  mount_or_fail(a, "proc", a.root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC);

  // pivot_root(".", ".") stacks the old root on the new one; detaching it
  // leaves nothing of the host's tree reachable.
  if (::chdir(a.root.c_str()) != 0)
    fail(a, "chdir", a.root);
  if (::syscall(SYS_pivot_root, ".", ".") != 0)
    fail(a, "pivot_root");
  if (::umount2(".", MNT_DETACH) != 0)
    fail(a, "umount old root");
  if (::chdir("/") != 0)
    fail(a, "chdir /");
  mount_or_fail(a, nullptr, "/", nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV);
  if (::sethostname(s.hostname.data(), s.hostname.size()) != 0)
    fail(a, "sethostname");
  if (s.netns_fd < 0)
    loopback_up(a);

  // fds: 0-2 /dev/null, 3 the channel, 4 the memory file; nothing else.
  int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull < 0)
    fail(a, "open /dev/null");
  // Move the fds we keep above the range we are about to fill.
  int chan = ::fcntl(s.channel_fd, F_DUPFD_CLOEXEC, 10);
  int mem = memory_fd >= 0 ? ::fcntl(memory_fd, F_DUPFD_CLOEXEC, 10) : -1;
  int status = ::fcntl(a.status_wr, F_DUPFD_CLOEXEC, 10);
  if (chan < 0 || (memory_fd >= 0 && mem < 0) || status < 0)
    fail(a, "F_DUPFD");
  a.status_wr = status;
  for (int fd = 0; fd <= 2; ++fd)
    if (::dup2(devnull, fd) < 0)
      fail(a, "dup2 /dev/null");
  if (::dup2(chan, 3) < 0 || (mem >= 0 && ::dup2(mem, 4) < 0))
    fail(a, "dup2 channel");
  // The guest runs in this process: keep 3 and 4 away from its children.
  ::fcntl(3, F_SETFD, FD_CLOEXEC);
  if (mem >= 0)
    ::fcntl(4, F_SETFD, FD_CLOEXEC);
  int keep_status = ::fcntl(status, F_DUPFD_CLOEXEC, 5);
  if (keep_status < 0)
    fail(a, "F_DUPFD status");
  a.status_wr = keep_status;
  ::close_range(mem >= 0 ? 5 : 4, keep_status - 1, 0);
  ::close_range(keep_status + 1, ~0u, 0);

  drop_privileges(a);
  sock_fprog prog{static_cast<unsigned short>(a.filter->code.size()),
                  const_cast<sock_filter*>(a.filter->code.data())};
  if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0)
    fail(a, "seccomp");
  ::clearenv();
  ::setenv("PATH", "/usr/local/bin:/usr/bin:/bin", 1);
  ::setenv("HOME", "/workspace", 1);
  ::setenv("HOSTNAME", s.hostname.c_str(), 1);
  for (const auto& kv : s.env)
    ::putenv(const_cast<char*>(kv.c_str())); // lives as long as the process
  ::close(a.status_wr); // EOF: the creator knows setup succeeded.
  return a.entry(a.arg);
}

} // namespace

const std::vector<const char*>& denied_syscalls() {
  return denied;
}

result<seccomp_program> build_seccomp() {
  scmp_filter_ctx ctx = ::seccomp_init(SCMP_ACT_ALLOW);
  if (!ctx)
    return error{"seccomp_init failed"};
  auto fail = [&](const std::string& what, int rc) -> result<seccomp_program> {
    ::seccomp_release(ctx);
    return error::from_errno("seccomp: " + what, -rc);
  };
  const auto eperm = SCMP_ACT_ERRNO(EPERM);
  for (const char* name : denied) {
    int nr = ::seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR)
      continue; // not on this architecture
    if (int rc = ::seccomp_rule_add(ctx, eperm, nr, 0); rc < 0)
      return fail(std::string{"deny "} + name, rc);
  }
  // clone3 passes its flags in memory where BPF cannot look: ENOSYS makes
  // libc fall back to clone, whose flags we can check.
  if (int rc = ::seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0); rc < 0)
    return fail("clone3", rc);
  for (uint64_t flag : {uint64_t{CLONE_NEWNS}, uint64_t{CLONE_NEWUTS}, uint64_t{CLONE_NEWIPC},
                        uint64_t{CLONE_NEWUSER}, uint64_t{CLONE_NEWPID}, uint64_t{CLONE_NEWNET},
                        uint64_t{CLONE_NEWCGROUP}})
    if (int rc = ::seccomp_rule_add(ctx, eperm, SCMP_SYS(clone), 1,
                                    SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag));
        rc < 0)
      return fail("clone flags", rc);
  // Raw and packet sockets: no crafting packets, no sniffing.
  if (int rc = ::seccomp_rule_add(ctx, eperm, SCMP_SYS(socket), 1,
                                  SCMP_A0(SCMP_CMP_EQ, AF_PACKET));
      rc < 0)
    return fail("socket AF_PACKET", rc);
  for (scmp_datum_t family : {AF_INET, AF_INET6})
    for (scmp_datum_t type : {SOCK_RAW, SOCK_PACKET})
      if (int rc = ::seccomp_rule_add(ctx, eperm, SCMP_SYS(socket), 2,
                                      SCMP_A0(SCMP_CMP_EQ, family),
                                      SCMP_A1(SCMP_CMP_MASKED_EQ, 0xf, type));
          rc < 0)
        return fail("socket raw", rc);
  // Export the BPF once; children install it with one prctl.
  int mfd = ::memfd_create("seccomp-bpf", MFD_CLOEXEC);
  if (mfd < 0) {
    ::seccomp_release(ctx);
    return error::from_errno("memfd_create for seccomp", errno);
  }
  int rc = ::seccomp_export_bpf(ctx, mfd);
  ::seccomp_release(ctx);
  if (rc < 0) {
    ::close(mfd);
    return error::from_errno("seccomp_export_bpf", -rc);
  }
  auto size = ::lseek(mfd, 0, SEEK_END);
  seccomp_program prog;
  prog.code.resize(static_cast<size_t>(size) / sizeof(sock_filter));
  if (::pread(mfd, prog.code.data(), static_cast<size_t>(size), 0) != size) {
    ::close(mfd);
    return error::from_errno("read exported seccomp BPF", errno);
  }
  ::close(mfd);
  return prog;
}

result<child_process> clone_sandbox(const sandbox_spec& spec,
                                    const seccomp_program& filter,
                                    entry_fn entry, void* arg,
                                    bool as_sibling) {
  int status[2];
  if (::pipe2(status, O_CLOEXEC) != 0)
    return error::from_errno("pipe for sandbox " + spec.agent_id, errno);
  if (spec.netns_fd >= 0 && spec.user_namespace) {
    ::close(status[0]);
    ::close(status[1]);
    return error{"sandbox " + spec.agent_id
                 + ": a pooled network namespace cannot be joined from a new user namespace"};
  }
  child_args a{&spec, &filter, entry, arg, status[1], ::getuid(), ::getgid(),
               spec.rootfs_dir, {}, {}, {}, {}, {}};
  auto uid = std::to_string(spec.user_namespace ? 0 : spec.uid);
  auto gid = std::to_string(spec.user_namespace ? 0 : spec.gid);
  a.passwd = "root:x:0:0:root:/root:/usr/sbin/nologin\nagent:x:" + uid + ":" + gid
             + ":agent:/workspace:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
  a.group = "root:x:0:\nagent:x:" + gid + ":\nnogroup:x:65534:\n";
  a.hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t"
            + spec.hostname + "\n";
  a.uid_map = "0 " + std::to_string(a.outer_uid) + " 1\n";
  a.gid_map = "0 " + std::to_string(a.outer_gid) + " 1\n";

  uint64_t flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_PIDFD;
  if (spec.netns_fd < 0)
    flags |= CLONE_NEWNET;
  if (spec.user_namespace)
    flags |= CLONE_NEWUSER;
  if (as_sibling)
    flags |= CLONE_PARENT;
  if (spec.cgroup_v2_fd >= 0)
    flags |= CLONE_INTO_CGROUP;
  int pidfd = -1;
  clone_args ca{};
  ca.flags = flags;
  ca.pidfd = reinterpret_cast<uint64_t>(&pidfd);
  // With CLONE_PARENT the kernel insists on 0 and uses our own exit signal
  // (SIGCHLD) for the child.
  ca.exit_signal = as_sibling ? 0 : SIGCHLD;
  if (spec.cgroup_v2_fd >= 0)
    ca.cgroup = static_cast<uint64_t>(spec.cgroup_v2_fd);
  long pid = ::syscall(SYS_clone3, &ca, sizeof ca);
  if (pid < 0) {
    int err = errno;
    ::close(status[0]);
    ::close(status[1]);
    auto e = error::from_errno("clone3 for sandbox " + spec.agent_id, err);
    if (spec.user_namespace) {
      if (auto why = user_namespace_refusal())
        e.message += " (" + *why + ")";
      else if (err == EPERM || err == EACCES || err == ENOSPC || err == EUSERS)
        e.message += " (the kernel refused a new user namespace: the user namespace limit "
                     "may be reached, or a container's seccomp policy or a chroot forbids it)";
    }
    return e;
  }
  if (pid == 0) {
    ::close(status[0]);
    ::_exit(child_main(&a));
  }
  ::close(status[1]);
  return child_process{static_cast<pid_t>(pid), pidfd, status[0]};
}

std::optional<std::string> user_namespace_refusal() {
  auto sysctl = [](const char* path) -> std::optional<long> {
    int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      return std::nullopt; // this kernel has no such switch
    char buf[32]{};
    auto n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    if (n <= 0)
      return std::nullopt;
    return std::strtol(buf, nullptr, 10);
  };
  if (sysctl("/proc/sys/user/max_user_namespaces") == 0L)
    return "user namespaces are disabled: sysctl user.max_user_namespaces is 0";
  if (::geteuid() == 0)
    return std::nullopt;
  if (sysctl("/proc/sys/kernel/unprivileged_userns_clone") == 0L)
    return "unprivileged user namespaces are disabled: sysctl "
           "kernel.unprivileged_userns_clone is 0 (set it to 1, or run as root)";
  if (sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == 1L)
    return "AppArmor restricts unprivileged user namespaces: sysctl "
           "kernel.apparmor_restrict_unprivileged_userns is 1 (allow it for this "
           "program with an AppArmor profile 'userns,' rule, or run as root)";
  return std::nullopt;
}

result<void> wait_setup(int status_fd, const std::string& agent_id) {
  std::string msg;
  char buf[512];
  for (;;) {
    auto n = ::read(status_fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    msg.append(buf, static_cast<size_t>(n));
  }
  ::close(status_fd);
  if (msg.empty())
    return {};
  return error{"sandbox " + agent_id + " setup failed: " + msg};
}

result<int> make_workspace_mount(uint64_t bytes, uid_t uid, gid_t gid) {
  int fs = static_cast<int>(::syscall(SYS_fsopen, "tmpfs", FSOPEN_CLOEXEC));
  if (fs < 0)
    return error::from_errno("fsopen tmpfs for a workspace", errno);
  auto set = [fs](const char* key, const std::string& value) {
    return ::syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, key, value.c_str(), 0) == 0;
  };
  if (!set("size", std::to_string(bytes)) || !set("mode", "0755")
      || !set("uid", std::to_string(uid)) || !set("gid", std::to_string(gid))
      || ::syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) != 0) {
    int err = errno;
    ::close(fs);
    return error::from_errno("fsconfig tmpfs for a workspace", err);
  }
  int mnt = static_cast<int>(::syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC,
                                       MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV));
  int err = errno;
  ::close(fs);
  if (mnt < 0)
    return error::from_errno("fsmount tmpfs for a workspace", err);
  return mnt;
}

} // namespace agentvisor::sandbox

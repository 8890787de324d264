#include "cgroup.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <csignal>
#include <cstring>
#include <string>
#include <thread>
#include <unordered_set>
#include <utility>

namespace agentvisor::sandbox {

namespace {

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  while (!s.empty()) {
    auto pos = s.find(sep);
    out.push_back(s.substr(0, pos));
    if (pos == std::string_view::npos)
      break;
    s.remove_prefix(pos + 1);
  }
  return out;
}

bool has_token(std::string_view list, std::string_view token, char sep) {
  for (auto t : split(list, sep))
    if (t == token)
      return true;
  return false;
}

result<void> make_dir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) == 0 || errno == EEXIST)
    return {};
  return error::from_errno("cannot create cgroup " + path, errno);
}

bool exists(const std::string& path) {
  return ::access(path.c_str(), F_OK) == 0;
}

// "key value" lines (memory.events, memory.oom_control, cpu.stat).
result<uint64_t> read_keyed(const std::string& path, std::string_view key) {
  auto text = read_file(path);
  if (!text)
    return std::move(text).err();
  for (auto line : split(*text, '\n')) {
    auto sp = line.find(' ');
    if (sp == std::string_view::npos || line.substr(0, sp) != key)
      continue;
    uint64_t v = 0;
    auto num = line.substr(sp + 1);
    std::from_chars(num.data(), num.data() + num.size(), v);
    return v;
  }
  return error{path + ": no key '" + std::string{key} + "'"};
}

result<uint64_t> read_number(const std::string& path) {
  auto text = read_file(path);
  if (!text)
    return std::move(text).err();
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(text->data(), text->data() + text->size(), v);
  if (ec != std::errc{})
    return error{path + ": not a number: " + *text};
  return v;
}

// Sends SIGKILL to every process listed in <dir>/cgroup.procs. Does not
// wait for them to exit: a killed process stays listed until it has, which
// can take longer than any fixed number of re-reads (a large address space
// to tear down, a busy machine), so the caller retries remove() on EBUSY.
// Re-reads until the list shows no process it has not signalled, which
// also catches a child forked just before its parent was killed (a process
// with SIGKILL pending forks no more). Bounded: a fork bomb is held by the
// pids limit, and each round kills what exists.
result<void> kill_procs(const std::string& dir) {
  std::unordered_set<int> signalled;
  for (int round = 0; round < 50; ++round) {
    auto procs = read_file(dir + "/cgroup.procs");
    if (!procs)
      return std::move(procs).err();
    bool fresh = false;
    for (auto line : split(*procs, '\n')) {
      int pid = 0;
      if (std::from_chars(line.data(), line.data() + line.size(), pid).ec
            == std::errc{}
          && pid > 0 && signalled.insert(pid).second) {
        ::kill(pid, SIGKILL);
        fresh = true;
      }
    }
    if (!fresh)
      return {};
  }
  return error{dir + ": new processes kept appearing through 50 kill rounds"};
}

std::vector<std::string> list_subdirs(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d)
    return out;
  while (auto* e = ::readdir(d)) {
    if (e->d_type == DT_DIR && std::strcmp(e->d_name, ".") != 0
        && std::strcmp(e->d_name, "..") != 0)
      out.emplace_back(e->d_name);
  }
  ::closedir(d);
  return out;
}

} // namespace

bool valid_name(std::string_view name) {
  if (name.empty() || name.size() > 64 || name == "." || name == "..")
    return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
           || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
  });
}

result<void> write_file(const std::string& path, std::string_view value) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0)
    return error::from_errno("open " + path, errno);
  auto n = ::write(fd, value.data(), value.size());
  int err = errno;
  ::close(fd);
  if (n < 0)
    return error::from_errno("write '" + std::string{value} + "' to " + path, err);
  return {};
}

result<std::string> read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return error::from_errno("open " + path, errno);
  std::string out;
  char buf[4096];
  for (;;) {
    auto n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return error::from_errno("read " + path, err);
    }
    if (n == 0)
      break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

result<cgroup_layout> detect_cgroups(std::string_view mountinfo,
                                     std::string_view unified_controllers) {
  cgroup_layout l;
  for (auto line : split(mountinfo, '\n')) {
    auto dash = line.find(" - ");
    if (dash == std::string_view::npos)
      continue;
    auto pre = split(line.substr(0, dash), ' ');
    auto post = split(line.substr(dash + 3), ' ');
    if (pre.size() < 5 || post.size() < 3)
      continue;
    std::string mnt{pre[4]};
    auto fstype = post[0];
    auto opts = post[2];
    if (fstype == "cgroup2" && l.unified.empty()) {
      l.unified = mnt;
    } else if (fstype == "cgroup") {
      if (has_token(opts, "memory", ',') && l.memory.empty())
        l.memory = mnt;
      if (has_token(opts, "pids", ',') && l.pids.empty())
        l.pids = mnt;
      if (has_token(opts, "cpu", ',') && l.cpu.empty()) {
        l.cpu = mnt;
        if (has_token(opts, "cpuacct", ','))
          l.cpuacct.clear();
      } else if (has_token(opts, "cpuacct", ',') && l.cpuacct.empty()
                 && !has_token(opts, "cpu", ',')) {
        l.cpuacct = mnt;
      }
    }
  }
  // cpuacct found before a combined cpu,cpuacct mount: drop the duplicate.
  if (!l.cpuacct.empty() && l.cpuacct == l.cpu)
    l.cpuacct.clear();
  if (!l.unified.empty() && has_token(unified_controllers, "memory", ' ')
      && has_token(unified_controllers, "pids", ' ')) {
    l.version = cgroup_version::v2;
    return l;
  }
  if (!l.memory.empty() && !l.pids.empty()) {
    l.version = cgroup_version::v1;
    return l;
  }
  std::string missing;
  if (l.memory.empty())
    missing += " memory";
  if (l.pids.empty())
    missing += " pids";
  return error{"no usable cgroup hierarchy: cgroup v1 lacks the" + missing
               + " controller(s) and "
               + (l.unified.empty() ? std::string{"no cgroup2 is mounted"}
                                    : "the cgroup2 mount at " + l.unified
                                        + " does not offer memory and pids")};
}

result<cgroup_layout> detect_cgroups() {
  auto mi = read_file("/proc/self/mountinfo");
  if (!mi)
    return std::move(mi).err();
  // The unified mount's own controller list decides between v1 and v2.
  std::string controllers;
  for (auto line : split(*mi, '\n')) {
    auto dash = line.find(" - cgroup2 ");
    if (dash == std::string_view::npos)
      continue;
    auto pre = split(line.substr(0, dash), ' ');
    if (pre.size() >= 5) {
      if (auto c = read_file(std::string{pre[4]} + "/cgroup.controllers"))
        controllers = *c;
      break;
    }
  }
  while (!controllers.empty() && controllers.back() == '\n')
    controllers.pop_back();
  return detect_cgroups(*mi, controllers);
}

result<cgroup_instance> cgroup_instance::open(const cgroup_layout& layout,
                                              std::string_view instance) {
  if (!valid_name(instance))
    return error{"invalid instance name '" + std::string{instance}
                 + "' for a cgroup directory"};
  cgroup_instance ci;
  ci.layout_ = layout;
  auto add = [&](const std::string& mnt) -> result<void> {
    if (mnt.empty())
      return {};
    if (auto r = make_dir(mnt + "/agentvisor"); !r)
      return r;
    auto dir = mnt + "/agentvisor/" + std::string{instance};
    if (auto r = make_dir(dir); !r)
      return r;
    ci.dirs_.push_back(dir);
    return {};
  };
  if (layout.version == cgroup_version::v2) {
    // Children of agentvisor/<instance> need the controllers enabled on
    // every level above them. Only write what is missing.
    auto root_ctl = read_file(layout.unified + "/cgroup.controllers");
    std::string enable;
    for (auto c : {"memory", "pids", "cpu"})
      if (root_ctl && has_token(*root_ctl, c, ' '))
        enable += std::string{enable.empty() ? "+" : " +"} + c;
    auto enable_in = [&](const std::string& dir) -> result<void> {
      auto cur = read_file(dir + "/cgroup.subtree_control");
      if (cur) {
        std::string want;
        for (auto c : split(enable, ' '))
          if (!has_token(*cur, c.substr(1), ' '))
            want += std::string{want.empty() ? "" : " "} + std::string{c};
        if (want.empty())
          return {};
        return write_file(dir + "/cgroup.subtree_control", want);
      }
      return std::move(cur).err();
    };
    if (auto r = enable_in(layout.unified); !r)
      return r.err();
    if (auto r = add(layout.unified); !r)
      return r.err();
    if (auto r = enable_in(layout.unified + "/agentvisor"); !r)
      return r.err();
    if (auto r = enable_in(ci.dirs_.back()); !r)
      return r.err();
    return ci;
  }
  for (const auto* mnt : {&layout.memory, &layout.pids, &layout.cpu, &layout.cpuacct})
    if (auto r = add(*mnt); !r)
      return r.err();
  return ci;
}

result<size_t> cgroup_instance::remove_stale() const {
  size_t removed = 0;
  for (const auto& dir : dirs_) {
    for (const auto& name : list_subdirs(dir)) {
      auto sub = dir + "/" + name;
      if (auto r = kill_procs(sub); !r)
        return r.err();
      // Killed processes leave the cgroup as they exit: give them a moment.
      int rc = -1;
      for (int i = 0; i < 200 && (rc = ::rmdir(sub.c_str())) != 0 && errno == EBUSY; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      if (rc != 0 && errno != ENOENT)
        return error::from_errno("cannot remove stale cgroup " + sub, errno);
      if (dir == dirs_.front())
        ++removed;
    }
  }
  return removed;
}

void cgroup_instance::remove() const {
  for (const auto& dir : dirs_) {
    ::rmdir(dir.c_str());
    // agentvisor/ itself: only succeeds when no other instance lives there.
    ::rmdir(dir.substr(0, dir.rfind('/')).c_str());
  }
}

result<agent_cgroup> agent_cgroup::create(const cgroup_instance& inst,
                                          std::string_view agent_id,
                                          const cgroup_limits& limits) {
  if (!valid_name(agent_id))
    return error{"invalid agent id '" + std::string{agent_id}
                 + "' for a cgroup directory"};
  agent_cgroup cg;
  const auto& l = inst.layout();
  cg.version_ = l.version;
  for (const auto& dir : inst.dirs()) {
    auto path = dir + "/" + std::string{agent_id};
    if (::mkdir(path.c_str(), 0755) != 0) {
      int err = errno;
      (void) cg.remove();
      return error::from_errno("cannot create cgroup " + path, err);
    }
    cg.dirs_.push_back(std::move(path));
  }
  auto fail = [&cg](error e) -> result<agent_cgroup> {
    (void) cg.remove();
    return e;
  };
  auto mem = std::to_string(limits.memory_bytes);
  auto pids = limits.pids ? std::to_string(limits.pids) : std::string{"max"};
  if (l.version == cgroup_version::v2) {
    const auto& d = cg.dirs_.front();
    if (auto r = write_file(d + "/memory.max", mem); !r)
      return fail(r.err());
    if (exists(d + "/memory.swap.max"))
      if (auto r = write_file(d + "/memory.swap.max", "0"); !r)
        return fail(r.err());
    if (auto r = write_file(d + "/pids.max", pids); !r)
      return fail(r.err());
    if (exists(d + "/cpu.weight"))
      if (auto r = write_file(d + "/cpu.weight", std::to_string(limits.cpu_weight)); !r)
        return fail(r.err());
    cg.cpuacct_dir_ = d;
    return cg;
  }
  for (const auto& d : cg.dirs_) {
    auto parent_is = [&](const std::string& mnt) {
      return !mnt.empty() && d.compare(0, mnt.size() + 1, mnt + "/") == 0;
    };
    if (parent_is(l.memory)) {
      if (auto r = write_file(d + "/memory.limit_in_bytes", mem); !r)
        return fail(r.err());
      // With swap accounting, keep swap from extending the limit.
      if (exists(d + "/memory.memsw.limit_in_bytes"))
        if (auto r = write_file(d + "/memory.memsw.limit_in_bytes", mem); !r)
          return fail(r.err());
    }
    if (parent_is(l.pids))
      if (auto r = write_file(d + "/pids.max", pids); !r)
        return fail(r.err());
    if (parent_is(l.cpu)) {
      auto shares = std::max<uint64_t>(2, uint64_t{limits.cpu_weight} * 1024 / 100);
      if (auto r = write_file(d + "/cpu.shares", std::to_string(shares)); !r)
        return fail(r.err());
      if (l.cpuacct.empty())
        cg.cpuacct_dir_ = d;
    }
    if (parent_is(l.cpuacct))
      cg.cpuacct_dir_ = d;
  }
  return cg;
}

result<int> agent_cgroup::open_oom_fd() const {
  const auto& d = memory_dir();
  if (version_ == cgroup_version::v2) {
    int fd = ::open((d + "/memory.events").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      return error::from_errno("open " + d + "/memory.events", errno);
    return fd;
  }
  int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0)
    return error::from_errno("eventfd for " + d, errno);
  int ofd = ::open((d + "/memory.oom_control").c_str(), O_RDONLY | O_CLOEXEC);
  if (ofd < 0) {
    int err = errno;
    ::close(efd);
    return error::from_errno("open " + d + "/memory.oom_control", err);
  }
  // The registration keeps what it needs; memory.oom_control may be closed.
  auto r = write_file(d + "/cgroup.event_control",
                      std::to_string(efd) + " " + std::to_string(ofd));
  ::close(ofd);
  if (!r) {
    ::close(efd);
    return r.err();
  }
  return efd;
}

result<uint64_t> agent_cgroup::oom_kills() const {
  if (version_ == cgroup_version::v2)
    return read_keyed(memory_dir() + "/memory.events", "oom_kill");
  return read_keyed(memory_dir() + "/memory.oom_control", "oom_kill");
}

result<cgroup_usage> agent_cgroup::usage() const {
  cgroup_usage u;
  const auto& d = memory_dir();
  auto oom = oom_kills();
  if (!oom)
    return std::move(oom).err();
  u.oom_kills = *oom;
  if (version_ == cgroup_version::v2) {
    auto cur = read_number(d + "/memory.current");
    if (!cur)
      return std::move(cur).err();
    u.memory_bytes = *cur;
    if (auto peak = read_number(d + "/memory.peak"))
      u.memory_peak_bytes = *peak;
    if (auto p = read_number(d + "/pids.current"))
      u.pids = *p;
    if (auto cpu = read_keyed(d + "/cpu.stat", "usage_usec"))
      u.cpu_usage_ns = *cpu * 1000;
    return u;
  }
  auto cur = read_number(d + "/memory.usage_in_bytes");
  if (!cur)
    return std::move(cur).err();
  u.memory_bytes = *cur;
  if (auto peak = read_number(d + "/memory.max_usage_in_bytes"))
    u.memory_peak_bytes = *peak;
  for (const auto& dir : dirs_)
    if (exists(dir + "/pids.current"))
      if (auto p = read_number(dir + "/pids.current"))
        u.pids = *p;
  if (!cpuacct_dir_.empty())
    if (auto cpu = read_number(cpuacct_dir_ + "/cpuacct.usage"))
      u.cpu_usage_ns = *cpu;
  return u;
}

result<void> agent_cgroup::kill_all() const {
  if (dirs_.empty())
    return {};
  if (version_ == cgroup_version::v2 && exists(memory_dir() + "/cgroup.kill"))
    return write_file(memory_dir() + "/cgroup.kill", "1");
  return kill_procs(memory_dir());
}

result<void> agent_cgroup::remove() const {
  // Leaf directories only; every hierarchy is tried even if one fails.
  result<void> first_error;
  for (const auto& d : dirs_)
    if (::rmdir(d.c_str()) != 0 && errno != ENOENT && first_error)
      first_error = error::from_errno("cannot remove cgroup " + d, errno);
  return first_error;
}

} // namespace agentvisor::sandbox

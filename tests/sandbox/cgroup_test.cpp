// cgroups for sandboxes (src/backends/sandbox/cgroup.hpp), in three kinds of
// test, each named for what it runs against:
//  - "synthetic": detect_cgroups() on mountinfo texts of hosts we do not
//    have (pure v2, combined cpu,cpuacct, no memory controller);
//  - "fake cgroupfs": the v2 code paths (and a combined cpu,cpuacct v1
//    layout) against plain directories in a temp dir whose files stand in
//    for the kernel's; cgroup_dir_ops makes new directories get those files,
//    as a real cgroupfs would. They prove which files are written with what,
//    not what a kernel does with it;
//  - real kernel: this host's cgroups (v1 for memory, pids and cpu here) and
//    its cgroup2 mount, whose directory mechanics (cgroup.procs,
//    cgroup.events) work though it offers no controllers. These need root
//    and report a skip (a MESSAGE, the other cases still run) without it.

#include "cgroup.hpp"

#include "../support/cgroup2_scratch.hpp"

#include <doctest/doctest.h>

#include <poll.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>

namespace sb = agentvisor::sandbox;
namespace fs = std::filesystem;
using test_support::slurp;

namespace {

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

/// The error text of a result, "" when it holds a value (doctest evaluates
/// a message even for passing checks under -s).
template <class R>
std::string why(const R& r) {
  return r ? std::string{} : r.err().message;
}

// --- Synthetic mountinfo -----------------------------------------------------

// This host's /proc/self/mountinfo, cgroup part (Debian 12 kernel 6.x on a
// hybrid layout: v1 controllers, a cgroup2 mount with no memory or pids).
constexpr const char* hybrid_mountinfo =
  "21 26 0:20 / /proc rw,relatime - proc proc rw\n"
  "26 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard\n"
  "30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
  "31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
  "32 30 0:29 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n"
  "33 30 0:30 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset\n"
  "34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
  "35 30 0:32 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices\n"
  "36 30 0:33 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer\n"
  "37 30 0:34 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio\n"
  "38 30 0:35 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
  "39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"
  "40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

// A systemd host booted with the unified hierarchy only (Debian 11+),
// optional fields ("shared:N") included as the kernel writes them.
constexpr const char* pure_v2_mountinfo =
  "22 28 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n"
  "28 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro\n"
  "26 21 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 "
  "rw,nsdelegate,memory_recursiveprot\n";
constexpr const char* pure_v2_controllers = "cpuset cpu io memory hugetlb pids rdma misc";

// A v1 host that mounts cpu and cpuacct as one hierarchy (Debian 10 style).
constexpr const char* combined_v1_mountinfo =
  "25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755\n"
  "26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 "
  "cgroup2 rw,nsdelegate\n"
  "29 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - "
  "cgroup cgroup rw,cpu,cpuacct\n"
  "30 25 0:27 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup "
  "cgroup rw,memory\n"
  "31 25 0:28 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:15 - cgroup "
  "cgroup rw,pids\n";

} // namespace

TEST_CASE("detect_cgroups picks v1 on this host's hybrid layout (synthetic mountinfo "
          "copied from this host)") {
  auto l = sb::detect_cgroups(hybrid_mountinfo, "hugetlb");
  REQUIRE_MESSAGE(l, why(l));
  CHECK(l->version == sb::cgroup_version::v1);
  CHECK(l->memory == "/sys/fs/cgroup/memory");
  CHECK(l->pids == "/sys/fs/cgroup/pids");
  CHECK(l->cpu == "/sys/fs/cgroup/cpu");
  CHECK(l->cpuacct == "/sys/fs/cgroup/cpuacct");
  CHECK(l->unified == "/sys/fs/cgroup/unified");
}

TEST_CASE("detect_cgroups picks v2 on a pure cgroup2 host with memory and pids "
          "(synthetic mountinfo)") {
  auto l = sb::detect_cgroups(pure_v2_mountinfo, pure_v2_controllers);
  REQUIRE_MESSAGE(l, why(l));
  CHECK(l->version == sb::cgroup_version::v2);
  CHECK(l->unified == "/sys/fs/cgroup");
  CHECK(l->memory.empty());
  CHECK(l->pids.empty());
  CHECK(l->cpu.empty());
}

TEST_CASE("detect_cgroups takes a combined cpu,cpuacct v1 mount as cpu without a "
          "separate cpuacct (synthetic mountinfo)") {
  // The unified mount of this host holds no controllers: v1 it is.
  auto l = sb::detect_cgroups(combined_v1_mountinfo, "");
  REQUIRE_MESSAGE(l, why(l));
  CHECK(l->version == sb::cgroup_version::v1);
  CHECK(l->cpu == "/sys/fs/cgroup/cpu,cpuacct");
  CHECK(l->cpuacct.empty());
  CHECK(l->memory == "/sys/fs/cgroup/memory");
  CHECK(l->pids == "/sys/fs/cgroup/pids");
}

TEST_CASE("detect_cgroups names the missing memory controller when no hierarchy "
          "has it (synthetic mountinfo)") {
  std::string no_memory =
    "38 30 0:35 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
    "31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
    "40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
  auto l = sb::detect_cgroups(no_memory, "cpu io pids");
  REQUIRE_FALSE(l);
  INFO(l.err().message);
  CHECK(contains(l.err().message, "cgroup v1 lacks the memory controller"));
  CHECK_FALSE(contains(l.err().message, "pids controller"));
  CHECK(contains(l.err().message,
                 "the cgroup2 mount at /sys/fs/cgroup/unified does not offer memory and pids"));

  auto none = sb::detect_cgroups("26 1 254:0 / / rw - ext4 /dev/vda rw\n", "");
  REQUIRE_FALSE(none);
  INFO(none.err().message);
  CHECK(contains(none.err().message, "lacks the memory pids controller(s)"));
  CHECK(contains(none.err().message, "no cgroup2 is mounted"));
}

TEST_CASE("detect_cgroups falls back to v1 when the cgroup2 mount lacks memory "
          "(synthetic mountinfo)") {
  auto l = sb::detect_cgroups(hybrid_mountinfo, "cpu io pids");
  REQUIRE_MESSAGE(l, why(l));
  CHECK(l->version == sb::cgroup_version::v1);
  CHECK(l->memory == "/sys/fs/cgroup/memory");
  // The same mount offering memory and pids as well wins over v1.
  auto v2 = sb::detect_cgroups(hybrid_mountinfo, "cpu io memory pids");
  REQUIRE_MESSAGE(v2, why(v2));
  CHECK(v2->version == sb::cgroup_version::v2);
  CHECK(v2->unified == "/sys/fs/cgroup/unified");
}

// --- Names -------------------------------------------------------------------

TEST_CASE("valid_name accepts one safe path component and rejects everything else") {
  CHECK(sb::valid_name("agent-1_x.y"));
  CHECK(sb::valid_name(std::string(64, 'a')));
  CHECK_FALSE(sb::valid_name(""));
  CHECK_FALSE(sb::valid_name("."));
  CHECK_FALSE(sb::valid_name(".."));
  CHECK_FALSE(sb::valid_name("a/b"));
  CHECK_FALSE(sb::valid_name("../etc"));
  CHECK_FALSE(sb::valid_name(std::string(65, 'a')));
  CHECK_FALSE(sb::valid_name("a b"));
  CHECK_FALSE(sb::valid_name(" a"));
  CHECK_FALSE(sb::valid_name("a\n"));
  CHECK_FALSE(sb::valid_name(std::string("a\0b", 3)));
}

// --- Fake cgroupfs -----------------------------------------------------------

namespace {

/// A fake cgroupfs in a temp dir: each top-level directory stands for one
/// mount (hierarchy); a directory made in it gets that hierarchy's interface
/// files, as the kernel would create them, and rmdir removes them with it
/// unless cgroup.procs lists a process or a child cgroup exists (EBUSY, as
/// the kernel says). Writable interface files start empty so that a test
/// reads back exactly what the code wrote.
struct fake_cgroupfs {
  /// hierarchy dir name -> files (name, initial content) of a new cgroup
  static inline std::map<std::string, std::map<std::string, std::string>> files;
  static inline fs::path root;

  fake_cgroupfs() {
    char tmpl[] = "/tmp/agentvisor-fake-cgroupfs-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    root = tmpl;
    files.clear();
    previous_ = sb::set_cgroup_dir_ops_for_testing({&fake_mkdir, &fake_rmdir});
  }
  ~fake_cgroupfs() {
    sb::set_cgroup_dir_ops_for_testing(previous_);
    std::error_code ec;
    fs::remove_all(root, ec);
  }

  static std::map<std::string, std::string> v2_files() {
    return {{"cgroup.procs", ""},
            {"cgroup.events", "populated 0\nfrozen 0\n"},
            {"cgroup.controllers", ""},
            {"cgroup.subtree_control", ""},
            {"cgroup.kill", ""},
            {"memory.max", ""},
            {"memory.swap.max", ""},
            {"memory.current", "0\n"},
            {"memory.peak", "0\n"},
            {"memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n"},
            {"pids.max", ""},
            {"pids.current", "0\n"},
            {"cpu.weight", ""},
            {"cpu.stat", "usage_usec 0\nuser_usec 0\nsystem_usec 0\n"}};
  }

  /// Makes a hierarchy's mount point with its root files.
  static fs::path mount(const std::string& name, std::map<std::string, std::string> per_dir,
                        std::map<std::string, std::string> root_files) {
    auto dir = root / name;
    fs::create_directories(dir);
    for (const auto& [f, content] : root_files)
      put(dir / f, content);
    files[name] = std::move(per_dir);
    return dir;
  }

  static void put(const fs::path& p, const std::string& content) {
    std::ofstream(p, std::ios::binary | std::ios::trunc) << content;
  }

  /// The hierarchy a path lies in ("" when not under the fake root).
  static std::string hierarchy_of(const fs::path& p) {
    auto rel = p.lexically_relative(root);
    if (rel.empty() || *rel.begin() == "..")
      return {};
    return rel.begin()->string();
  }

  static int fake_mkdir(const char* path, mode_t mode) {
    auto h = hierarchy_of(path);
    if (h.empty())
      return ::mkdir(path, mode); // not ours: the real call
    if (::mkdir(path, mode) != 0)
      return -1;
    for (const auto& [f, content] : files[h])
      put(fs::path{path} / f, content);
    return 0;
  }

  static int fake_rmdir(const char* path) {
    if (hierarchy_of(path).empty())
      return ::rmdir(path);
    std::error_code ec;
    if (!fs::is_directory(path, ec)) {
      errno = ENOENT;
      return -1;
    }
    if (!slurp(std::string{path} + "/cgroup.procs").empty()) {
      errno = EBUSY;
      return -1;
    }
    for (const auto& e : fs::directory_iterator(path))
      if (e.is_directory()) {
        errno = EBUSY;
        return -1;
      }
    for (const auto& e : fs::directory_iterator(path))
      fs::remove(e.path(), ec);
    return ::rmdir(path);
  }

  /// A v2 layout as detect_cgroups() finds it for a cgroup2 mount at
  /// <root>/unified offering `controllers`.
  static sb::cgroup_layout v2_layout(const std::string& controllers,
                                     const std::string& root_subtree = "") {
    auto unified = mount("unified", v2_files(),
                         {{"cgroup.controllers", controllers + "\n"},
                          {"cgroup.subtree_control", root_subtree},
                          {"cgroup.procs", ""}});
    auto mi = "40 30 0:37 / " + unified.string() + " rw,relatime - cgroup2 cgroup2 rw\n";
    auto l = sb::detect_cgroups(mi, controllers);
    REQUIRE_MESSAGE(l, why(l));
    REQUIRE(l->version == sb::cgroup_version::v2);
    return *l;
  }

private:
  sb::cgroup_dir_ops previous_{};
};

} // namespace

TEST_CASE_FIXTURE(fake_cgroupfs, "cgroup_instance::open refuses an invalid instance name "
                                 "and creates nothing (fake cgroupfs)") {
  sb::cgroup_layout l;
  l.memory = mount("memory", {}, {}).string();
  l.pids = mount("pids", {}, {}).string();
  for (const char* bad : {"", "..", "a/b", "../escape", "with space"}) {
    auto inst = sb::cgroup_instance::open(l, bad);
    REQUIRE_FALSE(inst);
    CHECK(contains(inst.err().message, "invalid instance name"));
  }
  CHECK(fs::is_empty(l.memory));
  CHECK(fs::is_empty(l.pids));
  CHECK_FALSE(fs::exists(root / "escape"));
}

TEST_CASE_FIXTURE(fake_cgroupfs, "cgroup_instance::open and agent_cgroup::create write the "
                                 "v2 files (fake cgroupfs in a temp dir)") {
  auto l = v2_layout(pure_v2_controllers);
  auto unified = fs::path{l.unified};
  auto inst = sb::cgroup_instance::open(l, "fake-inst");
  REQUIRE_MESSAGE(inst, why(inst));
  // Each level above an agent's cgroup delegates memory, pids and cpu.
  CHECK(slurp(unified / "cgroup.subtree_control") == "+memory +pids +cpu");
  CHECK(slurp(unified / "agentvisor/cgroup.subtree_control") == "+memory +pids +cpu");
  CHECK(slurp(unified / "agentvisor/fake-inst/cgroup.subtree_control") == "+memory +pids +cpu");
  REQUIRE(inst->dirs() == std::vector<std::string>{(unified / "agentvisor/fake-inst").string()});

  auto cg = sb::agent_cgroup::create(*inst, "agent-1", {32ull << 20, 64, 250});
  REQUIRE_MESSAGE(cg, why(cg));
  auto d = unified / "agentvisor/fake-inst/agent-1";
  CHECK(cg->version() == sb::cgroup_version::v2);
  CHECK(cg->dirs() == std::vector<std::string>{d.string()});
  CHECK(slurp(d / "memory.max") == "33554432");
  CHECK(slurp(d / "memory.swap.max") == "0");
  CHECK(slurp(d / "pids.max") == "64");
  CHECK(slurp(d / "cpu.weight") == "250");
  // v2 never sees a v1 file name.
  CHECK_FALSE(fs::exists(d / "memory.limit_in_bytes"));
  CHECK_FALSE(fs::exists(d / "cpu.shares"));

  auto unlimited = sb::agent_cgroup::create(*inst, "agent-2", {16ull << 20, 0, 100});
  REQUIRE_MESSAGE(unlimited, why(unlimited));
  CHECK(slurp(unified / "agentvisor/fake-inst/agent-2/pids.max") == "max");

  // kill_all goes through cgroup.kill where the kernel has it (5.14+).
  auto killed = cg->kill_all();
  CHECK_MESSAGE(killed, why(killed));
  CHECK(slurp(d / "cgroup.kill") == "1");

  // The instance stays while agents live in it; agents go, then it goes.
  inst->remove();
  CHECK(fs::exists(unified / "agentvisor/fake-inst"));
  CHECK(cg->remove());
  CHECK(unlimited->remove());
  CHECK_FALSE(fs::exists(d));
  inst->remove();
  CHECK_FALSE(fs::exists(unified / "agentvisor"));
  CHECK(fs::exists(unified / "cgroup.procs")); // the mount's own files are untouched
}

TEST_CASE_FIXTURE(fake_cgroupfs, "cgroup_instance::open enables only the v2 controllers that "
                                 "are missing and offered (fake cgroupfs)") {
  SUBCASE("memory already enabled at the root: only pids and cpu are added") {
    auto l = v2_layout(pure_v2_controllers, "memory");
    REQUIRE(sb::cgroup_instance::open(l, "partial"));
    // The write lands at offset 0 of the fake file: what was written shows.
    CHECK(slurp(fs::path{l.unified} / "cgroup.subtree_control") == "+pids +cpu");
  }
  SUBCASE("everything enabled at the root: the root file is not written") {
    auto l = v2_layout(pure_v2_controllers, "cpuset cpu io memory pids");
    auto before = fs::last_write_time(fs::path{l.unified} / "cgroup.subtree_control");
    REQUIRE(sb::cgroup_instance::open(l, "complete"));
    CHECK(slurp(fs::path{l.unified} / "cgroup.subtree_control") == "cpuset cpu io memory pids");
    CHECK(fs::last_write_time(fs::path{l.unified} / "cgroup.subtree_control") == before);
  }
  SUBCASE("a host without the v2 cpu controller: memory and pids only") {
    auto l = v2_layout("io memory pids");
    REQUIRE(sb::cgroup_instance::open(l, "nocpu"));
    CHECK(slurp(fs::path{l.unified} / "cgroup.subtree_control") == "+memory +pids");
    CHECK(slurp(fs::path{l.unified} / "agentvisor/nocpu/cgroup.subtree_control")
          == "+memory +pids");
  }
  SUBCASE("opening twice is idempotent once the kernel shows the controllers") {
    auto l = v2_layout(pure_v2_controllers);
    REQUIRE(sb::cgroup_instance::open(l, "twice"));
    auto unified = fs::path{l.unified};
    for (auto dir : {unified, unified / "agentvisor", unified / "agentvisor/twice"})
      put(dir / "cgroup.subtree_control", "cpu memory pids\n"); // the kernel's format
    REQUIRE(sb::cgroup_instance::open(l, "twice"));
    for (auto dir : {unified, unified / "agentvisor", unified / "agentvisor/twice"})
      CHECK(slurp(dir / "cgroup.subtree_control") == "cpu memory pids\n");
  }
}

TEST_CASE_FIXTURE(fake_cgroupfs, "agent_cgroup::create skips v2 files the host lacks and "
                                 "removes its directory when a limit cannot be written "
                                 "(fake cgroupfs)") {
  auto l = v2_layout(pure_v2_controllers);
  auto inst = sb::cgroup_instance::open(l, "lacking").value();
  auto dir = fs::path{inst.dirs().front()};
  // No swap accounting, no cpu controller: those two are optional.
  files["unified"].erase("memory.swap.max");
  files["unified"].erase("cpu.weight");
  auto cg = sb::agent_cgroup::create(inst, "no-swap", {8ull << 20, 8, 100});
  REQUIRE_MESSAGE(cg, why(cg));
  CHECK(slurp(dir / "no-swap/memory.max") == "8388608");
  CHECK_FALSE(fs::exists(dir / "no-swap/memory.swap.max"));
  CHECK_FALSE(fs::exists(dir / "no-swap/cpu.weight"));
  CHECK(cg->remove());
  // pids.max is not optional.
  files["unified"].erase("pids.max");
  auto broken = sb::agent_cgroup::create(inst, "no-pids", {8ull << 20, 8, 100});
  REQUIRE_FALSE(broken);
  CHECK(contains(broken.err().message, (dir / "no-pids/pids.max").string()));
  CHECK(contains(broken.err().message, "No such file or directory"));
  CHECK_FALSE(fs::exists(dir / "no-pids"));
  CHECK(fs::exists(dir));
}

TEST_CASE_FIXTURE(fake_cgroupfs, "usage, oom_kills and open_oom_fd read the v2 files "
                                 "(fake cgroupfs)") {
  auto l = v2_layout(pure_v2_controllers);
  auto inst = sb::cgroup_instance::open(l, "usage").value();
  auto cg = sb::agent_cgroup::create(inst, "a", {64ull << 20, 16, 100}).value();
  auto d = fs::path{cg.memory_dir()};
  CHECK(cg.oom_kills().value() == 0);
  put(d / "memory.current", "12345\n");
  put(d / "memory.peak", "23456\n");
  put(d / "pids.current", "3\n");
  put(d / "cpu.stat", "usage_usec 789\nuser_usec 500\nsystem_usec 289\n");
  // oom_group_kill must not be mistaken for oom_kill.
  put(d / "memory.events", "low 0\nhigh 0\nmax 4\noom 2\noom_kill 1\noom_group_kill 7\n");
  auto u = cg.usage();
  REQUIRE_MESSAGE(u, why(u));
  CHECK(u->memory_bytes == 12345);
  CHECK(u->memory_peak_bytes == 23456);
  CHECK(u->pids == 3);
  CHECK(u->cpu_usage_ns == 789000);
  CHECK(u->oom_kills == 1);
  CHECK(cg.oom_kills().value() == 1);
  // The OOM fd on v2 is memory.events itself (the io thread polls it for
  // POLLPRI and re-reads it: see the io suite's cgroup.events test).
  auto fd = cg.open_oom_fd();
  REQUIRE_MESSAGE(fd, why(fd));
  char buf[256];
  auto n = ::pread(*fd, buf, sizeof buf, 0);
  ::close(*fd);
  REQUIRE(n > 0);
  CHECK(contains(std::string(buf, static_cast<size_t>(n)), "oom_kill 1\n"));
  CHECK(cg.remove());
  inst.remove();
}

TEST_CASE_FIXTURE(fake_cgroupfs, "on a v1 host with cpu and cpuacct combined, create writes "
                                 "cpu.shares there and usage reads cpuacct.usage from it "
                                 "(fake cgroupfs)") {
  sb::cgroup_layout l;
  l.memory = mount("memory", {{"cgroup.procs", ""},
                              {"memory.limit_in_bytes", ""},
                              {"memory.usage_in_bytes", "4096\n"},
                              {"memory.max_usage_in_bytes", "8192\n"},
                              {"memory.oom_control",
                               "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n"}},
                   {}).string();
  l.pids = mount("pids", {{"cgroup.procs", ""}, {"pids.max", ""}, {"pids.current", "2\n"}}, {})
             .string();
  l.cpu = mount("cpu,cpuacct", {{"cgroup.procs", ""}, {"cpu.shares", ""},
                                {"cpuacct.usage", "5000\n"}}, {}).string();
  auto inst = sb::cgroup_instance::open(l, "combined");
  REQUIRE_MESSAGE(inst, why(inst));
  CHECK(inst->dirs().size() == 3);
  auto cg = sb::agent_cgroup::create(*inst, "a", {32ull << 20, 10, 50});
  REQUIRE_MESSAGE(cg, why(cg));
  REQUIRE(cg->dirs().size() == 3);
  CHECK(cg->memory_dir() == l.memory + "/agentvisor/combined/a");
  CHECK(slurp(l.memory + "/agentvisor/combined/a/memory.limit_in_bytes") == "33554432");
  // No memsw file (no swap accounting): not written, not created.
  CHECK_FALSE(fs::exists(l.memory + "/agentvisor/combined/a/memory.memsw.limit_in_bytes"));
  CHECK(slurp(l.pids + "/agentvisor/combined/a/pids.max") == "10");
  CHECK(slurp(l.cpu + "/agentvisor/combined/a/cpu.shares") == "512"); // weight 50 of 100
  auto u = cg->usage();
  REQUIRE_MESSAGE(u, why(u));
  CHECK(u->memory_bytes == 4096);
  CHECK(u->memory_peak_bytes == 8192);
  CHECK(u->pids == 2);
  CHECK(u->cpu_usage_ns == 5000);
  CHECK(u->oom_kills == 0);
  CHECK(cg->remove());
  inst->remove();
  CHECK_FALSE(fs::exists(l.cpu + "/agentvisor"));
}

TEST_CASE_FIXTURE(fake_cgroupfs, "cgroup_instance::open makes agentvisor/ again when another "
                                 "instance removed it between its two mkdirs (fake cgroupfs)") {
  auto l = v2_layout(pure_v2_controllers);
  // The first mkdir of agentvisor/<instance> fails with ENOENT, as if
  // another instance's remove() took agentvisor/ away just before.
  static int failures_left = 0;
  failures_left = 1;
  auto racing = [](const char* path, mode_t mode) {
    if (fs::path{path}.filename() == "racer" && failures_left > 0) {
      --failures_left;
      fake_rmdir(fs::path{path}.parent_path().c_str());
      errno = ENOENT;
      return -1;
    }
    return fake_mkdir(path, mode);
  };
  auto fake = sb::set_cgroup_dir_ops_for_testing({+racing, &fake_rmdir});
  auto inst = sb::cgroup_instance::open(l, "racer");
  sb::set_cgroup_dir_ops_for_testing(fake);
  REQUIRE_MESSAGE(inst, why(inst));
  CHECK(failures_left == 0);
  CHECK(fs::is_directory(fs::path{l.unified} / "agentvisor/racer"));
  CHECK(slurp(fs::path{l.unified} / "agentvisor/cgroup.subtree_control") == "+memory +pids +cpu");
}

TEST_CASE_FIXTURE(fake_cgroupfs, "remove_stale removes what is left under its own instance "
                                 "and nothing of another instance (fake cgroupfs)") {
  auto l = v2_layout(pure_v2_controllers);
  auto mine = sb::cgroup_instance::open(l, "mine").value();
  auto other = sb::cgroup_instance::open(l, "other").value();
  REQUIRE(sb::agent_cgroup::create(mine, "left-1", {8ull << 20, 8, 100}));
  REQUIRE(sb::agent_cgroup::create(mine, "left-2", {8ull << 20, 8, 100}));
  REQUIRE(sb::agent_cgroup::create(other, "theirs", {8ull << 20, 8, 100}));
  auto removed = mine.remove_stale();
  REQUIRE_MESSAGE(removed, why(removed));
  CHECK(*removed == 2);
  CHECK_FALSE(fs::exists(mine.dirs().front() + "/left-1"));
  CHECK(fs::is_directory(other.dirs().front() + "/theirs"));
  CHECK(slurp(other.dirs().front() + "/theirs/cgroup.kill").empty()); // never killed
}

// --- Real kernel: the cgroup2 mount's directory mechanics --------------------

namespace {

/// A forked child that waits to be killed. The doctest process is single-
/// threaded, so the child may do anything.
pid_t fork_waiter() {
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    for (;;)
      ::pause();
  }
  return pid;
}

/// waitpid with a 10 s bound; the status, or nullopt on timeout.
std::optional<int> wait_child(pid_t pid) {
  for (int i = 0; i < 2000; ++i) {
    int st = 0;
    auto r = ::waitpid(pid, &st, WNOHANG);
    if (r == pid)
      return st;
    if (r < 0)
      return std::nullopt;
    ::usleep(5000);
  }
  return std::nullopt;
}

} // namespace

TEST_CASE("a child cgroup on this host's controller-less cgroup2 mount takes a forked "
          "process via cgroup.procs, shows populated 1, and is removed after the kill") {
  auto made = test_support::cgroup2_scratch::create("cg2");
  if (!made.skip.empty()) {
    MESSAGE("skipped: " << made.skip);
    return;
  }
  REQUIRE_MESSAGE(made.cgroup, made.error);
  auto& cg = *made.cgroup;
  MESSAGE("cgroup2 scratch at " << cg.path() << ", mount offers: '"
                                << slurp(test_support::cgroup2_mount() + "/cgroup.controllers")
                                << "'");
  CHECK(contains(cg.events(), "populated 0\n"));
  pid_t pid = fork_waiter();
  auto moved = cg.move_in(pid);
  if (!moved.empty())
    ::kill(pid, SIGKILL);
  REQUIRE_MESSAGE(moved.empty(), moved);
  CHECK(cg.procs() == std::vector<pid_t>{pid});
  CHECK(contains(cg.events(), "populated 1\n"));
  // The kernel's view of the child: its v2 membership is our directory.
  auto name = fs::path{cg.path()}.filename().string();
  CHECK(contains(slurp("/proc/" + std::to_string(pid) + "/cgroup"), "0::/" + name + "\n"));
  // A populated cgroup cannot be removed.
  int rc = ::rmdir(cg.path().c_str());
  int err = errno; // before doctest's reporting can change it
  CHECK(rc == -1);
  CHECK(err == EBUSY);
  REQUIRE(::kill(pid, SIGKILL) == 0);
  auto st = wait_child(pid);
  REQUIRE(st);
  CHECK(WIFSIGNALED(*st));
  CHECK(contains(cg.events(), "populated 0\n"));
  CHECK(cg.procs().empty());
  auto path = cg.path();
  made.cgroup.reset();
  CHECK_FALSE(fs::exists(path));
}

// --- Real kernel: this host's cgroups (v1 here) ------------------------------

namespace {

/// This host's detected cgroups and an instance of our own for one test.
/// Skips (returns nullopt after a MESSAGE) when not root or when no usable
/// hierarchy exists.
struct host_instance {
  sb::cgroup_layout layout;
  std::optional<sb::cgroup_instance> inst;

  static std::optional<std::string> unavailable() {
    if (::geteuid() != 0)
      return "needs root to create cgroups";
    if (auto l = sb::detect_cgroups(); !l)
      return l.err().message;
    return std::nullopt;
  }

  host_instance() {
    layout = sb::detect_cgroups().value();
    auto i = sb::cgroup_instance::open(layout, "test-cgroup-" + std::to_string(::getpid()));
    REQUIRE_MESSAGE(i, why(i));
    inst = std::move(*i);
    MESSAGE("real cgroup ", layout.version == sb::cgroup_version::v1 ? "v1" : "v2",
            " under ", inst->dirs().front());
  }
  ~host_instance();

  /// agent_cgroup::create, undone by the destructor even when a check
  /// fails half-way.
  agentvisor::result<sb::agent_cgroup> create(std::string_view id,
                                              const sb::cgroup_limits& limits) {
    auto cg = sb::agent_cgroup::create(*inst, id, limits);
    if (cg)
      agents.push_back(*cg);
    return cg;
  }

  std::vector<sb::agent_cgroup> agents;
};

/// An agent cgroup with a forked process in it that signals over a pipe
/// once it joined (and touched `touch_bytes` of memory), then waits.
struct joined_child {
  pid_t pid = -1;

  joined_child(const sb::agent_cgroup& cg, size_t touch_bytes = 0) {
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
    pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::close(p[0]);
      for (const auto& d : cg.dirs()) {
        int fd = ::open((d + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC);
        if (fd < 0 || ::write(fd, "0", 1) != 1)
          ::_exit(1);
        ::close(fd);
      }
      if (touch_bytes) {
        auto* mem = static_cast<volatile char*>(::malloc(touch_bytes));
        for (size_t i = 0; i < touch_bytes; i += 4096)
          mem[i] = 1;
      }
      (void) !::write(p[1], "j", 1);
      for (;;)
        ::pause();
    }
    ::close(p[1]);
    pollfd pfd{p[0], POLLIN, 0};
    char c = 0;
    bool joined = ::poll(&pfd, 1, 10000) == 1 && ::read(p[0], &c, 1) == 1;
    ::close(p[0]);
    if (!joined)
      stop();
    REQUIRE_MESSAGE(joined, "the child did not join its cgroup");
  }
  ~joined_child() { stop(); }

  /// SIGKILL and reap; the wait status.
  std::optional<int> stop() {
    if (pid <= 0)
      return std::nullopt;
    ::kill(pid, SIGKILL);
    auto st = wait_child(pid);
    pid = -1;
    return st;
  }
};

/// kill_all, then remove until it stops saying EBUSY (the kernel lets a
/// killed process leave its cgroup a moment later).
std::string destroy(const sb::agent_cgroup& cg) {
  (void) cg.kill_all();
  std::string err;
  for (int i = 0; i < 400; ++i) {
    auto r = cg.remove();
    if (r)
      return {};
    err = r.err().message;
    ::usleep(5000);
  }
  return err;
}

host_instance::~host_instance() {
  for (const auto& cg : agents) {
    auto err = destroy(cg); // a no-op for one the test removed already
    if (!err.empty())
      std::fprintf(stderr, "cleanup of %s: %s\n", cg.memory_dir().c_str(), err.c_str());
  }
  if (inst)
    inst->remove();
}

} // namespace

TEST_CASE("kill_all empties a busy agent cgroup, and remove fails with EBUSY until then "
          "(this host's real cgroups)") {
  if (auto why = host_instance::unavailable()) {
    MESSAGE("skipped: " << *why);
    return;
  }
  host_instance host;
  auto cg = host.create("busy", {64ull << 20, 16, 100});
  REQUIRE_MESSAGE(cg, why(cg));
  pid_t pid = -1;
  {
    joined_child child(*cg);
    pid = child.pid;
    CHECK(contains(slurp(cg->memory_dir() + "/cgroup.procs"), std::to_string(pid) + "\n"));
    auto busy = cg->remove();
    REQUIRE_FALSE(busy);
    CHECK(busy.err().sys_errno == EBUSY);
    CHECK(contains(busy.err().message, cg->memory_dir()));
    for (const auto& d : cg->dirs())
      CHECK_MESSAGE(fs::is_directory(d), d);
    auto killed = cg->kill_all();
    REQUIRE_MESSAGE(killed, why(killed));
    // Our own child, killed by kill_all, not by the guard.
    int st = 0;
    auto waited = wait_child(pid);
    REQUIRE(waited);
    st = *waited;
    child.pid = -1;
    CHECK(WIFSIGNALED(st));
    CHECK(WTERMSIG(st) == SIGKILL);
  }
  auto err = destroy(*cg);
  CHECK_MESSAGE(err.empty(), err);
  for (const auto& d : cg->dirs())
    CHECK_FALSE(fs::exists(d));
}

TEST_CASE("usage counts a joined process's memory and pid, and oom_kills starts at 0 "
          "(this host's real cgroups)") {
  if (auto why = host_instance::unavailable()) {
    MESSAGE("skipped: " << *why);
    return;
  }
  host_instance host;
  auto cg = host.create("usage", {64ull << 20, 16, 100});
  REQUIRE_MESSAGE(cg, why(cg));
  auto before = cg->usage();
  REQUIRE_MESSAGE(before, why(before));
  CHECK(before->pids == 0);
  CHECK(before->memory_bytes < (1u << 20));
  CHECK(cg->oom_kills().value() == 0);
  {
    joined_child child(*cg, 8u << 20);
    auto u = cg->usage();
    REQUIRE_MESSAGE(u, why(u));
    MESSAGE("memory " << u->memory_bytes << " peak " << u->memory_peak_bytes << " pids "
                      << u->pids << " cpu_ns " << u->cpu_usage_ns);
    CHECK(u->memory_bytes >= (8u << 20));
    CHECK(u->memory_peak_bytes >= u->memory_bytes);
    CHECK(u->pids == 1);
    CHECK(u->cpu_usage_ns > 0);
    CHECK(u->oom_kills == 0);
  }
  auto err = destroy(*cg);
  CHECK_MESSAGE(err.empty(), err);
}

TEST_CASE("agent_cgroup::create refuses an existing agent id and leaves that cgroup and "
          "its process alone (this host's real cgroups)") {
  if (auto why = host_instance::unavailable()) {
    MESSAGE("skipped: " << *why);
    return;
  }
  host_instance host;
  auto first = host.create("taken", {64ull << 20, 16, 100});
  REQUIRE_MESSAGE(first, why(first));
  auto limit_file = first->version() == sb::cgroup_version::v1
                      ? first->memory_dir() + "/memory.limit_in_bytes"
                      : first->memory_dir() + "/memory.max";
  auto limit = slurp(limit_file);
  {
    joined_child child(*first);
    auto second = sb::agent_cgroup::create(*host.inst, "taken", {16ull << 20, 4, 100});
    REQUIRE_FALSE(second);
    CHECK(second.err().sys_errno == EEXIST);
    CHECK(contains(second.err().message, "cannot create cgroup"));
    // Untouched: same limit, same process, alive.
    CHECK(slurp(limit_file) == limit);
    for (const auto& d : first->dirs())
      CHECK_MESSAGE(contains(slurp(d + "/cgroup.procs"), std::to_string(child.pid) + "\n"), d);
    CHECK(::kill(child.pid, 0) == 0);
  }
  auto err = destroy(*first);
  CHECK_MESSAGE(err.empty(), err);
}

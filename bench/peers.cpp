// The peers of agentvisor's benchmarks: bwrap, unshare and crun started
// from a helper process, and an Erlang/OTP supervisor's restart latency.

#include "peers.hpp"

#include "agentvisor/json.hpp"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string_view>

namespace agentvisor::bench {

namespace fs = std::filesystem;

bool reap_ok(pid_t pid) {
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0)
    if (errno != EINTR)
      return false;
  return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

std::string find_in_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string_view p = path ? path : "/usr/local/bin:/usr/bin:/bin";
  // Root's PATH may lack the sbin directories; the tools we look for live
  // in bin, but be lenient.
  std::string all = std::string{p} + ":/usr/sbin:/sbin";
  std::string_view rest = all;
  while (!rest.empty()) {
    auto colon = rest.find(':');
    auto dir = rest.substr(0, colon);
    std::string candidate = std::string{dir.empty() ? "." : dir} + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0)
      return candidate;
    if (colon == std::string_view::npos)
      break;
    rest.remove_prefix(colon + 1);
  }
  return {};
}

namespace {

/// posix_spawn of args with stdin and stdout on /dev/null and stderr on
/// `err_path` (or /dev/null); -1 on failure.
pid_t spawn_quiet(const std::string& path, const std::vector<std::string>& args,
                  const std::string& err_path = {}, int stdout_fd = -1) {
  std::vector<char*> argv;
  for (const auto& a : args)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  if (stdout_fd >= 0)
    posix_spawn_file_actions_adddup2(&fa, stdout_fd, 1);
  else
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  if (err_path.empty())
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  else
    posix_spawn_file_actions_addopen(&fa, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, path.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  return rc == 0 ? pid : -1;
}

std::string read_text(const std::string& path, size_t max = 300) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  auto s = ss.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == ' '))
    s.pop_back();
  if (s.size() > max)
    s = s.substr(0, max) + "...";
  return s;
}

using clock_type = std::chrono::steady_clock;

double ms_since(clock_type::time_point t0) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

} // namespace

bool spawn_and_wait(const std::string& path, const std::vector<std::string>& args) {
  pid_t pid = spawn_quiet(path, args);
  return pid > 0 && reap_ok(pid);
}

namespace {

// --- the helper's side ------------------------------------------------------

enum op : int32_t { op_probe = 0, op_once = 1, op_concurrent = 2 };

struct wire_command {
  int32_t op = 0;
  int32_t peer = 0;
  int32_t n = 0;
};

struct wire_reply {
  int32_t ok = 0;
  double ms = 0;
  char text[1024] = {};
};

bool read_full(int fd, void* buf, size_t len) {
  auto* p = static_cast<char*>(buf);
  while (len > 0) {
    auto n = ::read(fd, p, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return false;
    p += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

bool write_full(int fd, const void* buf, size_t len) {
  auto* p = static_cast<const char*>(buf);
  while (len > 0) {
    auto n = ::write(fd, p, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return false;
    p += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

void set_text(wire_reply& r, const std::string& s) {
  std::snprintf(r.text, sizeof r.text, "%s", s.c_str());
}

/// A peer inside the helper: how to build the argv of run number `seq`.
struct helper_peer {
  std::string name;
  std::string path;
  std::string reason; ///< non-empty: unavailable
  std::string shown;  ///< the command for the report
  std::vector<std::string> (*argv)(const helper_peer&, const std::string& dir, long seq) = nullptr;
};

std::vector<std::string> bwrap_argv(const helper_peer&, const std::string&, long) {
  return {"bwrap", "--unshare-all", "--ro-bind", "/", "/", "/bin/true"};
}

// The namespaces a sandbox gets (user aside: as root, a sandbox has none).
std::vector<std::string> unshare_argv(const helper_peer&, const std::string&, long) {
  return {"unshare", "--user", "--pid", "--net", "--mount", "--ipc", "--uts", "--fork", "/bin/true"};
}

std::vector<std::string> crun_argv(const helper_peer&, const std::string& dir, long seq) {
  return {"crun", "--root", dir + "/state", "run", "--bundle", dir + "/bundle",
          "avbench-" + std::to_string(::getpid()) + "-" + std::to_string(seq)};
}

/// An OCI bundle that runs /bin/true: a read-only root of empty
/// directories, the host's /usr bound read-only (Debian 12 is usr-merged:
/// /bin, /lib and /lib64 are links into it), /proc and a /dev tmpfs, in new
/// PID, network, IPC, UTS and mount namespaces, with no capabilities.
std::string write_crun_bundle(const std::string& dir) {
  auto root = fs::path(dir) / "bundle" / "rootfs";
  std::error_code ec;
  for (const char* d : {"usr", "proc", "dev", "tmp", "etc"})
    fs::create_directories(root / d, ec);
  for (const char* l : {"bin", "sbin", "lib", "lib64"}) {
    fs::create_symlink(std::string{"usr/"} + l, root / l, ec);
  }
  fs::create_directories(fs::path(dir) / "state", ec);
  if (ec)
    return "cannot create the crun bundle in " + dir + ": " + ec.message();
  std::string s;
  json::writer w{s};
  w.begin_object().field("ociVersion", "1.0.2");
  w.key("process").begin_object()
    .field("terminal", false)
    .key("user").begin_object().field("uid", 0).field("gid", 0).end_object()
    .key("args").begin_array().value("/bin/true").end_array()
    .key("env").begin_array().value("PATH=/usr/bin:/bin").end_array()
    .field("cwd", "/")
    .field("noNewPrivileges", true)
    .end_object();
  w.key("root").begin_object().field("path", "rootfs").field("readonly", true).end_object();
  w.field("hostname", "crun-bench");
  w.key("mounts").begin_array();
  auto mount = [&](const char* dest, const char* type, const char* source,
                   std::initializer_list<const char*> opts) {
    w.begin_object().field("destination", dest).field("type", type).field("source", source);
    w.key("options").begin_array();
    for (auto o : opts)
      w.value(o);
    w.end_array().end_object();
  };
  mount("/proc", "proc", "proc", {});
  mount("/dev", "tmpfs", "tmpfs", {"nosuid", "strictatime", "mode=755", "size=65536k"});
  mount("/usr", "bind", "/usr", {"rbind", "ro"});
  w.end_array();
  w.key("linux").begin_object().key("namespaces").begin_array();
  for (const char* ns : {"pid", "network", "ipc", "uts", "mount"})
    w.begin_object().field("type", ns).end_object();
  w.end_array().end_object();
  w.end_object();
  std::ofstream f(fs::path(dir) / "bundle" / "config.json");
  if (!(f << s << '\n'))
    return "cannot write " + dir + "/bundle/config.json";
  return {};
}

/// Hides the cgroup2 mount of a hybrid host (v1 controllers beside a
/// cgroup2 mount) in this process's new mount namespace: crun 1.8 refuses
/// to run on such a host. Returns what it did, for the report.
std::string private_mounts_for_crun() {
  if (::unshare(CLONE_NEWNS) != 0)
    return std::string{"unshare(CLONE_NEWNS): "} + std::strerror(errno);
  if (::mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
    return std::string{"mount --make-rprivate /: "} + std::strerror(errno);
  std::ifstream in("/proc/self/mounts");
  std::string dev, dir, type, rest;
  bool v1 = false;
  std::vector<std::string> v2;
  while (in >> dev >> dir >> type && std::getline(in, rest)) {
    if (type == "cgroup")
      v1 = true;
    else if (type == "cgroup2")
      v2.push_back(dir);
  }
  std::string note;
  if (v1)
    for (const auto& d : v2)
      if (::umount2(d.c_str(), MNT_DETACH) == 0)
        note += (note.empty() ? "" : ", ") + d;
  return note.empty() ? std::string{} : "cgroup2 mount hidden: " + note;
}

[[noreturn]] void helper_main(int in, int out, const std::string& dir) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  std::string mounts_note = private_mounts_for_crun();
  std::string bundle_error = write_crun_bundle(dir);
  std::vector<helper_peer> peers{
    {"bwrap", find_in_path("bwrap"), {}, {}, bwrap_argv},
    {"unshare", find_in_path("unshare"), {}, {}, unshare_argv},
    {"crun", find_in_path("crun"), {}, {}, crun_argv},
  };
  const char* packages[] = {"bubblewrap", "util-linux", "crun"};
  long seq = 0;
  for (size_t i = 0; i < peers.size(); ++i) {
    auto& p = peers[i];
    if (p.path.empty()) {
      p.reason = p.name + " not found in PATH (Debian package " + packages[i] + ")";
      continue;
    }
    if (p.name == "crun" && !bundle_error.empty()) {
      p.reason = bundle_error;
      continue;
    }
    auto args = p.argv(p, dir, seq++);
    std::string shown;
    for (const auto& a : args)
      shown += (shown.empty() ? "" : " ") + a;
    p.shown = shown;
    if (p.name == "crun")
      p.shown += " (bundle: read-only root, /usr bound read-only, /proc, /dev tmpfs; pid, "
                 "network, ipc, uts, mount namespaces" + (mounts_note.empty() ? "" : "; " + mounts_note) + ")";
    auto err = dir + "/probe.err";
    pid_t pid = spawn_quiet(p.path, args, err);
    if (pid < 0 || !reap_ok(pid)) {
      auto text = read_text(err);
      p.reason = p.path + " did not run /bin/true" + (text.empty() ? "" : ": " + text);
    }
  }
  wire_command c;
  while (read_full(in, &c, sizeof c)) {
    if (c.op == op_probe) {
      for (const auto& p : peers) {
        wire_reply r;
        r.ok = p.reason.empty() ? 1 : 0;
        set_text(r, p.reason.empty() ? p.name + "\t" + p.shown : p.name + "\t" + p.reason);
        write_full(out, &r, sizeof r);
      }
      continue;
    }
    wire_reply r;
    if (c.peer < 0 || static_cast<size_t>(c.peer) >= peers.size() || !peers[c.peer].reason.empty()) {
      set_text(r, "no such peer");
      write_full(out, &r, sizeof r);
      continue;
    }
    auto& p = peers[static_cast<size_t>(c.peer)];
    int n = c.op == op_concurrent ? c.n : 1;
    std::vector<pid_t> pids;
    pids.reserve(static_cast<size_t>(n));
    auto t0 = clock_type::now();
    bool ok = true;
    for (int k = 0; k < n; ++k) {
      pid_t pid = spawn_quiet(p.path, p.argv(p, dir, seq++));
      if (pid < 0) {
        ok = false;
        break;
      }
      pids.push_back(pid);
    }
    for (pid_t pid : pids)
      ok = reap_ok(pid) && ok;
    r.ms = ms_since(t0);
    r.ok = ok ? 1 : 0;
    if (!ok)
      set_text(r, p.name + ": a run did not exit 0 (" + std::to_string(n) + " at once)");
    write_full(out, &r, sizeof r);
  }
  ::_exit(0);
}

} // namespace

std::unique_ptr<peer_runner> peer_runner::start() {
  char tmpl[] = "/tmp/agentvisor-bench-peers-XXXXXX";
  if (!::mkdtemp(tmpl))
    throw std::runtime_error(std::string{"peers: mkdtemp: "} + std::strerror(errno));
  std::unique_ptr<peer_runner> r{new peer_runner};
  r->dir_ = tmpl;
  int down[2], up[2];
  if (::pipe2(down, O_CLOEXEC) != 0 || ::pipe2(up, O_CLOEXEC) != 0)
    throw std::runtime_error(std::string{"peers: pipe: "} + std::strerror(errno));
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0)
    throw std::runtime_error(std::string{"peers: fork: "} + std::strerror(errno));
  if (pid == 0) {
    ::close(down[1]);
    ::close(up[0]);
    helper_main(down[0], up[1], r->dir_);
  }
  ::close(down[0]);
  ::close(up[1]);
  r->pid_ = pid;
  r->to_ = down[1];
  r->from_ = up[0];
  wire_command c{op_probe, 0, 0};
  if (!write_full(r->to_, &c, sizeof c))
    throw std::runtime_error("peers: the helper process is gone");
  for (int i = 0; i < 3; ++i) {
    wire_reply rep;
    if (!read_full(r->from_, &rep, sizeof rep))
      throw std::runtime_error("peers: the helper process ended while probing");
    std::string text = rep.text;
    auto tab = text.find('\t');
    peer_info p;
    p.name = text.substr(0, tab);
    p.available = rep.ok != 0;
    (p.available ? p.command : p.reason) = tab == std::string::npos ? "" : text.substr(tab + 1);
    r->peers_.push_back(std::move(p));
  }
  return r;
}

peer_runner::~peer_runner() {
  if (to_ >= 0)
    ::close(to_); // the helper ends on EOF
  if (from_ >= 0)
    ::close(from_);
  if (pid_ > 0)
    (void) reap_ok(pid_);
  std::error_code ec;
  if (!dir_.empty())
    fs::remove_all(dir_, ec);
}

double peer_runner::request(int op, size_t i, int n) {
  wire_command c{op, static_cast<int32_t>(i), n};
  wire_reply r;
  if (!write_full(to_, &c, sizeof c) || !read_full(from_, &r, sizeof r))
    throw std::runtime_error("peers: the helper process is gone");
  if (!r.ok)
    throw std::runtime_error("peer " + peers_.at(i).name + " failed: " + r.text);
  return r.ms;
}

double peer_runner::run_once(size_t i) {
  return request(op_once, i, 1);
}

double peer_runner::run_concurrent(size_t i, int n) {
  return request(op_concurrent, i, n);
}

// --- Erlang/OTP ---------------------------------------------------------------

namespace {

// One supervisor (one_for_one, permanent worker registered as `child`).
// Each sample: exit(Child, kill) -> a new `child` answers a ping, in ns on
// the VM's monotonic clock. The logger is silenced: every kill would print
// a supervisor report.
constexpr const char* otp_script = R"ERL(%% agentvisor bench: Erlang/OTP restart latency
-module(otp_restart).
-behaviour(supervisor).
-mode(compile).
-export([main/1, init/1, start_child/0, child_init/0]).

main([Warm, N]) ->
    logger:set_primary_config(level, none),
    {ok, Sup} = supervisor:start_link({local, bench_sup}, ?MODULE, sup),
    _ = [restart_once() || _ <- lists:seq(1, list_to_integer(Warm))],
    Samples = [restart_once() || _ <- lists:seq(1, list_to_integer(N))],
    io:format("~w~n", [Samples]),
    unlink(Sup),
    exit(Sup, shutdown).

init(sup) ->
    {ok, {#{strategy => one_for_one, intensity => 1000000, period => 1},
          [#{id => child, start => {?MODULE, start_child, []}, restart => permanent}]}}.

start_child() -> proc_lib:start_link(?MODULE, child_init, []).

child_init() ->
    register(child, self()),
    proc_lib:init_ack({ok, self()}),
    loop().

loop() -> receive {ping, From} -> From ! {pong, self()}, loop() end.

restart_once() ->
    Old = whereis(child),
    T0 = erlang:monotonic_time(nanosecond),
    exit(Old, kill),
    wait_answer(Old),
    erlang:monotonic_time(nanosecond) - T0.

wait_answer(Old) ->
    case whereis(child) of
        P when is_pid(P), P =/= Old -> P ! {ping, self()}, receive {pong, P} -> ok end;
        _ -> erlang:yield(), wait_answer(Old)
    end.
)ERL";

} // namespace

otp_restart measure_otp_restart(int warmup, int n) {
  otp_restart r;
  auto escript = find_in_path("escript");
  if (escript.empty()) {
    r.reason = "escript not found in PATH (Debian package erlang-base)";
    return r;
  }
  char tmpl[] = "/tmp/agentvisor-bench-otp-XXXXXX";
  if (!::mkdtemp(tmpl)) {
    r.reason = std::string{"mkdtemp: "} + std::strerror(errno);
    return r;
  }
  std::string dir = tmpl;
  auto script = dir + "/otp_restart.escript";
  auto out_path = dir + "/out.txt";
  auto err_path = dir + "/err.txt";
  {
    std::ofstream f(script);
    f << otp_script;
  }
  r.command = escript + " otp_restart.escript " + std::to_string(warmup) + " " + std::to_string(n)
              + " (supervisor one_for_one, a permanent proc_lib worker; exit(Child, kill) -> "
                "the restarted child answers a message)";
  int out_fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  pid_t pid = out_fd < 0 ? -1
                         : spawn_quiet(escript, {"escript", script, std::to_string(warmup),
                                                 std::to_string(n)},
                                       err_path, out_fd);
  if (out_fd >= 0)
    ::close(out_fd);
  bool ok = pid > 0 && reap_ok(pid);
  auto text = read_text(out_path, 1 << 20);
  if (!ok) {
    auto err = read_text(err_path);
    r.reason = escript + " failed" + (err.empty() ? "" : ": " + err);
  } else {
    // "[123,456,...]"
    for (char& ch : text)
      if (ch == '[' || ch == ']' || ch == ',')
        ch = ' ';
    std::istringstream in(text);
    double ns = 0;
    while (in >> ns)
      r.samples_ms.push_back(ns / 1e6);
    if (static_cast<int>(r.samples_ms.size()) != n)
      r.reason = "escript printed " + std::to_string(r.samples_ms.size()) + " samples, expected "
                 + std::to_string(n);
    else
      r.available = true;
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
  return r;
}

} // namespace agentvisor::bench

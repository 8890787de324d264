// agentvisor-bench-spawn: how long a sandbox takes from nothing to a guest
// that says `ready`, and how long each guest tool takes to answer, measured
// on the real parts (template process, cgroups, workspace mounts, guest
// protocol) through the synchronous driver of tests/sandbox/harness.hpp.
// Peers measured in the same run give the targets their scale: bwrap, a bare
// fork, and fork + exec. Writes one JSON document (docs/performance.md).

#include "harness.hpp"
#include "peers.hpp"
#include "report.hpp"

#include "agentvisor/guest_protocol.hpp"
#include "agentvisor/json.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace sb = agentvisor::sandbox;
using namespace agentvisor::bench;
namespace guest = agentvisor::guest;
namespace json = agentvisor::json;
using harness::sandbox_host;

constexpr const char* usage =
  "usage: agentvisor-bench-spawn [options]   (run as root)\n"
  "  --spawns N              cold spawns to guest-ready (default 1000)\n"
  "  --tool-iterations N     round trips per file tool (default 2000)\n"
  "  --command-iterations N  execute_command round trips (default: the\n"
  "                          smaller of 200 and --tool-iterations)\n"
  "  --peer-runs N           runs of each peer: bwrap, fork, fork+exec\n"
  "                          (default 200)\n"
  "  --netns-pool N          the template's pool of ready network\n"
  "                          namespaces, 0 for none (default 4): compares\n"
  "                          the two spawn paths\n"
  "  --out FILE              write the JSON there (default stdout)\n"
  "  --quiet                 no progress line on stderr\n"
  "  --help                  print this and exit\n";

/// Spawns and peer runs made before measuring, so that the first samples do
/// not pay for cold page caches and first-touch allocations. Reported.
constexpr int warmup_spawns = 10;
constexpr int warmup_peer_runs = 5;
constexpr int warmup_tool_rounds = 20;

/// The issue's targets.
constexpr double spawn_ratio_target = 0.5; ///< cold spawn p50 <= 0.5 * bwrap p50
constexpr double tool_target_us = 50.0;    ///< every tool round trip p50 < 50 us

struct options {
  int spawns = 1000;
  int tool_iterations = 2000;
  int command_iterations = -1; ///< -1: min(200, tool_iterations)
  int peer_runs = 200;
  int netns_pool = 4;
  std::string out;
  bool quiet = false;
};

volatile std::sig_atomic_t g_stop = 0;

void on_stop_signal(int) {
  g_stop = 1;
}

void check_stop() {
  if (g_stop)
    throw std::runtime_error("interrupted");
}

// --- peers ------------------------------------------------------------------------

/// One peer: a way to start a process and wait for it, timed.
struct peer {
  std::string name;
  std::string command; ///< what it runs, for the report
  bool available = true;
  std::string reason;  ///< why not available
  std::function<bool()> run;
  std::vector<double> samples_ms;

  void measure() {
    auto t0 = clock_type::now();
    bool ok = run();
    auto t1 = clock_type::now();
    if (!ok)
      throw std::runtime_error("peer " + name + " (" + command + ") failed");
    samples_ms.push_back(ms_between(t0, t1));
  }
};

std::vector<peer> make_peers() {
  std::vector<peer> peers;
  peer bwrap{"bwrap", "bwrap --unshare-all --ro-bind / / /bin/true", true, {}, {}, {}};
  auto bwrap_path = find_in_path("bwrap");
  std::vector<std::string> bwrap_args{"bwrap", "--unshare-all", "--ro-bind", "/", "/", "/bin/true"};
  if (bwrap_path.empty()) {
    bwrap.available = false;
    bwrap.reason = "bwrap not found in PATH (Debian package bubblewrap)";
  } else if (!spawn_and_wait(bwrap_path, bwrap_args)) {
    bwrap.available = false;
    bwrap.reason = bwrap_path + " did not run /bin/true successfully";
  } else {
    bwrap.command = bwrap_path + " --unshare-all --ro-bind / / /bin/true";
    bwrap.run = [bwrap_path, bwrap_args] { return spawn_and_wait(bwrap_path, bwrap_args); };
  }
  peers.push_back(std::move(bwrap));
  peers.push_back({"fork_exit", "fork() + _exit(0) + waitpid", true, {}, [] {
                     pid_t pid = ::fork();
                     if (pid == 0)
                       ::_exit(0);
                     return pid > 0 && reap_ok(pid);
                   }, {}});
  peers.push_back({"fork_exec_true", "fork() + execv(/bin/true) + waitpid", true, {}, [] {
                     pid_t pid = ::fork();
                     if (pid == 0) {
                       char* argv[] = {const_cast<char*>("/bin/true"), nullptr};
                       ::execv("/bin/true", argv);
                       ::_exit(127);
                     }
                     return pid > 0 && reap_ok(pid);
                   }, {}});
  return peers;
}

// --- cold spawns --------------------------------------------------------------------

struct spawn_samples {
  std::vector<double> total, host_prep, template_setup, guest_start, teardown;
  int teardown_kills = 0; ///< guests that did not exit on shutdown in 5 s
};

/// Stops an agent the way a supervisor does: `shutdown`, wait for the exit,
/// SIGKILL if it does not come, reap, remove the cgroup. Returns false when
/// the guest had to be killed.
bool teardown(harness::agent& a) {
  bool graceful = true;
  try {
    a.send(guest::encode(guest::shutdown{}));
  } catch (const std::runtime_error&) {
    graceful = false;
  }
  if (graceful && !a.wait_exit(std::chrono::seconds(5)))
    graceful = false;
  if (graceful && a.exit_code != 0)
    throw std::runtime_error("agent " + a.id + " exited with " + std::to_string(a.exit_code)
                             + " after shutdown");
  auto err = sandbox_host::destroy(a);
  if (!err.empty())
    throw std::runtime_error("agent " + a.id + ": cgroup not removed: " + err);
  return graceful;
}

/// Owns an agent until torn down, so an exception leaves nothing behind.
struct agent_guard {
  std::unique_ptr<harness::agent> a;
  ~agent_guard() {
    if (a)
      (void) sandbox_host::destroy(*a);
  }
};

/// One cold spawn, start to `ready`, then its teardown (timed apart).
void one_spawn(sandbox_host& host, const std::string& id, spawn_samples* out) {
  sandbox_host::spawn_timing t;
  agent_guard g{host.spawn(id, {}, &t)};
  if (!sandbox_host::handshake(*g.a))
    throw std::runtime_error("agent " + id + " sent no hello/ready");
  auto ready = clock_type::now();
  auto down0 = clock_type::now();
  bool graceful = teardown(*g.a);
  auto down1 = clock_type::now();
  g.a.reset();
  if (!out)
    return;
  out->total.push_back(ms_between(t.start, ready));
  out->host_prep.push_back(ms_between(t.start, t.prepared));
  out->template_setup.push_back(ms_between(t.sent, t.replied));
  out->guest_start.push_back(ms_between(t.replied, ready));
  out->teardown.push_back(ms_between(down0, down1));
  if (!graceful)
    ++out->teardown_kills;
}

/// Cold spawns with the peers interleaved: after spawn i, each peer runs
/// until it has done its share (i+1) * peer_runs / spawns, so spawns and
/// peers see the same machine over the same minutes.
spawn_samples run_spawns(sandbox_host& host, std::vector<peer>& peers, const options& o,
                         progress& prog) {
  for (int i = 0; i < warmup_spawns; ++i) {
    check_stop();
    one_spawn(host, "warm-" + std::to_string(i), nullptr);
  }
  for (auto& p : peers)
    if (p.available)
      for (int i = 0; i < warmup_peer_runs; ++i)
        (void) p.run();
  spawn_samples s;
  for (int i = 0; i < o.spawns; ++i) {
    check_stop();
    char id[32];
    std::snprintf(id, sizeof id, "spawn-%06d", i);
    one_spawn(host, id, &s);
    auto due = static_cast<size_t>((static_cast<int64_t>(i) + 1) * o.peer_runs / o.spawns);
    for (auto& p : peers)
      while (p.available && p.samples_ms.size() < due)
        p.measure();
    prog.update("cold spawns (and peers)", i + 1, o.spawns);
  }
  return s;
}

// --- tool round trips ------------------------------------------------------------

/// What the tools work on, written into the agent's workspace first.
struct tool_fixture {
  static constexpr int tree_dirs = 4;
  static constexpr int files_per_dir = 8;
  static constexpr int lines_per_file = 20;
  static constexpr size_t small_file_bytes = 512;
  static constexpr size_t write_bytes = 64;
};

struct tool_case {
  std::string name;
  std::string args;
  std::vector<double> samples_us;
};

std::string write_args(const std::string& path, const std::string& content) {
  std::string s;
  json::writer w{s};
  w.begin_object().field("path", path).field("content", content).end_object();
  return s;
}

guest::call_result checked_call(harness::agent& a, const std::string& tool, const std::string& args) {
  auto r = a.call(tool, args);
  if (!r.ok)
    throw std::runtime_error(tool + " " + args + " failed: " + r.error.message);
  return r;
}

void prepare_fixture(harness::agent& a) {
  std::string small;
  while (small.size() < tool_fixture::small_file_bytes)
    small += "the quick brown fox jumps over the lazy dog " + std::to_string(small.size()) + "\n";
  small.resize(tool_fixture::small_file_bytes);
  checked_call(a, "write_file", write_args("bench/small.txt", small));
  for (int d = 0; d < tool_fixture::tree_dirs; ++d)
    for (int f = 0; f < tool_fixture::files_per_dir; ++f) {
      std::string body;
      for (int l = 0; l < tool_fixture::lines_per_file; ++l)
        body += (l == f % tool_fixture::lines_per_file ? "int needle_" : "int value_")
                + std::to_string(d) + "_" + std::to_string(f) + "_" + std::to_string(l) + " = 0;\n";
      checked_call(a, "write_file",
                   write_args("tree/d" + std::to_string(d) + "/f" + std::to_string(f) + ".c", body));
    }
}

/// Checks once that each call does what it is timed for.
void verify_fixture(harness::agent& a, const std::vector<tool_case>& cases) {
  auto contains = [](const std::string& s, std::string_view x) { return s.find(x) != std::string::npos; };
  for (const auto& c : cases) {
    auto r = checked_call(a, c.name, c.args);
    bool good = true;
    if (c.name == "read_file")
      good = contains(r.result_json, "\"size\":512") && contains(r.result_json, "quick brown fox");
    else if (c.name == "search")
      good = contains(r.result_json, "needle_3_7_7") && contains(r.result_json, "\"truncated\":false");
    else if (c.name == "list_directory")
      good = contains(r.result_json, "f7.c");
    else if (c.name == "write_file")
      good = contains(r.result_json, "\"bytes_written\":64");
    else if (c.name == "execute_command")
      good = contains(r.result_json, "\"exit_code\":0");
    if (!good)
      throw std::runtime_error(c.name + " returned an unexpected result: " + r.result_json.substr(0, 300));
  }
}

/// Round trips on one long-lived agent: each round calls every file tool
/// once, and execute_command in command_iterations of the rounds.
std::vector<tool_case> run_tools(sandbox_host& host, const options& o, progress& prog) {
  agent_guard g{host.spawn("tools", {})};
  if (!sandbox_host::handshake(*g.a))
    throw std::runtime_error("tool agent sent no hello/ready");
  auto& a = *g.a;
  prepare_fixture(a);
  std::vector<tool_case> cases{
    {"read_file", R"({"path":"bench/small.txt"})", {}},
    {"write_file", write_args("bench/out.txt", std::string(tool_fixture::write_bytes, 'x')), {}},
    {"search", R"({"pattern":"needle","path":"tree"})", {}},
    {"list_directory", R"({"path":"tree/d0"})", {}},
    {"execute_command", R"({"argv":["/bin/true"]})", {}},
  };
  verify_fixture(a, cases);
  const int commands = o.command_iterations;
  const int rounds = std::max(o.tool_iterations, commands);
  for (int i = -warmup_tool_rounds; i < rounds; ++i) {
    check_stop();
    // The command's share is spread evenly over the rounds.
    bool command_due = static_cast<int64_t>(i + 1) * commands / rounds
                       > static_cast<int64_t>(i) * commands / rounds;
    for (auto& c : cases) {
      bool runs = c.name == "execute_command" ? i < 0 || command_due : i < o.tool_iterations;
      if (!runs)
        continue;
      auto t0 = clock_type::now();
      auto r = a.call(c.name, c.args);
      auto t1 = clock_type::now();
      if (!r.ok)
        throw std::runtime_error(c.name + " failed: " + r.error.message);
      if (i >= 0)
        c.samples_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    }
    if (i >= 0)
      prog.update("tool round trips", i + 1, rounds);
  }
  if (!teardown(a))
    throw std::runtime_error("tool agent did not exit on shutdown");
  g.a.reset();
  return cases;
}

std::string report(const options& o, const sb::cgroup_layout& layout, const std::string& started,
                   const cpu_sample& cpu_start, const spawn_samples& sp,
                   const std::vector<peer>& peers, const std::vector<tool_case>& tools,
                   double wall_s) {
  auto cold = summarize(sp.total);
  const peer* bwrap = nullptr;
  for (const auto& p : peers)
    if (p.name == "bwrap")
      bwrap = &p;
  std::optional<double> bwrap_p50;
  if (bwrap && bwrap->available)
    bwrap_p50 = summarize(bwrap->samples_ms).p50;

  // Pass or fail is judged on the figures as written (rounded), so that a
  // reader comparing value and target always agrees with it.
  std::vector<metric> metrics;
  {
    metric m{"cold_spawn_p50", round_to(cold.p50, 3), "ms", {}, "<= 0.5 * bwrap_p50", {}};
    if (bwrap_p50) {
      m.target = round_to(spawn_ratio_target * *bwrap_p50, 3);
      m.pass = m.value <= *m.target;
    } else {
      m.target_expr += " (bwrap unavailable: no target)";
    }
    metrics.push_back(m);
    metrics.push_back({"cold_spawn_p99", round_to(cold.p99, 3), "ms", {}, "none (reported)", {}});
  }
  for (const auto& t : tools) {
    auto s = summarize(t.samples_us);
    double value = round_to(s.p50, 1);
    metrics.push_back({"tool_" + t.name + "_p50", value, "us", tool_target_us, "< 50 us",
                       value < tool_target_us});
  }

  std::string out;
  json::writer w{out};
  w.begin_object()
    .field("benchmark", "spawn")
    .field("timestamp", started)
    .field("wall_seconds", round_to(wall_s, 1));
  write_machine(w, layout.version == sb::cgroup_version::v2 ? "v2" : "v1", cpu_start, sample_cpu(), wall_s);
  w.field("backend", "sandbox")
    .key("config").begin_object()
    .field("spawns", o.spawns)
    .field("warmup_spawns", warmup_spawns)
    .field("tool_iterations", o.tool_iterations)
    .field("command_iterations", o.command_iterations)
    .field("warmup_tool_rounds", warmup_tool_rounds)
    .field("peer_runs", o.peer_runs)
    .field("warmup_peer_runs", warmup_peer_runs)
    .key("template").begin_object()
    .field("netns_pool", o.netns_pool)
    .end_object()
    .field("percentiles", "nearest rank")
    .field("clock", "steady_clock (CLOCK_MONOTONIC)")
    .end_object();
  write_metrics(w, metrics);

  w.key("cold_spawn").begin_object()
    .field("unit", "ms")
    .field("measured", "before the agent cgroup is created -> the guest's ready line is read");
  write_stats(w, cold, 3);
  w.key("p50_over_bwrap_p50");
  if (bwrap_p50)
    w.value(round_to(cold.p50 / *bwrap_p50, 3));
  else
    w.value(nullptr);
  w.key("breakdown").begin_object();
  auto part = [&](const char* name, const char* what, const std::vector<double>& v) {
    auto s = summarize(v);
    w.key(name).begin_object().field("what", what)
      .field("p50", round_to(s.p50, 3)).field("p99", round_to(s.p99, 3))
      .field("mean", round_to(s.mean, 3)).end_object();
  };
  part("host_prep", "cgroup + OOM fd + workspace mount + socketpair + request", sp.host_prep);
  part("template_clone_setup", "request sent -> template's reply (clone3, namespaces, mounts, "
       "pivot_root, seccomp)", sp.template_setup);
  part("guest_start", "template's reply -> guest's ready line (hello, workspace check, ready)",
       sp.guest_start);
  w.end_object().end_object();

  w.key("teardown").begin_object()
    .field("unit", "ms")
    .field("method", "shutdown line -> exit reaped through the pidfd -> cgroup removed")
    .field("killed", sp.teardown_kills);
  write_stats(w, summarize(sp.teardown), 3);
  w.end_object();

  w.key("peers").begin_object();
  for (const auto& p : peers) {
    w.key(p.name).begin_object().field("available", p.available).field("command", p.command);
    if (p.available) {
      w.field("unit", "ms");
      write_stats(w, summarize(p.samples_ms), 3);
    } else {
      w.field("reason", p.reason);
    }
    w.end_object();
  }
  w.end_object();

  w.key("tools").begin_object()
    .field("unit", "us")
    .field("measured", "call line encoded and written -> its result line read and decoded, "
           "on one long-lived agent")
    .key("fixture").begin_object()
    .field("read_file", "bench/small.txt, 512 bytes")
    .field("write_file", "bench/out.txt, 64 bytes, overwritten")
    .field("search", "substring \"needle\" over tree/: 4 dirs x 8 files x 20 lines")
    .field("list_directory", "tree/d0: 8 files")
    .field("execute_command", "/bin/true")
    .end_object();
  for (const auto& t : tools) {
    w.key(t.name).begin_object().field("args", t.args);
    write_stats(w, summarize(t.samples_us), 1);
    w.end_object();
  }
  w.end_object();
  w.end_object();
  out += '\n';
  return out;
}

// --- command line -------------------------------------------------------------------

int usage_error(const std::string& what) {
  std::fprintf(stderr, "agentvisor-bench-spawn: %s (see --help)\n", what.c_str());
  return 2;
}

/// Parses the command line; returns an exit code when the program should
/// stop (help: 0, bad usage: 2).
std::optional<int> parse(int argc, char** argv, options& o) {
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    std::string_view value;
    bool has_value = false;
    if (auto eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_value = true;
    }
    auto take = [&]() {
      if (!has_value && i + 1 < argc) {
        value = argv[++i];
        has_value = true;
      }
      return has_value;
    };
    auto number = [&](int& out, int min = 1) {
      if (!take())
        return false;
      auto r = std::from_chars(value.data(), value.data() + value.size(), out);
      return r.ec == std::errc{} && r.ptr == value.data() + value.size() && out >= min;
    };
    if (arg == "--help" || arg == "-h") {
      std::fputs(usage, stdout);
      return 0;
    } else if (arg == "--quiet") {
      o.quiet = true;
    } else if (arg == "--spawns") {
      if (!number(o.spawns))
        return usage_error("--spawns: expected a positive integer");
    } else if (arg == "--tool-iterations") {
      if (!number(o.tool_iterations))
        return usage_error("--tool-iterations: expected a positive integer");
    } else if (arg == "--command-iterations") {
      if (!number(o.command_iterations))
        return usage_error("--command-iterations: expected a positive integer");
    } else if (arg == "--peer-runs") {
      if (!number(o.peer_runs))
        return usage_error("--peer-runs: expected a positive integer");
    } else if (arg == "--netns-pool") {
      if (!number(o.netns_pool, 0) || o.netns_pool > 64)
        return usage_error("--netns-pool: expected an integer from 0 to 64");
    } else if (arg == "--out") {
      if (!take() || value.empty())
        return usage_error("--out: expected a file name");
      o.out = value;
    } else {
      return usage_error("unknown option \"" + std::string{argv[i]} + "\"");
    }
  }
  if (o.command_iterations < 0)
    o.command_iterations = std::min(200, o.tool_iterations);
  return std::nullopt;
}

} // namespace

int main(int argc, char** argv) {
  options o;
  if (auto rc = parse(argc, argv, o))
    return *rc;
  if (::geteuid() != 0) {
    std::fputs("agentvisor-bench-spawn: must run as root (it creates cgroups, mounts and "
               "namespaces); skipping\n", stderr);
    return 77;
  }
  if (auto why = sandbox_host::unavailable_reason()) {
    std::fprintf(stderr, "agentvisor-bench-spawn: sandboxes are unavailable here: %s; skipping\n",
                 why->c_str());
    return 77;
  }
  struct sigaction sa{};
  sa.sa_handler = on_stop_signal; // no SA_RESTART: waits return EINTR and look at g_stop
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  auto layout = sb::detect_cgroups();
  auto started = iso8601_utc_now();
  auto cpu_start = sample_cpu();
  auto t0 = clock_type::now();
  std::string text;
  try {
    progress prog{o.quiet};
    std::vector<std::string> template_args{"--netns-pool", std::to_string(o.netns_pool)};
    sandbox_host host{GUEST_PATH, "bench-spawn-" + std::to_string(::getpid()), template_args};
    auto peers = make_peers();
    auto spawns = run_spawns(host, peers, o, prog);
    auto tools = run_tools(host, o, prog);
    prog.clear();
    text = report(o, *layout, started, cpu_start, spawns, peers, tools,
                  ms_between(t0, clock_type::now()) / 1000.0);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\nagentvisor-bench-spawn: %s\n", e.what());
    return g_stop ? 130 : 1;
  }
  if (!write_output(o.out, text)) {
    std::fprintf(stderr, "agentvisor-bench-spawn: cannot write %s: %s\n",
                 o.out.empty() ? "stdout" : o.out.c_str(), std::strerror(errno));
    return 1;
  }
  return 0;
}

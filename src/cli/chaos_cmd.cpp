// `agentvisor chaos run SCENARIO.json [--seed N] [--report DIR]`: a
// supervisor tree in this process (tree.hpp) configured by the scenario, the
// chaos runner against it, then what only the outside can see (/healthz
// before the shutdown; processes, cgroups, fds and mounts after it), the
// invariants and the report. Exit 0 only when every invariant holds.
//
// With --api URL --token-file F the same runner drives a supervisor in
// another process through the HTTP transport (actors/chaos_remote); see
// run_chaos_remote below and docs/chaos.md, "Remote runs".

#include "commands.hpp"
#include "tree.hpp"

#include "agentvisor/chaos.hpp"
#include "agentvisor/log.hpp"

#include "chaos.hpp"
#include "chaos_remote.hpp"
#include "io/http_client.hpp"

#include "agentvisor/io.hpp"
#include "agentvisor/messages.hpp"

#include <caf/all.hpp>
#include <simdjson.h>
#include <uv.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <future>
#include <random>
#include <thread>

namespace agentvisor::cli {

namespace {

namespace fs = std::filesystem;

/// This process's open fds and what each refers to.
std::map<int, std::string> open_fds() {
  std::map<int, std::string> out;
  std::error_code ec;
  for (auto it = fs::directory_iterator("/proc/self/fd", ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    auto target = fs::read_symlink(it->path(), ec);
    // The listing's own directory fd is not the run's.
    if (!ec && target.filename() == "fd" && target.parent_path().filename() != "self"
        && target.parent_path().parent_path() == "/proc")
      continue;
    out[std::atoi(it->path().filename().c_str())] = ec ? "?" : target.string();
  }
  return out;
}

/// GET /healthz on the in-process API, over a real TCP connection.
bool healthz(const std::string& host, uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return false;
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  bool ok = ::inet_pton(AF_INET, host.c_str(), &a.sin_addr) == 1
            && ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  if (ok) {
    std::string req = "GET /healthz HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n";
    ok = ::write(fd, req.data(), req.size()) == static_cast<ssize_t>(req.size());
  }
  std::string got;
  char buf[512];
  for (ssize_t n; ok && (n = ::read(fd, buf, sizeof buf)) > 0;)
    got.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  return got.rfind("HTTP/1.1 200", 0) == 0;
}

/// The cgroup directories named agentvisor/<instance> on this host.
std::vector<fs::path> instance_cgroups(const std::string& instance) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator("/sys/fs/cgroup", ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it.depth() > 3) {
      it.disable_recursion_pending();
      continue;
    }
    if (it->is_directory(ec) && it->path().filename() == instance
        && it->path().parent_path().filename() == "agentvisor")
      out.push_back(it->path());
  }
  return out;
}

/// What the run left behind: cgroups named after its instance, processes
/// inside them, mounts under its state dir, fds beyond those it started with.
std::vector<std::string> leftovers(const std::string& instance, const std::string& state_dir,
                                   const std::map<int, std::string>& fds_before) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& dir : instance_cgroups(instance))
    out.push_back("cgroup " + dir.string());
  auto marker = "agentvisor/" + instance + "/";
  for (auto it = fs::directory_iterator("/proc", ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    std::ifstream cg(it->path() / "cgroup");
    for (std::string line; std::getline(cg, line);)
      if (line.find(marker) != std::string::npos) {
        out.push_back("process " + it->path().filename().string() + " in " + line);
        break;
      }
  }
  {
    std::ifstream mi("/proc/self/mountinfo");
    for (std::string line; std::getline(mi, line);)
      if (line.find(" " + state_dir) != std::string::npos)
        out.push_back("mount " + line);
  }
  // The listing itself holds one fd while it runs, before and after alike.
  for (const auto& [fd, target] : open_fds())
    if (auto b = fds_before.find(fd); b == fds_before.end() || b->second != target)
      out.push_back("fd " + std::to_string(fd) + " -> " + target);
  return out;
}

bool write_file(const fs::path& p, const std::string& text) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << text;
  return static_cast<bool>(f);
}

/// The invariants, one line each, the report files and the verdict.
int conclude(const chaos::scenario& sc, const chaos::run_log& log, const std::string& report_dir) {
  auto inv = chaos::check(sc, log);
  bool passed = chaos::all_passed(inv);
  for (const auto& i : inv)
    std::printf("%-18s %s  %s\n", i.name.c_str(),
                !i.checked ? "not checked (remote)" : i.passed ? "pass" : "FAIL",
                i.evidence.c_str());
  if (!report_dir.empty()) {
    std::error_code ec;
    fs::create_directories(report_dir, ec);
    auto json_ok = write_file(fs::path(report_dir) / "report.json", chaos::report_json(sc, log, inv));
    auto html_ok = write_file(fs::path(report_dir) / "report.html", chaos::report_html(sc, log, inv));
    if (!json_ok || !html_ok) {
      std::fprintf(stderr, "agentvisor: cannot write the report to %s\n", report_dir.c_str());
      return exit_failure;
    }
    std::printf("report: %s/report.json, %s/report.html\n", report_dir.c_str(), report_dir.c_str());
  }
  if (log.interrupted_by != 0) {
    std::printf("chaos %s: interrupted by signal %d after %.1f s: not a complete run\n",
                sc.name.c_str(), log.interrupted_by, log.elapsed_s);
    return exit_failure;
  }
  std::printf("chaos %s: %s\n", sc.name.c_str(),
              passed ? "every invariant held" : "INVARIANTS VIOLATED");
  return passed ? exit_ok : exit_failure;
}

// --- remote runs ---------------------------------------------------------------------

/// "section.key" -> the JSON text of the value, for every key two levels
/// deep (top-level scalars as "key").
std::map<std::string, std::string> flatten(simdjson::dom::element doc) {
  std::map<std::string, std::string> out;
  simdjson::dom::object top;
  if (doc.get_object().get(top) != simdjson::SUCCESS)
    return out;
  for (auto [k, v] : top) {
    simdjson::dom::object inner;
    if (v.get_object().get(inner) == simdjson::SUCCESS) {
      for (auto [k2, v2] : inner)
        out[std::string{k} + "." + std::string{k2}] = simdjson::minify(v2);
    } else {
      out[std::string{k}] = simdjson::minify(v);
    }
  }
  return out;
}

bool same_value(const std::string& a, const std::string& b) {
  if (a == b)
    return true;
  char* end_a = nullptr;
  char* end_b = nullptr;
  double x = std::strtod(a.c_str(), &end_a);
  double y = std::strtod(b.c_str(), &end_b);
  return end_a != a.c_str() && *end_a == 0 && end_b != b.c_str() && *end_b == 0 && x == y;
}


/// What a remote run can see of its leftovers on this host: the cgroups of
/// its machines under the supervisor's instance, and processes in them.
std::vector<std::string> machine_leftovers(const std::vector<fs::path>& roots,
                                           const std::vector<std::string>& machines,
                                           const std::string& instance) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& root : roots)
    for (const auto& m : machines)
      if (fs::exists(root / m, ec))
        out.push_back("cgroup " + (root / m).string());
  for (auto it = fs::directory_iterator("/proc", ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    std::ifstream cg(it->path() / "cgroup");
    for (std::string line; std::getline(cg, line);) {
      bool hit = false;
      for (const auto& m : machines) {
        auto marker = "agentvisor/" + instance + "/" + m;
        auto pos = line.find(marker);
        if (pos != std::string::npos
            && (pos + marker.size() == line.size() || line[pos + marker.size()] == '/'))
          hit = true;
      }
      if (hit) {
        out.push_back("process " + it->path().filename().string() + " in " + line);
        break;
      }
    }
  }
  return out;
}

int run_chaos_remote(const chaos_run_options& o, const chaos::scenario& sc) {
  auto url = http::parse_url(o.api_url);
  if (!url) {
    std::fprintf(stderr, "agentvisor: --api: %s\n", url.err().message.c_str());
    return exit_usage;
  }
  if (o.token_file.empty()) {
    std::fprintf(stderr, "agentvisor: --api needs --token-file (the supervisor's API token)\n");
    return exit_usage;
  }
  std::string token;
  {
    std::ifstream tf(o.token_file);
    if (!tf) {
      std::fprintf(stderr, "agentvisor: --token-file %s: cannot read it: %s\n",
                   o.token_file.c_str(), strerror(errno));
      return exit_usage;
    }
    std::getline(tf, token);
    while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back())))
      token.pop_back();
    while (!token.empty() && std::isspace(static_cast<unsigned char>(token.front())))
      token.erase(0, 1);
    if (token.empty()) {
      std::fprintf(stderr, "agentvisor: --token-file %s: empty\n", o.token_file.c_str());
      return exit_usage;
    }
  }
  if (sc.supervisor_json.find("\"log\"") == std::string::npos)
    log::init(log_level::error, log_format::plain);

  caf::actor_system_config sys_cfg;
  register_messages(sys_cfg);
  caf::actor_system sys{sys_cfg};
  io::io_thread io;
  if (std::string err; !io.start(&err)) {
    std::fprintf(stderr, "agentvisor: cannot start the I/O thread: %s\n", err.c_str());
    return exit_failure;
  }
  chaos_remote_options ro;
  ro.host = url->host;
  ro.port = url->port;
  ro.prefix = url->prefix;
  ro.token = token;
  ro.memory_mb = sc.memory_mb;
  ro.pids = sc.pids;
  auto remote = spawn_chaos_remote(sys, io, ro);
  auto base = "http://" + url->authority() + url->prefix;
  int code = exit_failure;
  chaos::run_log log;
  {
    caf::scoped_actor self{sys};
    auto fetch = [&](const std::string& method, const std::string& target,
                     int& status, std::string& body) -> std::string {
      std::string err;
      self->request(remote, std::chrono::seconds(70), http_atom::value, method, target, std::string{})
        .receive([&](int st, std::string& b) { status = st; body = std::move(b); },
                 [&](caf::error& e) { err = view(e).message; });
      return err;
    };
    auto end = [&](int c) {
      self->send_exit(remote, caf::exit_reason::user_shutdown);
      self->wait_for(remote);
      return c;
    };
    // What the supervisor runs with: the checks need its watchdog and
    // supervision settings, and a scenario may not ask for others.
    int status = 0;
    std::string body;
    if (auto err = fetch("GET", "/v1/supervisor", status, body); !err.empty()) {
      std::fprintf(stderr, "agentvisor: cannot reach the supervisor: %s\n", err.c_str());
      return end(exit_failure);
    }
    if (status == 401) {
      std::fprintf(stderr,
                   "agentvisor: the supervisor at %s refused the token from %s (401 "
                   "unauthorized): give the file its api.token_file names\n",
                   base.c_str(), o.token_file.c_str());
      return end(exit_usage);
    }
    simdjson::dom::parser parser;
    simdjson::dom::element info;
    if (status != 200 || parser.parse(body).get(info) != simdjson::SUCCESS) {
      std::fprintf(stderr, "agentvisor: GET %s/v1/supervisor: HTTP %d: %.400s\n", base.c_str(),
                   status, body.c_str());
      return end(exit_failure);
    }
    auto reported = flatten(info);
    auto rep = [&](const std::string& key) {
      auto it = reported.find(key);
      return it == reported.end() ? std::string{} : it->second;
    };
    if (rep("agents.allow_faults") != "true") {
      std::fprintf(stderr,
                   "agentvisor: the supervisor at %s runs without agents.allow_faults: its "
                   "fault routes are off; restart it with \"agents\": {\"allow_faults\": true}\n",
                   base.c_str());
      return end(exit_usage);
    }
    simdjson::dom::parser sp;
    simdjson::dom::element over_doc;
    std::vector<std::string> conflicts, unchecked;
    if (sp.parse(sc.supervisor_json).get(over_doc) == simdjson::SUCCESS)
      for (const auto& [key, value] : flatten(over_doc)) {
        auto r = rep(key);
        if (r.empty())
          unchecked.push_back(key);
        else if (!same_value(r, value))
          conflicts.push_back("supervisor." + key + " = " + value + " (the supervisor runs with " + r + ")");
      }
    if (auto r = rep("agents.workspace_mb"); !r.empty() && !same_value(r, std::to_string(sc.workspace_mb)))
      conflicts.push_back("agents.workspace_mb = " + std::to_string(sc.workspace_mb)
                          + " (the supervisor's agents get " + r + ")");
    if (!conflicts.empty()) {
      std::fprintf(stderr, "agentvisor: scenario %s cannot run against %s: a remote supervisor's "
                           "settings cannot be changed, and these differ:\n",
                   sc.name.c_str(), base.c_str());
      for (const auto& c : conflicts)
        std::fprintf(stderr, "  %s\n", c.c_str());
      return end(exit_usage);
    }
    for (const auto& k : unchecked)
      std::fprintf(stderr, "agentvisor: warning: supervisor.%s is not visible over the API: not "
                           "checked against the remote supervisor\n", k.c_str());

    auto u32 = [&](const std::string& key, uint32_t dflt) {
      auto v = rep(key);
      return v.empty() ? dflt : static_cast<uint32_t>(std::strtoul(v.c_str(), nullptr, 10));
    };
    chaos_options opts;
    opts.scenario = sc;
    opts.seed = o.seed ? *o.seed : std::random_device{}();
    opts.plan = chaos::plan(sc, opts.seed);
    opts.heartbeat_ms = u32("agents.heartbeat_ms", 1000);
    opts.hang_timeout_ms = u32("agents.hang_timeout_ms", 5000);
    opts.supervision.max_restarts = u32("supervision.max_restarts", 10);
    opts.supervision.period_ms = u32("supervision.period_ms", 10000);
    opts.supervision.min_backoff_ms = u32("supervision.min_backoff_ms", 10);
    opts.supervision.max_backoff_ms = u32("supervision.max_backoff_ms", 5000);
    opts.progress = ::isatty(STDERR_FILENO) != 0;
    auto instance = rep("instance");
    if (instance.size() >= 2)
      instance = instance.substr(1, instance.size() - 2); // the JSON string's quotes
    std::fprintf(stderr, "chaos %s: seed %llu, %zu faults over %.0f s, %u agents, against %s (instance %s, pid %s)\n",
                 sc.name.c_str(), static_cast<unsigned long long>(opts.seed), opts.plan.size(),
                 sc.duration_s, sc.agent_count, base.c_str(), instance.c_str(), rep("pid").c_str());

    std::promise<chaos::run_log> result;
    auto done = result.get_future();
    chaos_context ctx;
    ctx.spawner = remote;
    ctx.remote = remote;
    auto runner = spawn_chaos_runner(sys, ctx, std::move(opts),
                                     [&result](chaos::run_log l) { result.set_value(std::move(l)); });
    io.watch_signal(runner, SIGINT);
    io.watch_signal(runner, SIGTERM);
    log = done.get();

    std::vector<std::string> machines;
    self->request(remote, std::chrono::seconds(10), list_atom::value)
      .receive([&](std::vector<std::string>& m) { machines = std::move(m); }, [](caf::error&) {});
    if (fetch("GET", "/healthz", status, body).empty())
      log.healthy_at_end = status == 200;

    // Leftovers: only what this host shows of the supervisor's instance.
    bool loopback = url->host == "127.0.0.1" || url->host == "::1";
    auto roots = loopback && !instance.empty() ? instance_cgroups(instance)
                                               : std::vector<fs::path>{};
    if (roots.empty()) {
      log.not_checked["no_leftovers"]
        = loopback ? "the supervisor's instance \"" + instance + "\" has no cgroup on this host"
                   : "the supervisor at " + base + " is not on this host";
    } else {
      std::vector<std::string> found;
      for (int i = 0; i < 50; ++i) { // a deleted agent's cgroup goes with its last process
        found = machine_leftovers(roots, machines, instance);
        if (found.empty())
          break;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      log.leftovers.insert(log.leftovers.end(), found.begin(), found.end());
      log.not_checked["no_leftovers"]
        = "on this host the run's " + std::to_string(machines.size())
          + " machine cgroup(s) under agentvisor/" + instance + " were checked gone, with no "
          "process in them; the supervisor's own fds, mounts and workspaces (process "
          + rep("pid") + ") cannot be seen from the runner";
    }
    code = end(conclude(sc, log, o.report_dir));
  }
  io.stop();
  return code;
}

} // namespace

int run_chaos(const chaos_run_options& o) {
  auto sc = chaos::load_scenario(o.scenario);
  if (!sc) {
    std::fprintf(stderr, "agentvisor: %s\n", sc.err().message.c_str());
    return exit_usage;
  }
  if (!o.api_url.empty())
    return run_chaos_remote(o, *sc);
  if (!o.token_file.empty()) {
    std::fprintf(stderr, "agentvisor: --token-file is for --api only\n");
    return exit_usage;
  }
  auto cfg = parse_config(sc->supervisor_json, "scenario " + sc->name + ", supervisor");
  if (!cfg) {
    std::fprintf(stderr, "agentvisor: %s\n", cfg.err().message.c_str());
    return exit_usage;
  }
  auto backend = backend_from_string(sc->backend);
  if (!backend) {
    std::fprintf(stderr, "agentvisor: scenario %s: backend \"%s\" is unknown\n", sc->name.c_str(),
                 sc->backend.c_str());
    return exit_usage;
  }
  // The run's own instance, state dir and port: nothing of another
  // supervisor is touched, and everything found afterwards is the run's.
  char tmpl[] = "/tmp/agentvisor-chaos-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    std::fprintf(stderr, "agentvisor: mkdtemp /tmp/agentvisor-chaos-XXXXXX: %s\n", strerror(errno));
    return exit_failure;
  }
  std::string state_dir = tmpl;
  cfg->state_dir = state_dir;
  cfg->instance = "chaos-" + std::to_string(::getpid());
  // The scenario's backend is the run's default, and enabled: alone when
  // the supervisor section left `backends` at its default, else besides
  // those it lists.
  if (cfg->backends == std::vector<backend_kind>{cfg->backend})
    cfg->backends = {*backend};
  else if (std::find(cfg->backends.begin(), cfg->backends.end(), *backend) == cfg->backends.end())
    cfg->backends.push_back(*backend);
  cfg->backend = *backend;
  cfg->api.token_file.clear();
  cfg->agents.memory_mb = sc->memory_mb;
  cfg->agents.pids = sc->pids;
  cfg->agents.workspace_mb = sc->workspace_mb;
  cfg->agents.allow_faults = true; // a chaos run is made of faults
  if (sc->supervisor_json.find("\"log\"") == std::string::npos)
    cfg->log.level = log_level::error; // faults are expected; the report tells
  log::init(cfg->log.level, cfg->log.format);

  uint64_t seed = o.seed ? *o.seed : std::random_device{}();
  auto plan = chaos::plan(*sc, seed);
  std::fprintf(stderr, "chaos %s: seed %llu, %zu faults over %.0f s, %u agents\n", sc->name.c_str(),
               static_cast<unsigned long long>(seed), plan.size(), sc->duration_s,
               sc->agent_count);

  // libuv opens a process-wide pipe at its first loop init and keeps it for
  // the process's life: open it now so that the fd count compares like
  // with like.
  {
    uv_loop_t warm;
    if (uv_loop_init(&warm) == 0)
      uv_loop_close(&warm);
  }
  auto fds_before = open_fds();
  chaos::run_log log;
  int tree_code = exit_failure;
  {
    auto tree = supervisor_tree::start(*cfg, host_port{"127.0.0.1", 0});
    if (!tree) {
      std::fprintf(stderr, "agentvisor: %s\n", tree.err().message.c_str());
      fs::remove_all(state_dir);
      return exit_failure;
    }
    auto& t = **tree;
    std::promise<chaos::run_log> result;
    auto done = result.get_future();
    chaos_options ro;
    ro.scenario = *sc;
    ro.plan = std::move(plan);
    ro.seed = seed;
    ro.heartbeat_ms = cfg->agents.heartbeat_ms;
    ro.hang_timeout_ms = cfg->agents.hang_timeout_ms;
    ro.supervision = cfg->supervision;
    ro.progress = ::isatty(STDERR_FILENO) != 0;
    auto runner = spawn_chaos_runner(
      t.system(), chaos_context{t.spawner(), t.governor(), t.backend(), t.metrics(), {}},
      std::move(ro), [&result](chaos::run_log l) { result.set_value(std::move(l)); });
    // Ctrl-C ends the run early, then the tree goes down in order: no
    // agent, cgroup or workspace of the run is left.
    t.io().watch_signal(runner, SIGINT);
    t.io().watch_signal(runner, SIGTERM);
    log = done.get();
    log.healthy_at_end = healthz(t.host(), t.port());
    tree_code = t.stop();
  }
  if (tree_code != exit_ok)
    log.escalated = log.escalated || tree_code != exit_ok;
  log.leftovers = leftovers(cfg->instance, state_dir, fds_before);
  std::error_code ec;
  fs::remove_all(state_dir, ec);

  return conclude(*sc, log, o.report_dir);
}

} // namespace agentvisor::cli

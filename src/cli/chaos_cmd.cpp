// `agentvisor chaos run SCENARIO.json [--seed N] [--report DIR]`: a
// supervisor tree in this process (tree.hpp) configured by the scenario, the
// chaos runner against it, then what only the outside can see (/healthz
// before the shutdown; processes, cgroups, fds and mounts after it), the
// invariants and the report. Exit 0 only when every invariant holds.

#include "commands.hpp"
#include "tree.hpp"

#include "agentvisor/chaos.hpp"
#include "agentvisor/log.hpp"

#include "chaos.hpp"

#include <caf/all.hpp>
#include <uv.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <future>
#include <random>

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

/// What the run left behind: cgroups named after its instance, processes
/// inside them, mounts under its state dir, fds beyond those it started with.
std::vector<std::string> leftovers(const std::string& instance, const std::string& state_dir,
                                   const std::map<int, std::string>& fds_before) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator("/sys/fs/cgroup", ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it.depth() > 3) {
      it.disable_recursion_pending();
      continue;
    }
    if (it->is_directory(ec) && it->path().filename() == instance
        && it->path().parent_path().filename() == "agentvisor")
      out.push_back("cgroup " + it->path().string());
  }
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

} // namespace

int run_chaos(const chaos_run_options& o) {
  auto sc = chaos::load_scenario(o.scenario);
  if (!sc) {
    std::fprintf(stderr, "agentvisor: %s\n", sc.err().message.c_str());
    return exit_usage;
  }
  if (!o.api_url.empty())
    return not_built_yet("chaos run --api (runs against an in-process supervisor only)");
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
    spawn_chaos_runner(t.system(), chaos_context{t.spawner(), t.governor(), t.backend(), t.metrics()},
                       std::move(ro), [&result](chaos::run_log l) { result.set_value(std::move(l)); });
    log = done.get();
    log.healthy_at_end = healthz(t.host(), t.port());
    tree_code = t.stop();
  }
  if (tree_code != exit_ok)
    log.escalated = log.escalated || tree_code != exit_ok;
  log.leftovers = leftovers(cfg->instance, state_dir, fds_before);
  std::error_code ec;
  fs::remove_all(state_dir, ec);

  auto inv = chaos::check(*sc, log);
  bool passed = std::all_of(inv.begin(), inv.end(), [](auto& i) { return i.passed; });
  for (const auto& i : inv)
    std::printf("%-18s %s  %s\n", i.name.c_str(), i.passed ? "pass" : "FAIL", i.evidence.c_str());
  if (!o.report_dir.empty()) {
    fs::create_directories(o.report_dir, ec);
    auto json_ok = write_file(fs::path(o.report_dir) / "report.json", chaos::report_json(*sc, log, inv));
    auto html_ok = write_file(fs::path(o.report_dir) / "report.html", chaos::report_html(*sc, log, inv));
    if (!json_ok || !html_ok) {
      std::fprintf(stderr, "agentvisor: cannot write the report to %s\n", o.report_dir.c_str());
      return exit_failure;
    }
    std::printf("report: %s/report.json, %s/report.html\n", o.report_dir.c_str(),
                o.report_dir.c_str());
  }
  std::printf("chaos %s: %s\n", sc->name.c_str(), passed ? "every invariant held" : "INVARIANTS VIOLATED");
  return passed ? exit_ok : exit_failure;
}

} // namespace agentvisor::cli

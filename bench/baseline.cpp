// `agentvisor bench baseline`: our users' single-agent baseline report
// (spawn time, memory per agent, CPU, the latency of each agent-loop tool),
// measured on the real actors (spawner, vm_actor, resource governor) over the
// real sandbox backend, I/O thread and template process, each figure beside
// the users' target. With --peers, bwrap, unshare and crun spawns are timed
// interleaved with ours, and an Erlang/OTP supervisor's restart beside our
// kill -> replacement serving.

#include "bench_commands.hpp"
#include "host.hpp"
#include "peers.hpp"
#include "report.hpp"
#include "workload.hpp"

#include "agentvisor/json.hpp"
#include "agentvisor/log.hpp"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <thread>

namespace agentvisor::bench {

namespace {

using namespace std::chrono_literals;

// The users' targets (docs/performance.md quotes their report).
constexpr double spawn_target_ms = 200;
constexpr double memory_target_mib = 200;
constexpr double cpu_target_percent = 50;

constexpr int warmup_spawns = 5;
constexpr int warmup_tool_rounds = 10;
constexpr int otp_warmup = 20;
/// Window over which the supervisor's CPU with idle agents is read.
constexpr auto idle_window = 2s;

volatile sig_atomic_t g_stop = 0;

void on_stop(int) {
  g_stop = 1;
}

void check_stop() {
  if (g_stop)
    throw std::runtime_error("interrupted");
}

double stddev(const std::vector<double>& v) {
  if (v.size() < 2)
    return 0;
  double mean = 0;
  for (double x : v)
    mean += x;
  mean /= static_cast<double>(v.size());
  double sq = 0;
  for (double x : v)
    sq += (x - mean) * (x - mean);
  return std::sqrt(sq / static_cast<double>(v.size() - 1));
}

struct spawn_peer {
  peer_info info;
  std::vector<double> samples_ms;
};

struct memory_figures {
  int agents = 0;
  uint64_t rss_before = 0, rss_after = 0;
  std::vector<double> guest_bytes;
  std::vector<double> guest_pss;
  uint64_t avail_before = 0, avail_after = 0;
  double idle_cpu_s = 0, idle_wall_s = 0;
};

struct results {
  std::vector<double> spawn_ms, teardown_ms;
  std::vector<tool_case> tools;
  memory_figures mem;
  std::vector<spawn_peer> peers;
  restart_samples restart_cold, restart_pooled;
  otp_restart otp;
  int restarts = 0;
};

/// Sequential cold spawns through the spawner: start request -> agent_info
/// (the guest is ready), then a stop request -> its answer (the machine is
/// gone and cleaned up), timed apart. After each measured spawn every
/// available peer runs once, so both see the same machine.
void measure_spawns(host& h, const caf::actor& sp, const baseline_options& o, peer_runner* runner,
                    results& r, progress& prog) {
  caf::scoped_actor self{h.sys()};
  for (int i = -warmup_spawns; i < o.iterations; ++i) {
    check_stop();
    auto t0 = clock_type::now();
    auto a = start_agent(self, sp, agent_request{"spawn-" + std::to_string(i + warmup_spawns)});
    auto t1 = clock_type::now();
    std::string err;
    self->request(sp, caf::duration{60s}, stop_atom::value, a.id)
      .receive([](agent_info&) {}, [&](caf::error& e) { err = view(e).message; });
    if (!err.empty())
      throw std::runtime_error("stopping agent " + a.id + ": " + err);
    auto t2 = clock_type::now();
    if (i < 0)
      continue;
    r.spawn_ms.push_back(ms_between(t0, t1));
    r.teardown_ms.push_back(ms_between(t1, t2));
    if (runner)
      for (size_t k = 0; k < r.peers.size(); ++k)
        if (r.peers[k].info.available)
          r.peers[k].samples_ms.push_back(runner->run_once(k));
    prog.update(runner ? "spawns (and peers)" : "spawns", i + 1, o.iterations);
  }
}

/// Tool round trips on one long-lived agent, through the spawner and its
/// vm_actor as the API makes them: each round calls every tool once.
void measure_tools(host& h, const caf::actor& sp, const std::string& agent,
                   const baseline_options& o, results& r, progress& prog) {
  caf::scoped_actor self{h.sys()};
  write_fixture(self, sp, agent);
  r.tools = baseline_tools();
  for (const auto& c : r.tools)
    check_tool_result(c, call_tool(self, sp, agent, c.name, c.args));
  for (int i = -warmup_tool_rounds; i < o.iterations; ++i) {
    check_stop();
    for (auto& c : r.tools) {
      auto t0 = clock_type::now();
      call_tool(self, sp, agent, c.name, c.args);
      auto t1 = clock_type::now();
      if (i >= 0)
        c.samples_ms.push_back(ms_between(t0, t1));
    }
    if (i >= 0)
      prog.update("tool rounds", i + 1, o.iterations);
  }
}

/// The supervisor's RSS before and after `n` more agents started (8 start
/// requests in flight at a time), each guest's cgroup usage, and the
/// supervisor's CPU while they idle. One agent (the tools') is live before,
/// so lazily built structures are in the baseline, not charged to agents.
void measure_memory(host& h, const caf::actor& sp, int n, results& r, progress& prog) {
  caf::scoped_actor self{h.sys()};
  auto& m = r.mem;
  std::this_thread::sleep_for(200ms);
  m.rss_before = rss_bytes();
  m.avail_before = mem_available_bytes();
  constexpr int window = 8;
  int sent = 0, done = 0;
  std::vector<agent_info> agents;
  std::string err;
  while (done < n) {
    check_stop();
    while (sent < n && sent - done < window) {
      self->send(sp, start_atom::value, agent_request{"mem-" + std::to_string(sent)});
      ++sent;
    }
    self->receive([&](agent_info& a) { agents.push_back(std::move(a)); },
                  [&](caf::error& e) { err = view(e).message; },
                  caf::after(120s) >> [&] { err = "no answer to a start request within 120 s"; });
    if (!err.empty())
      throw std::runtime_error("starting the memory figure's agents: " + err);
    ++done;
    prog.update("memory: agents started", done, n);
  }
  std::this_thread::sleep_for(500ms); // a few heartbeats and usage polls
  m.rss_after = rss_bytes();
  m.avail_after = mem_available_bytes();
  m.agents = n;
  for (const auto& a : agents) {
    m.guest_bytes.push_back(static_cast<double>(usage_of(self, h.backend(), a.machine).memory_bytes));
    m.guest_pss.push_back(static_cast<double>(pss_bytes(a.pid)));
  }
  auto c0 = process_cpu_seconds();
  auto t0 = clock_type::now();
  std::this_thread::sleep_for(idle_window);
  m.idle_cpu_s = process_cpu_seconds() - c0;
  m.idle_wall_s = ms_between(t0, clock_type::now()) / 1000.0;
  for (const auto& a : agents) {
    self->request(sp, caf::duration{60s}, stop_atom::value, a.id)
      .receive([](agent_info&) {}, [&](caf::error& e) { err = view(e).message; });
    if (!err.empty())
      throw std::runtime_error("stopping agent " + a.id + ": " + err);
  }
}

std::string report(const baseline_options& o, const std::string& cg, const std::string& started,
                   const cpu_sample& cpu_start, double proc_cpu_s, double wall_s,
                   const results& r) {
  auto sp = summarize(r.spawn_ms);
  const auto& m = r.mem;
  double guest_mean = 0;
  for (double x : m.guest_bytes)
    guest_mean += x;
  guest_mean = m.guest_bytes.empty() ? 0 : guest_mean / static_cast<double>(m.guest_bytes.size());
  double sup_per_agent = m.agents > 0 ? (static_cast<double>(m.rss_after)
                                         - static_cast<double>(m.rss_before)) / m.agents
                                      : 0;
  double per_agent_mib = (guest_mean + std::max(0.0, sup_per_agent)) / (1024.0 * 1024.0);
  double cpu_percent = 100.0 * proc_cpu_s / wall_s;
  double idle_percent = m.idle_wall_s > 0 ? 100.0 * m.idle_cpu_s / m.idle_wall_s : 0;

  std::vector<metric> metrics;
  auto below = [&](std::string name, double v, int dec, const char* unit, double target,
                   const char* expr) {
    double value = round_to(v, dec);
    metrics.push_back({std::move(name), value, unit, target, expr, value < target});
  };
  auto reported = [&](std::string name, double v, int dec, const char* unit) {
    metrics.push_back({std::move(name), round_to(v, dec), unit, {}, "none (reported)", {}});
  };
  below("spawn_p50", sp.p50, 3, "ms", spawn_target_ms, "< 200 ms");
  below("spawn_p95", sp.p95, 3, "ms", spawn_target_ms, "< 200 ms");
  below("spawn_p99", sp.p99, 3, "ms", spawn_target_ms, "< 200 ms");
  reported("spawn_min", sp.min, 3, "ms");
  reported("spawn_max", sp.max, 3, "ms");
  below("memory_per_agent", per_agent_mib, 2, "MiB", memory_target_mib, "< 200 MiB");
  reported("memory_guest_cgroup_per_agent", guest_mean / (1024.0 * 1024.0), 2, "MiB");
  reported("memory_supervisor_per_agent", std::max(0.0, sup_per_agent) / 1024.0, 1, "KiB");
  below("supervisor_cpu", cpu_percent, 1, "%", cpu_target_percent, "< 50 % of one CPU");
  reported("supervisor_cpu_idle", idle_percent, 2, "%");
  for (const auto& t : r.tools)
    reported("tool_" + t.name + "_p50", summarize(t.samples_ms).p50, 3, "ms");

  std::optional<double> pooled_p50, otp_p50;
  if (o.peers) {
    for (const auto& p : r.peers)
      if (p.info.available)
        reported("spawn_p50_over_" + p.info.name + "_p50",
                 sp.p50 / summarize(p.samples_ms).p50, 3, "ratio");
    pooled_p50 = summarize(r.restart_pooled.ms).p50;
    reported("restart_pooled_p50", *pooled_p50, 3, "ms");
    if (r.otp.available) {
      otp_p50 = summarize(r.otp.samples_ms).p50;
      reported("otp_restart_p50", *otp_p50, 4, "ms");
      reported("restart_pooled_p50_over_otp_p50", *pooled_p50 / *otp_p50, 1, "ratio");
    }
  }

  std::string out;
  json::writer w{out};
  w.begin_object()
    .field("benchmark", "baseline")
    .field("timestamp", started)
    .field("wall_seconds", round_to(wall_s, 1));
  write_machine(w, cg, cpu_start, sample_cpu(), wall_s);
  w.field("backend", "sandbox")
    .key("config").begin_object()
    .field("iterations", o.iterations)
    .field("warmup_spawns", warmup_spawns)
    .field("warmup_tool_rounds", warmup_tool_rounds)
    .field("memory_agents", o.memory_agents)
    .field("agent_memory_limit_mb", host::agent_memory_mb)
    .field("agent_workspace_mb", host::agent_workspace_mb)
    .field("agent_hang_timeout_ms", host::agent_hang_timeout_ms)
    .field("restart", "temporary (an agent that goes down fails the run)")
    .field("peers", o.peers)
    .field("restarts", r.restarts)
    .field("percentiles", "nearest rank")
    .field("clock", "steady_clock (CLOCK_MONOTONIC)")
    .end_object();
  write_metrics(w, metrics);

  w.key("spawn").begin_object()
    .field("unit", "ms")
    .field("measured", "spawner start request -> agent_info with the guest ready (governor grant, "
                       "vm_actor, backend spawn through the template, hello and ready), one at a "
                       "time, no warm pool");
  write_stats(w, sp, 3);
  w.field("stddev", round_to(stddev(r.spawn_ms), 3)).end_object();
  w.key("teardown").begin_object()
    .field("unit", "ms")
    .field("measured", "stop request -> answer: graceful stop, exit reaped, cgroup and workspace "
                       "removed");
  write_stats(w, summarize(r.teardown_ms), 3);
  w.end_object();

  auto g = summarize(m.guest_bytes);
  auto pss = summarize(m.guest_pss);
  double host_per_agent = m.agents > 0 ? (static_cast<double>(m.avail_before)
                                          - static_cast<double>(m.avail_after)) / m.agents
                                       : 0;
  w.key("memory").begin_object()
    .field("agents", m.agents)
    .field("guest_cgroup_bytes_mean", round_to(guest_mean, 0))
    .field("guest_cgroup_bytes_min", round_to(g.min, 0))
    .field("guest_cgroup_bytes_max", round_to(g.max, 0))
    .field("supervisor_rss_before_bytes", m.rss_before)
    .field("supervisor_rss_after_bytes", m.rss_after)
    .field("supervisor_bytes_per_agent", round_to(sup_per_agent, 0))
    .field("per_agent_mib", round_to(per_agent_mib, 2))
    .field("guest_pss_bytes_mean", round_to(pss.mean, 0))
    .field("host_memavailable_drop_per_agent_bytes", round_to(host_per_agent, 0))
    .field("measured", "guest: each agent's cgroup memory usage (backend usage request: memory "
                       "charged to the sandbox, its tmpfs pages included; on cgroup v1 what the "
                       "guest touched before joining its cgroup is charged elsewhere), and the "
                       "guest process's PSS; supervisor: VmRSS delta of this process over the "
                       "agents started, divided by their number; host: MemAvailable's drop over "
                       "the same agents (every process and kernel object, other load included)")
    .end_object();

  w.key("cpu").begin_object()
    .field("supervisor_cpu_seconds", round_to(proc_cpu_s, 2))
    .field("wall_seconds", round_to(wall_s, 2))
    .field("percent_of_one_cpu", round_to(cpu_percent, 1))
    .field("cpus", ::sysconf(_SC_NPROCESSORS_ONLN))
    .field("measured", "utime + stime of /proc/self/stat (every thread of the supervisor: "
                       "actors, I/O thread) over the whole run, over its wall time; the "
                       "template, guests and peers are other processes")
    .key("idle").begin_object()
    .field("agents", m.agents)
    .field("seconds", round_to(m.idle_wall_s, 2))
    .field("percent_of_one_cpu", round_to(idle_percent, 2))
    .end_object()
    .end_object();

  w.key("tools").begin_object()
    .field("unit", "ms")
    .field("measured", "spawner call request -> tool_result (vm_actor, guest channel through the "
                       "I/O thread, the guest's tool, and back), on one long-lived agent")
    .key("fixture").begin_object()
    .field("read_file", "bench/small.txt, 512 bytes")
    .field("write_file", "bench/out.txt, 64 bytes, overwritten")
    .field("search", "substring \"needle\" over tree/: 4 dirs x 8 files x 20 lines")
    .field("list_directory", "tree/d0: 8 files")
    .field("execute_command", "/bin/true")
    .end_object();
  for (const auto& t : r.tools) {
    w.key(t.name).begin_object().field("args", t.args);
    write_stats(w, summarize(t.samples_ms), 4);
    w.end_object();
  }
  w.end_object();

  w.key("peers").begin_object().field("enabled", o.peers);
  if (o.peers) {
    w.key("spawn").begin_object();
    for (const auto& p : r.peers) {
      w.key(p.info.name).begin_object().field("available", p.info.available);
      if (p.info.available) {
        auto s = summarize(p.samples_ms);
        w.field("command", p.info.command).field("unit", "ms");
        write_stats(w, s, 3);
        w.field("agentvisor_p50_over_peer_p50", round_to(sp.p50 / s.p50, 3));
      } else {
        w.field("reason", p.info.reason);
      }
      w.end_object();
    }
    w.end_object();
    w.key("restart").begin_object();
    w.key("agentvisor_pooled").begin_object()
      .field("unit", "ms")
      .field("measured", "kill(SIGKILL) of a supervised guest (one_for_one, permanent, 1 ms "
                         "backoff, pool.warm 2) -> a retryable list_directory sent right after "
                         "the kill is answered by the replacement")
      .field("restarts_from_pool", r.restart_pooled.from_pool);
    write_stats(w, summarize(r.restart_pooled.ms), 3);
    w.end_object();
    w.key("agentvisor_cold").begin_object()
      .field("unit", "ms")
      .field("measured", "as agentvisor_pooled without a pool: each restart spawns a sandbox");
    write_stats(w, summarize(r.restart_cold.ms), 3);
    w.end_object();
    w.key("erlang_otp").begin_object().field("available", r.otp.available);
    if (r.otp.available) {
      w.field("command", r.otp.command).field("unit", "ms");
      write_stats(w, summarize(r.otp.samples_ms), 4);
      w.field("agentvisor_pooled_p50_over_otp_p50", round_to(*pooled_p50 / *otp_p50, 1));
    } else {
      w.field("reason", r.otp.reason);
    }
    w.end_object();
    w.end_object();
  }
  w.end_object();
  w.end_object();
  out += '\n';
  return out;
}

} // namespace

int run_baseline(const baseline_options& o) {
  if (auto why = sandboxes_unavailable()) {
    std::fprintf(stderr, "agentvisor bench baseline: %s; skipping\n", why->c_str());
    return exit_skipped;
  }
  prepare_process(on_stop);

  auto started = iso8601_utc_now();
  auto cpu_start = sample_cpu();
  auto t_start = clock_type::now();
  results r;
  std::string text;
  try {
    // Before the actor system and the I/O thread: the helper is forked
    // from a process with one thread.
    std::unique_ptr<peer_runner> runner;
    if (o.peers) {
      runner = peer_runner::start();
      for (const auto& p : runner->peers())
        r.peers.push_back({p, {}});
    }
    auto proc_cpu0 = process_cpu_seconds();
    std::string cg;
    {
      host h{"bench-base", o.memory_agents + 8, o.guest_binary};
      cg = h.cgroup_version();
      progress prog{o.quiet};
      auto sp = h.report_spawner();
      struct stopper {
        host& h;
        caf::actor sp;
        ~stopper() { h.stop_spawner(sp); }
      } stop{h, sp};
      measure_spawns(h, sp, o, runner.get(), r, prog);
      caf::scoped_actor self{h.sys()};
      auto tools_agent = start_agent(self, sp, agent_request{"tools"});
      measure_tools(h, sp, tools_agent.id, o, r, prog);
      measure_memory(h, sp, o.memory_agents, r, prog);
      if (o.peers) {
        r.restarts = std::min(o.iterations, 200);
        r.restart_cold = kill_to_replacement(h, r.restarts, 0, prog);
        r.restart_pooled = kill_to_replacement(h, r.restarts, 2, prog);
        prog.clear();
        if (!o.quiet && ::isatty(2))
          std::fputs("Erlang/OTP restarts...", stderr);
        r.otp = measure_otp_restart(otp_warmup, r.restarts);
        if (!o.quiet && ::isatty(2))
          std::fputs("\r\033[K", stderr);
      }
      prog.clear();
    }
    double proc_cpu_s = process_cpu_seconds() - proc_cpu0;
    double wall_s = ms_between(t_start, clock_type::now()) / 1000.0;
    text = report(o, cg, started, cpu_start, proc_cpu_s, wall_s, r);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "agentvisor bench baseline: %s\n", e.what());
    return g_stop ? 130 : exit_run_failed;
  }
  if (!write_output(o.out, text)) {
    std::fprintf(stderr, "agentvisor bench baseline: cannot write %s: %s\n",
                 o.out.empty() ? "stdout" : o.out.c_str(), std::strerror(errno));
    return exit_run_failed;
  }
  return exit_measured;
}

} // namespace agentvisor::bench

// `agentvisor bench concurrent`: our users' concurrency report (total
// lifecycle time, average spawn, execute and cleanup, throughput in tool
// operations per minute, memory, CPU) for each agent count, on the real
// actors over real sandboxes. For each count: spawn all at once, run a fixed
// tool workload on each (all agents at once, each agent's calls in
// sequence), tear all down; phases are separated, so each agent's figures
// are its own. With --peers, the same count of bwrap, unshare and crun runs
// started at once is timed beside our spawn phase.

#include "bench_commands.hpp"
#include "host.hpp"
#include "peers.hpp"
#include "report.hpp"
#include "workload.hpp"

#include "agentvisor/json.hpp"
#include "agentvisor/log.hpp"
#include "agentvisor/task.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <thread>

namespace agentvisor::bench {

namespace {

using namespace std::chrono_literals;

// The users' targets, from their concurrency report.
constexpr double spawn_target_ms = 100;         // "Spawn time <100ms"
constexpr double cpu_target_percent = 80;        // "CPU usage <80%"
constexpr double memory_target_mib = 200;        // "~200MB/agent"
constexpr double throughput_target_per_min = 1000; // "1000+ ops/min"

using phase_atom = caf::atom_constant<caf::atom("phase")>;

enum phase : int { phase_spawn = 0, phase_execute = 1, phase_cleanup = 2 };

/// The fixed workload each agent runs, in order: 10 tool operations, as the
/// users' report has ("10 operations per agent").
struct op {
  const char* tool;
  std::string args;
};

std::vector<op> workload() {
  std::string small(64, 'a');
  std::string lines;
  for (int i = 0; i < 8; ++i)
    lines += "line " + std::to_string(i) + (i == 5 ? " needle\n" : "\n");
  return {
    {"write_file", write_args("notes/a.txt", small)},
    {"read_file", R"({"path":"notes/a.txt"})"},
    {"write_file", write_args("notes/b.txt", lines)},
    {"list_directory", R"({"path":"notes"})"},
    {"read_file", R"({"path":"notes/b.txt"})"},
    {"search", R"({"pattern":"needle","path":"notes"})"},
    {"write_file", write_args("notes/c.txt", lines + lines)},
    {"read_file", R"({"path":"notes/c.txt"})"},
    {"list_directory", R"({"path":"."})"},
    {"execute_command", R"({"argv":["/bin/true"]})"},
  };
}

struct agent_times {
  std::string id, machine;
  double spawn_ms = 0, exec_ms = 0, cleanup_ms = 0;
};

/// One count's run, filled by the driver (phases) and the main thread
/// (memory and CPU between them).
struct round_data {
  int n = 0;
  std::vector<agent_times> agents;
  double phase_wall_ms[3] = {0, 0, 0};
  double phase_cpu_s[3] = {0, 0, 0};
  int ops = 0;
  uint64_t rss_before = 0, rss_live = 0, rss_peak = 0;
  uint64_t avail_before = 0, avail_live = 0;
  double guest_sum = 0, guest_peak_sum = 0;
  cpu_sample machine_start, machine_end;
  std::vector<std::pair<std::string, double>> peer_ms; ///< peer name -> wall ms, n at once
};

struct driver_state {
  caf::actor spawner;
  round_data* out = nullptr;
  progress* prog = nullptr;
  std::vector<op> ops = workload();
  int phase = 0;
  int pending = 0;
  int done = 0;
  std::string error;
  clock_type::time_point phase_start;
  caf::response_promise rp;
  static inline const char* name = "bench_concurrent_driver";
};

using driver_ptr = caf::stateful_actor<driver_state>*;

const char* phase_label(int p) {
  return p == phase_spawn ? "agents spawned" : p == phase_execute ? "agents done with their tools"
                                                                  : "agents torn down";
}

/// One agent's part of the current phase is over (well or not).
void agent_done(driver_ptr self, std::string error = {}) {
  auto& st = self->state;
  if (st.pending == 0)
    return; // the phase already failed (the spawner ended)
  if (!error.empty() && st.error.empty())
    st.error = std::move(error);
  ++st.done;
  st.prog->update(phase_label(st.phase), st.done, st.out->n);
  if (--st.pending == 0) {
    st.out->phase_wall_ms[st.phase] = ms_between(st.phase_start, clock_type::now());
    st.rp.deliver(st.error);
  }
}

task<void> spawn_one(driver_ptr self, size_t k) {
  auto& a = self->state.out->agents[k];
  auto name = "c" + std::to_string(self->state.out->n) + "-" + std::to_string(k);
  // Message arguments are lvalues on purpose: GCC 12 mis-handles class
  // temporaries inside a co_await expression (a moved std::string's
  // small buffer ends up freed).
  agent_request req{name};
  auto t0 = clock_type::now();
  auto r = co_await ask<agent_info>(self, self->state.spawner, within{600s}, start_atom::value, req);
  if (!r) {
    agent_done(self, "starting agent " + name + ": " + view(r.error()).message);
    co_return;
  }
  a.spawn_ms = ms_between(t0, clock_type::now());
  a.id = r->id;
  a.machine = r->machine;
  agent_done(self);
}

task<void> execute_one(driver_ptr self, size_t k) {
  auto& a = self->state.out->agents[k];
  auto t0 = clock_type::now();
  for (const auto& o : self->state.ops) {
    tool_call call{o.tool, o.args, false, 0};
    auto r = co_await ask<tool_result>(self, self->state.spawner, within{300s}, call_atom::value,
                                       a.id, call);
    if (!r || !r->ok) {
      agent_done(self, "agent " + a.id + ": " + o.tool + ": "
                         + (r ? r->error_code + ": " + r->error_message
                              : view(r.error()).message));
      co_return;
    }
    ++self->state.out->ops;
  }
  a.exec_ms = ms_between(t0, clock_type::now());
  agent_done(self);
}

task<void> cleanup_one(driver_ptr self, size_t k) {
  auto& a = self->state.out->agents[k];
  auto t0 = clock_type::now();
  auto r = co_await ask<agent_info>(self, self->state.spawner, within{300s}, stop_atom::value, a.id);
  if (!r) {
    agent_done(self, "stopping agent " + a.id + ": " + view(r.error()).message);
    co_return;
  }
  a.cleanup_ms = ms_between(t0, clock_type::now());
  agent_done(self);
}

/// Runs one phase for every agent at once when asked, and answers with ""
/// or the first error once every agent is through it. An event-based actor,
/// as the API is: every agent's request is in flight together.
caf::behavior concurrent_driver(driver_ptr self, caf::actor spawner, round_data* out,
                                progress* prog) {
  self->state.spawner = std::move(spawner);
  self->state.out = out;
  self->state.prog = prog;
  // A spawner that ends takes its pending answers with it: fail the phase
  // now rather than when every request times out.
  self->monitor(self->state.spawner);
  self->set_down_handler([=](caf::down_msg& dm) {
    auto& st = self->state;
    if (dm.source != st.spawner.address() || st.pending == 0)
      return;
    st.pending = 0;
    st.rp.deliver("the spawner ended: " + caf::to_string(dm.reason));
  });
  return {
    [=](phase_atom, int p) {
      auto& st = self->state;
      st.rp = self->make_response_promise();
      st.phase = p;
      st.pending = st.out->n;
      st.done = 0;
      st.error.clear();
      st.phase_start = clock_type::now();
      auto rp = st.rp;
      for (size_t k = 0; k < static_cast<size_t>(st.out->n); ++k) {
        if (p == phase_spawn)
          launch(self, spawn_one(self, k));
        else if (p == phase_execute)
          launch(self, execute_one(self, k));
        else
          launch(self, cleanup_one(self, k));
      }
      return rp;
    },
  };
}

volatile sig_atomic_t g_stop = 0;

void on_stop(int) {
  g_stop = 1;
}

/// One count: the three phases, with the supervisor's memory read after
/// the spawns and the guests' after the workload.
round_data run_round(host& h, const caf::actor& sp, int n, progress& prog) {
  round_data d;
  d.n = n;
  d.agents.resize(static_cast<size_t>(n));
  reset_peak_rss();
  d.rss_before = rss_bytes();
  d.avail_before = mem_available_bytes();
  d.machine_start = sample_cpu();
  auto driver = h.sys().spawn(concurrent_driver, sp, &d, &prog);
  caf::scoped_actor self{h.sys()};
  struct ender {
    caf::scoped_actor& self;
    caf::actor driver;
    ~ender() {
      self->send_exit(driver, caf::exit_reason::user_shutdown);
      self->wait_for(driver);
    }
  } end{self, driver};
  auto run_phase = [&](int p) {
    if (g_stop)
      throw std::runtime_error("interrupted");
    auto c0 = process_cpu_seconds();
    std::string err;
    self->request(driver, caf::infinite, phase_atom::value, p)
      .receive([&](std::string& e) { err = std::move(e); },
               [&](caf::error& e) { err = caf::to_string(e); });
    d.phase_cpu_s[p] = process_cpu_seconds() - c0;
    prog.clear();
    if (!err.empty())
      throw std::runtime_error(std::to_string(n) + " agents: " + err);
  };
  run_phase(phase_spawn);
  d.rss_live = rss_bytes();
  d.avail_live = mem_available_bytes();
  run_phase(phase_execute);
  for (const auto& a : d.agents) {
    auto u = usage_of(self, h.backend(), a.machine);
    d.guest_sum += static_cast<double>(u.memory_bytes);
    d.guest_peak_sum += static_cast<double>(u.memory_peak_bytes);
  }
  run_phase(phase_cleanup);
  d.rss_peak = peak_rss_bytes();
  d.machine_end = sample_cpu();
  return d;
}

double mean_of(const std::vector<agent_times>& v, double agent_times::*f) {
  double s = 0;
  for (const auto& a : v)
    s += a.*f;
  return v.empty() ? 0 : s / static_cast<double>(v.size());
}

std::string report(const concurrent_options& o, const std::string& cg, const std::string& started,
                   const cpu_sample& cpu_start, double wall_s, const std::vector<round_data>& rounds,
                   const std::vector<peer_info>& peers, int ops_per_agent) {
  std::vector<metric> metrics;
  auto below = [&](std::string name, double v, int dec, const char* unit, double target,
                   const char* expr) {
    double value = round_to(v, dec);
    metrics.push_back({std::move(name), value, unit, target, expr, value < target});
  };
  auto reported = [&](std::string name, double v, int dec, const char* unit) {
    metrics.push_back({std::move(name), round_to(v, dec), unit, {}, "none (reported)", {}});
  };
  struct derived {
    double total_ms, spawn, exec, cleanup, throughput, throughput_exec, cpu_percent, sup_per_agent,
      guest_per_agent, per_agent_mib, peak_mib, machine_busy;
  };
  std::vector<derived> ds;
  for (const auto& d : rounds) {
    derived x{};
    x.total_ms = d.phase_wall_ms[0] + d.phase_wall_ms[1] + d.phase_wall_ms[2];
    x.spawn = mean_of(d.agents, &agent_times::spawn_ms);
    x.exec = mean_of(d.agents, &agent_times::exec_ms);
    x.cleanup = mean_of(d.agents, &agent_times::cleanup_ms);
    x.throughput = d.ops / (x.total_ms / 60000.0);
    x.throughput_exec = d.ops / (d.phase_wall_ms[1] / 60000.0);
    double cpu_s = d.phase_cpu_s[0] + d.phase_cpu_s[1] + d.phase_cpu_s[2];
    x.cpu_percent = 100.0 * cpu_s / (x.total_ms / 1000.0);
    x.sup_per_agent = std::max(0.0, (static_cast<double>(d.rss_live) - static_cast<double>(d.rss_before)) / d.n);
    x.guest_per_agent = d.guest_sum / d.n;
    x.per_agent_mib = (x.sup_per_agent + x.guest_per_agent) / (1024.0 * 1024.0);
    x.peak_mib = (static_cast<double>(d.rss_peak) + d.guest_peak_sum) / (1024.0 * 1024.0);
    double cpus = static_cast<double>(::sysconf(_SC_NPROCESSORS_ONLN));
    double span = d.machine_end.busy_s - d.machine_start.busy_s;
    x.machine_busy = 100.0 * span / (cpus * (x.total_ms / 1000.0));
    ds.push_back(x);
    auto p = "agents_" + std::to_string(d.n) + "_";
    reported(p + "total", x.total_ms, 2, "ms");
    below(p + "avg_spawn", x.spawn, 2, "ms", spawn_target_ms, "< 100 ms");
    reported(p + "avg_execute", x.exec, 2, "ms");
    reported(p + "avg_cleanup", x.cleanup, 2, "ms");
    metrics.push_back({p + "throughput", round_to(x.throughput, 0), "ops/min",
                       throughput_target_per_min, "> 1000 ops/min",
                       round_to(x.throughput, 0) > throughput_target_per_min});
    reported(p + "peak_memory", x.peak_mib, 1, "MiB");
    below(p + "memory_per_agent", x.per_agent_mib, 2, "MiB", memory_target_mib, "< 200 MiB");
    reported(p + "supervisor_memory_per_agent", x.sup_per_agent / 1024.0, 1, "KiB");
    below(p + "supervisor_cpu", x.cpu_percent, 1, "%", cpu_target_percent, "< 80 % of one CPU");
  }

  std::string out;
  json::writer w{out};
  w.begin_object()
    .field("benchmark", "concurrent")
    .field("timestamp", started)
    .field("wall_seconds", round_to(wall_s, 1));
  write_machine(w, cg, cpu_start, sample_cpu(), wall_s);
  w.field("backend", "sandbox").key("config").begin_object().key("agents").begin_array();
  for (int n : o.agents)
    w.value(n);
  w.end_array()
    .field("ops_per_agent", ops_per_agent)
    .field("workload", "write_file 64 B, read_file, write_file 8 lines, list_directory, read_file, "
                       "search, write_file 16 lines, read_file, list_directory, execute_command "
                       "/bin/true; each agent's calls in sequence, all agents at once")
    .field("agent_memory_limit_mb", host::agent_memory_mb)
    .field("agent_workspace_mb", host::agent_workspace_mb)
    .field("agent_hang_timeout_ms", host::agent_hang_timeout_ms)
    .field("restart", "temporary (an agent that goes down fails the run)")
    .field("peers", o.peers)
    .field("clock", "steady_clock (CLOCK_MONOTONIC)")
    .end_object();
  write_metrics(w, metrics);
  w.key("rounds").begin_array();
  for (size_t i = 0; i < rounds.size(); ++i) {
    const auto& d = rounds[i];
    const auto& x = ds[i];
    std::vector<double> spawn, exec, cleanup;
    for (const auto& a : d.agents) {
      spawn.push_back(a.spawn_ms);
      exec.push_back(a.exec_ms);
      cleanup.push_back(a.cleanup_ms);
    }
    w.begin_object()
      .field("agents", d.n)
      .field("ops", d.ops)
      .field("total_ms", round_to(x.total_ms, 2))
      .key("phase_wall_ms").begin_object()
      .field("spawn", round_to(d.phase_wall_ms[0], 2))
      .field("execute", round_to(d.phase_wall_ms[1], 2))
      .field("cleanup", round_to(d.phase_wall_ms[2], 2))
      .end_object();
    auto series = [&](const char* key, const char* what, const std::vector<double>& v) {
      w.key(key).begin_object().field("unit", "ms").field("measured", what);
      write_stats(w, summarize(v), 3);
      w.end_object();
    };
    series("spawn", "start request -> agent_info (guest ready), every agent's request sent at once",
           spawn);
    series("execute", "the agent's first call sent -> its last result, its calls in sequence",
           exec);
    series("cleanup", "stop request -> answer (exit reaped, cgroup and workspace removed)", cleanup);
    w.field("throughput_ops_per_min", round_to(x.throughput, 0))
      .field("throughput_ops_per_min_execute_phase", round_to(x.throughput_exec, 0))
      .key("memory").begin_object()
      .field("supervisor_rss_before_bytes", d.rss_before)
      .field("supervisor_rss_live_bytes", d.rss_live)
      .field("supervisor_rss_peak_bytes", d.rss_peak)
      .field("supervisor_bytes_per_agent", round_to(x.sup_per_agent, 0))
      .field("guest_cgroup_bytes_sum", round_to(d.guest_sum, 0))
      .field("guest_cgroup_peak_bytes_sum", round_to(d.guest_peak_sum, 0))
      .field("guest_bytes_per_agent", round_to(x.guest_per_agent, 0))
      .field("peak_mib", round_to(x.peak_mib, 1))
      .field("host_memavailable_drop_per_agent_bytes",
             round_to((static_cast<double>(d.avail_before) - static_cast<double>(d.avail_live)) / d.n, 0))
      .field("measured", "supervisor: VmRSS before and with every agent live, VmHWM over the "
                         "count (reset at its start); guests: each cgroup's usage after the "
                         "workload, and the sum of each cgroup's own peak; host: MemAvailable's "
                         "drop from before the spawns to every agent live")
      .end_object()
      .key("cpu").begin_object()
      .field("supervisor_seconds", round_to(d.phase_cpu_s[0] + d.phase_cpu_s[1] + d.phase_cpu_s[2], 2))
      .field("supervisor_percent_of_one_cpu", round_to(x.cpu_percent, 1))
      .field("machine_busy_percent", round_to(x.machine_busy, 1))
      .field("measured", "supervisor: /proc/self/stat utime + stime over the three phases; "
                         "machine: /proc/stat, every process (template and guests included)")
      .end_object();
    w.key("peers").begin_object();
    for (const auto& [name, ms] : d.peer_ms)
      w.key(name).begin_object()
        .field("wall_ms", round_to(ms, 2))
        .field("agentvisor_spawn_phase_over_peer", round_to(d.phase_wall_ms[0] / ms, 3))
        .end_object();
    w.end_object();
    w.end_object();
  }
  w.end_array();
  w.key("peers").begin_object().field("enabled", o.peers);
  if (o.peers) {
    w.field("measured", "for each count, that many runs of the peer started at once and all "
                        "reaped (wall time), beside our spawn phase (every agent started and ready)");
    w.key("spawn").begin_object();
    for (const auto& p : peers) {
      w.key(p.name).begin_object().field("available", p.available);
      if (p.available)
        w.field("command", p.command);
      else
        w.field("reason", p.reason);
      w.end_object();
    }
    w.end_object();
  }
  w.end_object();
  w.end_object();
  out += '\n';
  return out;
}

} // namespace

std::optional<std::vector<int>> parse_agent_counts(std::string_view text, std::string* error) {
  std::vector<int> out;
  if (text.empty()) {
    *error = "--agents: expected a comma-separated list of counts, e.g. 5,10,25";
    return std::nullopt;
  }
  while (true) {
    auto comma = text.find(',');
    auto item = text.substr(0, comma);
    int n = 0;
    auto r = std::from_chars(item.data(), item.data() + item.size(), n);
    if (item.empty() || r.ec != std::errc{} || r.ptr != item.data() + item.size() || n < 1
        || n > max_concurrent_agents) {
      *error = "--agents: \"" + std::string{item} + "\" is not a count from 1 to "
               + std::to_string(max_concurrent_agents);
      return std::nullopt;
    }
    out.push_back(n);
    if (comma == std::string_view::npos)
      break;
    text.remove_prefix(comma + 1);
  }
  return out;
}

int run_concurrent(const concurrent_options& o) {
  if (auto why = sandboxes_unavailable()) {
    std::fprintf(stderr, "agentvisor bench concurrent: %s; skipping\n", why->c_str());
    return exit_skipped;
  }
  prepare_process(on_stop);

  auto started = iso8601_utc_now();
  auto cpu_start = sample_cpu();
  auto t_start = clock_type::now();
  std::vector<round_data> rounds;
  std::vector<peer_info> peers;
  std::string text;
  try {
    std::unique_ptr<peer_runner> runner;
    if (o.peers) {
      runner = peer_runner::start(); // before any thread starts
      peers = runner->peers();
    }
    int max_n = *std::max_element(o.agents.begin(), o.agents.end());
    std::string cg;
    {
      host h{"bench-conc", max_n, o.guest_binary};
      cg = h.cgroup_version();
      progress prog{o.quiet};
      auto sp = h.report_spawner();
      struct stopper {
        host& h;
        caf::actor sp;
        ~stopper() { h.stop_spawner(sp); }
      } stop{h, sp};
      for (int n : o.agents) {
        rounds.push_back(run_round(h, sp, n, prog));
        if (runner)
          for (size_t k = 0; k < peers.size(); ++k)
            if (peers[k].available) {
              if (!o.quiet && ::isatty(2))
                std::fprintf(stderr, "\r\033[K%d x %s at once", n, peers[k].name.c_str());
              rounds.back().peer_ms.emplace_back(peers[k].name, runner->run_concurrent(k, n));
            }
        prog.clear();
        if (!o.quiet && ::isatty(2))
          std::fputs("\r\033[K", stderr);
        // Let the torn-down agents' kernel objects go before the next count.
        std::this_thread::sleep_for(200ms);
      }
    }
    double wall_s = ms_between(t_start, clock_type::now()) / 1000.0;
    text = report(o, cg, started, cpu_start, wall_s, rounds, peers,
                  static_cast<int>(workload().size()));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\nagentvisor bench concurrent: %s\n", e.what());
    return g_stop ? 130 : exit_run_failed;
  }
  if (!write_output(o.out, text)) {
    std::fprintf(stderr, "agentvisor bench concurrent: cannot write %s: %s\n",
                 o.out.empty() ? "stdout" : o.out.c_str(), std::strerror(errno));
    return exit_run_failed;
  }
  return exit_measured;
}

} // namespace agentvisor::bench

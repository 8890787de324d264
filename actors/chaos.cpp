// The chaos runner (chaos.hpp): starting -> running -> settling, each a
// behaviour. Everything it measures comes from messages: the answers to its
// own requests and the spawner's agent_events.

#include "chaos.hpp"

#include "chaos_remote.hpp"
#include "spawner.hpp"

#include "agentvisor/log.hpp"
#include "agentvisor/messages.hpp"
#include "agentvisor/task.hpp"

#include <caf/all.hpp>

#include <cstring>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <map>
#include <random>

namespace agentvisor {

namespace {

using clock_type = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Self-messages.
using load_tick_atom = caf::atom_constant<caf::atom("ch_load")>;
using inject_atom = caf::atom_constant<caf::atom("ch_inject")>;
using end_atom = caf::atom_constant<caf::atom("ch_end")>;
using settle_tick_atom = caf::atom_constant<caf::atom("ch_settle")>;

/// The workload's pace: calls go out in small batches every tick.
constexpr auto load_tick = milliseconds(10);
/// Answers to calls and faults may take this much beyond their own timeout.
constexpr auto margin = milliseconds(5000);
/// How often a fault held for a target that is not ready looks again.
constexpr auto hold_tick = milliseconds(50);

struct runner_state {
  chaos_context ctx;
  chaos_options opts;
  std::function<void(chaos::run_log)> done;
  chaos::run_log log;
  clock_type::time_point t0;
  /// Agent index -> agent id.
  std::vector<std::string> agents;
  std::map<std::string, bool> ready;
  /// An agent's down not yet followed by its ready: when, and why.
  std::map<std::string, std::pair<double, std::string>> last_down;
  std::mt19937_64 rng;
  std::vector<std::pair<std::string, double>> tools; // cumulative weights
  double call_credit = 0;
  uint64_t outstanding = 0;
  uint64_t next_agent = 0;
  clock_type::time_point settle_deadline;
  double last_progress = -1;
  double last_so_far = -100;
  std::string so_far; ///< the progress line's invariants part
  static inline const char* name = "chaos_runner";
};

using self_ptr = caf::stateful_actor<runner_state>*;

double since_start(const runner_state& st, clock_type::time_point t) {
  return std::chrono::duration<double>(t - st.t0).count();
}

double now_s(const runner_state& st) {
  return since_start(st, clock_type::now());
}

std::string iso_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

void sample_ready(runner_state& st) {
  auto n = std::count_if(st.ready.begin(), st.ready.end(), [](auto& kv) { return kv.second; });
  st.log.ready.push_back({now_s(st), static_cast<uint32_t>(n)});
}

// --- the workload ----------------------------------------------------------------

tool_call make_call(runner_state& st, const std::string& tool) {
  tool_call c;
  c.tool = tool;
  c.retryable = st.opts.scenario.retryable;
  c.timeout_ms = st.opts.scenario.call_timeout_ms;
  if (tool == "read_file")
    c.args_json = R"({"path":"chaos.txt"})";
  else if (tool == "write_file")
    c.args_json = R"({"path":"chaos.txt","content":"chaos run"})";
  else if (tool == "search")
    c.args_json = R"({"pattern":"chaos","path":"."})";
  else if (tool == "execute_command")
    c.args_json = R"({"argv":["/bin/true"]})";
  else
    c.args_json = "{}";
  return c;
}

const std::string& pick_tool(runner_state& st) {
  double total = st.tools.back().second;
  double x = std::uniform_real_distribution<double>(0, total)(st.rng);
  for (auto& [name, cum] : st.tools)
    if (x < cum)
      return name;
  return st.tools.back().first;
}

void send_call(self_ptr self) {
  auto& st = self->state;
  const auto& id = st.agents[st.next_agent++ % st.agents.size()];
  auto call = make_call(st, pick_tool(st));
  ++st.log.calls.sent;
  ++st.outstanding;
  auto timeout = milliseconds(call.timeout_ms) * 2 + margin; // a retry may follow
  self->request(st.ctx.spawner, timeout, call_atom::value, id, std::move(call))
    .then(
      [self](tool_result& r) {
        auto& s = self->state;
        --s.outstanding;
        ++s.log.calls.ok;
        if (r.attempts > 1)
          ++s.log.calls.retried;
      },
      [self](caf::error&) {
        auto& s = self->state;
        --s.outstanding;
        ++s.log.calls.failed;
      });
}

void on_load_tick(self_ptr self) {
  auto& st = self->state;
  st.call_credit += st.opts.scenario.calls_per_s * std::chrono::duration<double>(load_tick).count();
  for (; st.call_credit >= 1; st.call_credit -= 1)
    send_call(self);
  self->delayed_send(self, load_tick, load_tick_atom::value);
}

// --- faults ----------------------------------------------------------------------

chaos::fault_record& record_of(self_ptr self, std::size_t i) {
  return self->state.log.faults[i];
}

void skip(self_ptr self, std::size_t i, std::string why) {
  auto& r = record_of(self, i);
  r.skipped = true;
  r.skipped_reason = std::move(why);
  log::agent(r.agent_id).info("chaos: fault {} skipped: {}", r.fault.id, r.skipped_reason);
}

/// Sends a fault through the spawner's fault route; a refusal skips it.
void via_spawner(self_ptr self, std::size_t i, fault_request f) {
  auto& st = self->state;
  auto id = record_of(self, i).agent_id;
  auto timeout = milliseconds(uint64_t{f.ms} + st.opts.scenario.call_timeout_ms) + margin;
  self->request(st.ctx.spawner, timeout, fault_atom::value, id, std::move(f))
    .then([](tool_result&) {},
          [self, i](caf::error& err) {
            auto& r = record_of(self, i);
            // A fault that ends its agent may answer agent_down: it landed.
            if (!r.down_reason && view(err).code != errc::agent_down)
              skip(self, i, view(err).message);
          });
}

/// Arms a spawn fault in the backend, then kills the target so that its
/// restart is the spawn that fails or waits.
void via_backend(self_ptr self, std::size_t i, spawn_fault sf) {
  auto& st = self->state;
  self->request(st.ctx.backend, milliseconds(5000), spawn_fault_atom::value, sf)
    .then(
      [self, i](uint32_t) {
        if (auto& m = self->state.ctx.metrics)
          m->fault_injected(metrics::fault_kind_from(chaos::to_string(record_of(self, i).fault.kind)));
        via_spawner(self, i, fault_request{"kill", 0, 0, {}});
      },
          [self, i](caf::error& err) { skip(self, i, caf::to_string(err)); });
}

void pressure(self_ptr self, std::size_t i) {
  auto& st = self->state;
  auto ms = record_of(self, i).fault.duration_ms;
  self->request(st.ctx.governor, milliseconds(5000), get_atom::value)
    .then(
      [self, i, ms](governor_state& g) {
        // Half of what the agents use now: the governor must evict.
        uint64_t budget = std::max<uint64_t>(g.memory_in_use_bytes / 2, 1 << 20);
        self->request(self->state.ctx.governor, milliseconds(5000), pressure_atom::value, budget,
                      ms)
          .then([] {}, [self, i](caf::error& err) { skip(self, i, caf::to_string(err)); });
      },
      [self, i](caf::error& err) { skip(self, i, caf::to_string(err)); });
}

/// A remote run: the fault by its kind through the supervisor's fault
/// routes, which take the same paths as the functions above.
void via_remote(self_ptr self, std::size_t i) {
  auto& st = self->state;
  const auto& f = record_of(self, i).fault;
  auto timeout = milliseconds(uint64_t{f.duration_ms} + st.opts.scenario.call_timeout_ms)
                 + margin + milliseconds(60000);
  auto on_error = [self, i](caf::error& err) {
    auto& r = record_of(self, i);
    if (!r.down_reason && view(err).code != errc::agent_down)
      skip(self, i, view(err).message);
  };
  if (f.kind == chaos::fault_kind::governor_pressure) {
    self->request(st.ctx.remote, timeout, pressure_atom::value, f.duration_ms)
      .then([](std::string&) {}, on_error);
    return;
  }
  // crash: exit(3) on odd fault ids, abort() on even ones, as in process.
  self->request(st.ctx.remote, timeout, fault_atom::value, record_of(self, i).agent_id,
                std::string{chaos::to_string(f.kind)}, f.duration_ms, f.id % 2 == 0)
    .then([](std::string&) {}, on_error);
}

bool is_spawn_fault(chaos::fault_kind k) {
  return k == chaos::fault_kind::spawn_failure || k == chaos::fault_kind::slow_spawn;
}

/// Another spawn fault on this agent is armed and not yet met: its trigger
/// kill's restart has not failed (spawn_failure) or served again
/// (slow_spawn). The backend queues faults per agent, but two trigger kills
/// landing on one incarnation make one restart, which meets only the
/// first: the second would wait for some later, unrelated restart.
bool spawn_fault_pending(const runner_state& st, const chaos::fault_record& r) {
  for (const auto& o : st.log.faults) {
    if (&o == &r || o.agent_id != r.agent_id || !is_spawn_fault(o.fault.kind) || o.skipped
        || o.injected_s <= 0)
      continue;
    bool met = o.fault.kind == chaos::fault_kind::spawn_failure ? o.down_reason.has_value()
                                                                  : o.recovered_s.has_value();
    if (!met)
      return true;
  }
  return false;
}

void inject(self_ptr self, std::size_t i) {
  auto& st = self->state;
  auto& r = record_of(self, i);
  // A fault whose target is down (restarting, or waiting out its backoff)
  // is held until the target serves again rather than skipped: under
  // thousands of faults most targets are caught restarting now and then.
  // Held for at most recover_within_ms: an agent not back by then is the
  // `recovered` invariant's business, and the fault is skipped. A spawn
  // fault also waits for the one before it on its agent to be met.
  if (!r.agent_id.empty()
      && (!st.ready[r.agent_id] || (is_spawn_fault(r.fault.kind) && spawn_fault_pending(st, r)))) {
    double held_s = now_s(st) - r.fault.at_s;
    if (held_s * 1000 > st.opts.scenario.recover_within_ms)
      return skip(self, i, "target " + r.agent_id
                             + (st.ready[r.agent_id] ? " still had an earlier spawn fault armed after "
                                                     : " not ready for ")
                             + std::to_string(static_cast<uint64_t>(held_s * 1000)) + " ms");
    self->delayed_send(self, hold_tick, inject_atom::value, uint64_t{i});
    return;
  }
  r.injected_s = now_s(st);
  const auto& f = r.fault;
  log::agent(r.agent_id.empty() ? "-" : r.agent_id)
    .warn("chaos: fault {} {} at {:.3f} s", f.id, chaos::to_string(f.kind), r.injected_s);
  if (st.ctx.remote)
    return via_remote(self, i);
  using chaos::fault_kind;
  switch (f.kind) {
    case fault_kind::kill: return via_spawner(self, i, {"kill", 0, 0, {}});
    case fault_kind::hang: return via_spawner(self, i, {"hang", 0, 0, {}});
    case fault_kind::partition: return via_spawner(self, i, {"partition", 0, f.duration_ms, {}});
    case fault_kind::crash:
      // Both ways a guest can crash by itself, alternating.
      return via_spawner(self, i, f.id % 2 ? fault_request{"exit", 3, 0, {}}
                                           : fault_request{"abort", 0, 0, {}});
    case fault_kind::oom: return via_spawner(self, i, {"oom", 0, 0, {}});
    case fault_kind::cpu_hog: return via_spawner(self, i, {"cpu_hog", 0, f.duration_ms, {}});
    case fault_kind::disk_fill: return via_spawner(self, i, {"disk_fill", 0, 0, {}});
    case fault_kind::fork_bomb: return via_spawner(self, i, {"fork_bomb", 0, 0, {}});
    // Armed for the target alone: whoever else restarts meanwhile spawns.
    case fault_kind::spawn_failure:
      return via_backend(self, i, spawn_fault{1, true, 0, {}, r.agent_id});
    case fault_kind::slow_spawn:
      return via_backend(self, i, spawn_fault{1, false, f.duration_ms, {}, r.agent_id});
    case fault_kind::governor_pressure: return pressure(self, i);
  }
}

// --- events ----------------------------------------------------------------------

/// The fault records that still wait for this agent's down.
bool awaits_down(const chaos::fault_record& r, const std::string& agent, const std::string& reason) {
  if (r.skipped || r.down_reason || r.injected_s <= 0 || r.agent_id != agent)
    return false;
  // The spawn faults' trigger is a kill: the restart's failure is the event.
  if (r.fault.kind == chaos::fault_kind::spawn_failure)
    return reason == "spawn_failed";
  return true;
}

void on_event(self_ptr self, const agent_event& ev) {
  auto& st = self->state;
  auto t = since_start(st, clock_type::time_point{std::chrono::nanoseconds{ev.at_ns}});
  if (ev.kind == agent_event_kind::down) {
    st.ready[ev.agent_id] = false;
    st.last_down[ev.agent_id] = {t, ev.reason};
    for (auto& r : st.log.faults)
      if (awaits_down(r, ev.agent_id, ev.reason)) {
        r.down_reason = ev.reason;
        r.detected_s = t;
      }
  } else {
    st.ready[ev.agent_id] = true;
    if (auto d = st.last_down.find(ev.agent_id); d != st.last_down.end()) {
      st.log.restarts.push_back({ev.agent_id, d->second.first, t,
                                 ev.failures > 0 ? ev.failures - 1 : 0, d->second.second});
      st.last_down.erase(d);
    }
    for (auto& r : st.log.faults)
      if (r.agent_id == ev.agent_id && r.down_reason && !r.recovered_s)
        r.recovered_s = t;
  }
  sample_ready(st);
}

void progress(self_ptr self, bool final_line = false) {
  auto& st = self->state;
  if (!st.opts.progress)
    return;
  double t = now_s(st);
  if (!final_line && t - st.last_progress < 0.5)
    return;
  st.last_progress = t;
  auto injected = std::count_if(st.log.faults.begin(), st.log.faults.end(),
                                [](auto& r) { return r.injected_s > 0; });
  auto seen = std::count_if(st.log.faults.begin(), st.log.faults.end(),
                            [](auto& r) { return r.detected_s.has_value(); });
  // The invariants that can be judged while running, every few seconds
  // (a copy of the log's settled faults: cheap next to the run).
  if (final_line || t - st.last_so_far >= 5) {
    st.last_so_far = t;
    auto inv = chaos::check_so_far(st.opts.scenario, st.log, t);
    std::string failing;
    for (const auto& i : inv)
      if (!i.passed)
        failing += (failing.empty() ? "" : ", ") + i.name;
    st.so_far = failing.empty() ? std::to_string(inv.size()) + "/" + std::to_string(inv.size())
                                    + " invariants holding so far"
                                : "FAILING so far: " + failing;
  }
  std::fprintf(stderr, "\r\033[Kchaos %s: %6.1f / %.0f s, faults %ld/%zu injected, %ld downs seen, calls %lu sent, %lu ok, %lu failed; %s%s",
               st.opts.scenario.name.c_str(), t, st.opts.scenario.duration_s,
               static_cast<long>(injected), st.log.faults.size(), static_cast<long>(seen),
               static_cast<unsigned long>(st.log.calls.sent),
               static_cast<unsigned long>(st.log.calls.ok),
               static_cast<unsigned long>(st.log.calls.failed), st.so_far.c_str(),
               final_line ? "\n" : "");
}

// --- phases ----------------------------------------------------------------------

/// A remote run deletes its agents (DELETE /v1/agents/{id}), then is done.
void delete_agents(self_ptr self, std::size_t i) {
  auto& st = self->state;
  if (i >= st.agents.size()) {
    st.done(std::move(st.log));
    self->quit();
    return;
  }
  self->request(st.ctx.spawner, milliseconds(60000), stop_atom::value, st.agents[i])
    .then([self, i](agent_info&) { delete_agents(self, i + 1); },
          [self, i](caf::error& err) {
            auto& s = self->state;
            s.log.leftovers.push_back("agent " + s.agents[i] + " not deleted: " + view(err).message);
            delete_agents(self, i + 1);
          });
}

void finish(self_ptr self) {
  auto& st = self->state;
  st.log.elapsed_s = now_s(st);
  st.log.calls.unanswered = st.outstanding;
  sample_ready(st);
  progress(self, true);
  // The spawner's own count of calls, for the both-sides invariant.
  self->request(st.ctx.spawner, milliseconds(5000), calls_atom::value)
    .then(
      [self](uint64_t received, uint64_t answered) {
        auto& s = self->state;
        s.log.calls.supervisor_received = received;
        s.log.calls.supervisor_answered = answered;
        if (s.ctx.remote)
          return delete_agents(self, 0);
        s.done(std::move(s.log));
        self->quit();
      },
      [self](caf::error& err) {
        auto& s = self->state;
        spdlog::error("chaos: the spawner did not give its call counts: {}", caf::to_string(err));
        s.log.escalated = true; // it is gone: most likely it escalated
        if (s.ctx.remote)
          return delete_agents(self, 0);
        s.done(std::move(s.log));
        self->quit();
      });
}

/// Every call answered and every downed agent back, or the deadline.
bool settled(const runner_state& st) {
  if (st.outstanding > 0)
    return false;
  return std::all_of(st.ready.begin(), st.ready.end(), [](auto& kv) { return kv.second; });
}

/// SIGINT or SIGTERM (watched by the command): no more calls or faults,
/// no settling; the run ends now and the command tears the supervisor down
/// in order, so nothing of the run is left.
void interrupt(self_ptr self, const io::signal_received& sig);

caf::behavior settling(self_ptr self) {
  auto& st = self->state;
  // Faults still held for their target when the run ends (or not yet due,
  // when a signal ended it) never happen.
  for (std::size_t i = 0; i < st.log.faults.size(); ++i)
    if (auto& r = st.log.faults[i]; r.injected_s <= 0 && !r.skipped)
      skip(self, i, r.fault.at_s > now_s(st)
                      ? std::string{"the run ended before it was due"}
                      : "the run ended while its target " + r.agent_id + " was not ready");
  st.settle_deadline = clock_type::now()
                       + milliseconds(std::max(st.opts.scenario.recover_within_ms,
                                               st.opts.scenario.call_timeout_ms * 2))
                       + margin;
  self->send(self, settle_tick_atom::value);
  return {
    [self](const agent_event& ev) { on_event(self, ev); },
    [self](events_lost_atom, uint64_t n) { self->state.log.events_lost += n; },
    [self](settle_tick_atom) {
      auto& s = self->state;
      if (settled(s) || clock_type::now() >= s.settle_deadline)
        return finish(self);
      progress(self);
      self->delayed_send(self, milliseconds(50), settle_tick_atom::value);
    },
    [](load_tick_atom) {},
    [](inject_atom, uint64_t) {},
    [self](const io::signal_received& sig) { interrupt(self, sig); },
  };
}

void interrupt(self_ptr self, const io::signal_received& sig) {
  auto& st = self->state;
  if (st.log.interrupted_by != 0)
    return;
  st.log.interrupted_by = sig.signum;
  spdlog::warn("chaos: signal {} ({}): ending the run now", sig.signum, strsignal(sig.signum));
  self->become(settling(self));
  st.settle_deadline = clock_type::now(); // the first settle tick finishes
}

caf::behavior running(self_ptr self) {
  auto& st = self->state;
  st.t0 = clock_type::now();
  st.log.started_at = iso_now();
  for (const auto& id : st.agents)
    st.ready[id] = true;
  sample_ready(st);
  for (std::size_t i = 0; i < st.opts.plan.size(); ++i) {
    const auto& f = st.opts.plan[i];
    chaos::fault_record r;
    r.fault = f;
    if (f.kind != chaos::fault_kind::governor_pressure)
      r.agent_id = st.agents[f.agent % st.agents.size()];
    r.expected_reasons = chaos::expected_reasons(f.kind, f.duration_ms, st.opts.heartbeat_ms,
                                                 st.opts.hang_timeout_ms);
    st.log.faults.push_back(std::move(r));
    auto at = std::chrono::duration_cast<milliseconds>(std::chrono::duration<double>(f.at_s));
    self->delayed_send(self, at, inject_atom::value, uint64_t{i});
  }
  self->send(self, load_tick_atom::value);
  auto run_for = std::chrono::duration_cast<milliseconds>(
    std::chrono::duration<double>(st.opts.scenario.duration_s));
  self->delayed_send(self, run_for, end_atom::value);
  return {
    [self](const agent_event& ev) { on_event(self, ev); },
    [self](events_lost_atom, uint64_t n) { self->state.log.events_lost += n; },
    [self](load_tick_atom) {
      on_load_tick(self);
      progress(self);
    },
    [self](inject_atom, uint64_t i) { inject(self, i); },
    [self](end_atom) { self->become(settling(self)); },
    [self](const io::signal_received& sig) { interrupt(self, sig); },
  };
}

task<void> start_agents(self_ptr self) {
  auto& st = self->state;
  auto spawner = st.ctx.spawner;
  auto n = st.opts.scenario.agent_count;
  for (uint32_t i = 0; i < n; ++i) {
    agent_request req;
    req.name = "chaos-" + std::to_string(i);
    auto r = co_await ask<agent_info>(self, spawner, within{milliseconds(60000)}, start_atom::value,
                                      std::move(req));
    if (!r) {
      spdlog::error("chaos: agent {} of {} did not start: {}", i + 1, n, caf::to_string(r.error()));
      self->state.log.elapsed_s = 0;
      self->state.done(std::move(self->state.log));
      self->quit(r.error());
      co_return;
    }
    self->state.agents.push_back(r->id);
  }
  self->become(running(self));
}

caf::behavior starting(self_ptr self, chaos_context ctx, chaos_options opts,
                       std::function<void(chaos::run_log)> done) {
  auto& st = self->state;
  st.ctx = std::move(ctx);
  st.opts = std::move(opts);
  st.done = std::move(done);
  st.rng.seed(st.opts.seed ^ 0x9e3779b97f4a7c15ull); // the workload's own stream
  double cum = 0;
  for (auto& [tool, w] : st.opts.scenario.tools)
    if (w > 0)
      st.tools.emplace_back(tool, cum += w);
  if (st.tools.empty())
    st.tools.emplace_back("list_directory", 1);
  auto& lg = st.log;
  lg.scenario_name = st.opts.scenario.name;
  lg.seed = st.opts.seed;
  lg.backend = st.opts.scenario.backend;
  lg.max_restarts = st.opts.supervision.max_restarts;
  lg.period_ms = st.opts.supervision.period_ms;
  lg.min_backoff_ms = st.opts.supervision.min_backoff_ms;
  lg.max_backoff_ms = st.opts.supervision.max_backoff_ms;
  self->send(st.ctx.spawner, observe_atom::value, caf::actor_cast<caf::actor>(self));
  launch(self, start_agents(self));
  // Events before the run starts (the first readies) are not the run's.
  return {
    [](const agent_event&) {},
    [self](events_lost_atom, uint64_t n) { self->state.log.events_lost += n; },
  };
}

} // namespace

caf::actor spawn_chaos_runner(caf::actor_system& sys, chaos_context ctx, chaos_options opts,
                              std::function<void(chaos::run_log)> done) {
  return sys.spawn(starting, std::move(ctx), std::move(opts), std::move(done));
}

} // namespace agentvisor

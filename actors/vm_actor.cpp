// vm_actor: one agent machine from spawn to its end (vm_actor.hpp).
//
// Phases are behaviours: spawning -> ready <-> busy -> draining -> (quit),
// and failed (the machine is being killed or died) -> (quit). The actor
// quits only once the backend reported agent_exited (or never started the
// machine), so that the machine and its cgroup are gone when the parent
// sees the down_msg. Every call it accepted is answered before it quits.

#include "vm_actor.hpp"

#include "agentvisor/guest_session.hpp"
#include "agentvisor/io.hpp"
#include "agentvisor/log.hpp"
#include "agentvisor/task.hpp"

#include <caf/all.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstring>
#include <deque>
#include <map>
#include <optional>

namespace agentvisor {

namespace {

// Self-messages. Not part of the protocol: only the actor sends them.
using tick_atom = caf::atom_constant<caf::atom("vmtick")>;
using call_timeout_atom = caf::atom_constant<caf::atom("calltmo")>;
using grace_over_atom = caf::atom_constant<caf::atom("graceover")>;

using clock_type = std::chrono::steady_clock;
using ms = std::chrono::milliseconds;

struct queued_call {
  tool_call call;
  caf::response_promise rp;
  clock_type::time_point at = clock_type::now();
  /// A chaos fault riding the call machinery: not a tool call in metrics.
  bool fault = false;
};

struct vm_data {
  vm_context ctx;
  vm_options opts;
  guest::guest_session session;
  vm_state phase = vm_state::spawning;
  std::string id;
  io::handle_id channel = 0;
  bool channel_open = true;
  int pid = 0;
  std::string backend;
  /// The backend answered the spawn: it will send agent_exited.
  bool started = false;
  /// The guest's ready line arrived (possibly before agent_started).
  bool ready_seen = false;
  /// The spawn request is still out.
  bool spawn_pending = true;
  std::map<uint64_t, queued_call> in_flight; ///< guest call id -> caller
  std::deque<queued_call> queue;             ///< not sent to the guest yet
  clock_type::time_point born = clock_type::now();
  clock_type::time_point last_line = clock_type::now();
  clock_type::time_point last_usage = clock_type::now();
  /// When the machine must be gone by (failed/draining): then quit anyway.
  std::optional<clock_type::time_point> end_deadline;
  uint64_t memory_bytes = 0;
  uint64_t oom_kills = 0;
  uint32_t stop_grace_ms = 0;
  /// shut_machine ran (the last call's end and the grace timer both try).
  bool stop_sent = false;
  /// The first reason to end the machine. Unset when it died by itself:
  /// agent_exited then says why.
  std::optional<down_info> cause;
  /// Chaos: until then the channel drops every line, both ways.
  std::optional<clock_type::time_point> partitioned_until;
  /// When the last heartbeat arrived, for the heartbeat lag.
  std::optional<clock_type::time_point> last_beat;
  metrics::agent_series series;

  /// The state goes with the actor however it ends (even killed by CAF):
  /// its agent leaves the state gauge and its series go.
  ~vm_data() {
    if (auto& m = ctx.metrics) {
      m->agent_state(phase, std::nullopt);
      m->remove_agent(series);
    }
  }
  static inline const char* name = "vm_actor";
};

using self_ptr = caf::stateful_actor<vm_data>*;

down_info make_down(const vm_data& st, down_reason r, std::string detail) {
  down_info d;
  d.agent_id = st.id;
  d.reason = r;
  d.detail = std::move(detail);
  return d;
}

caf::error down_error(const vm_data& st, const down_info& d) {
  return make_error(errc::agent_down, "agent " + st.id + " went down: " + describe(d));
}

void tick_later(self_ptr self) {
  const auto& o = self->state.opts;
  // Fine enough for the watchdog and the deadlines, cheap at 1000 agents.
  uint32_t every = std::clamp<uint32_t>(std::min(o.hang_timeout_ms, o.ready_timeout_ms) / 4,
                                        20, 250);
  self->delayed_send(self, ms(every), tick_atom::value);
}

void set_phase(self_ptr self, vm_state p);
void shut_machine(self_ptr self);

/// Answers a call that was accepted, and counts it.
template <class T>
void answer(vm_data& st, queued_call& c, T&& x, metrics::call_outcome o) {
  if (auto& m = st.ctx.metrics; m && !c.fault) {
    m->tool_call(metrics::tool_from(c.call.tool), o, clock_type::now() - c.at);
    metrics::metrics::agent_tool_call(st.series);
  }
  c.rp.deliver(std::forward<T>(x));
}

/// A refused call that never reached the queue: counted, not timed.
caf::error refuse(const vm_data& st, const tool_call& call, caf::error err) {
  if (auto& m = st.ctx.metrics)
    m->tool_call(metrics::tool_from(call.tool), metrics::call_outcome::refused, {});
  return err;
}

// --- ending -------------------------------------------------------------------

/// Answers every call still held and quits with the down reason.
void finish(self_ptr self, down_info d) {
  auto& st = self->state;
  auto err = down_error(st, d);
  for (auto& [id, c] : st.in_flight)
    answer(st, c, err, metrics::call_outcome::agent_down);
  st.in_flight.clear();
  for (auto& c : st.queue)
    answer(st, c, err, metrics::call_outcome::agent_down);
  st.queue.clear();
  if (st.channel && st.channel_open)
    st.ctx.io->close(st.channel);
  st.channel_open = false;
  auto level = is_normal(d) ? spdlog::level::info : spdlog::level::warn;
  log::agent(st.id).log(level, "down: {}", describe(d));
  set_phase(self, is_normal(d) ? vm_state::stopped : vm_state::failed);
  if (auto& m = st.ctx.metrics) {
    m->agent_down(d.reason);
    if (d.reason == down_reason::spawn_failed)
      m->spawned(st.ctx.kind, metrics::spawn_result::failed, {});
  }
  self->quit(make_down_error(d));
}

/// Ends the machine for `d` (the first cause wins): kill it and wait for
/// agent_exited in the failed behaviour. New calls are refused from now on.
void fail(self_ptr self, down_info d);

/// What agent_exited says when nothing else decided the end.
down_info from_exit(const vm_data& st, const agent_exited& e) {
  if (e.oom)
    return make_down(st, down_reason::oom,
                     "OOM kill at limit " + std::to_string(st.opts.spec.memory_bytes)
                       + " bytes (peak " + std::to_string(e.peak_bytes) + ")");
  if (e.signal != 0) {
    auto d = make_down(st, down_reason::crashed,
                       "signal " + std::to_string(e.signal) + " (" + strsignal(e.signal) + ")");
    d.signal = e.signal;
    return d;
  }
  auto d = make_down(st, down_reason::exited, "exit code " + std::to_string(e.exit_code));
  d.exit_code = e.exit_code;
  return d;
}

void on_exited(self_ptr self, const agent_exited& e) {
  auto& st = self->state;
  st.started = false;
  down_info d = st.cause ? *st.cause : from_exit(st, e);
  if (st.cause && e.oom && d.reason != down_reason::oom)
    d.detail += " (and the OOM killer struck)";
  d.exit_code = e.exit_code;
  d.signal = e.signal;
  finish(self, std::move(d));
}

// --- calls --------------------------------------------------------------------

uint32_t timeout_of(const vm_data& st, const tool_call& c) {
  return c.timeout_ms ? c.timeout_ms : st.opts.call_timeout_ms;
}

/// A chaos partition is on: lines to and from the guest are lost.
bool partitioned(vm_data& st) {
  if (!st.partitioned_until)
    return false;
  if (clock_type::now() < *st.partitioned_until)
    return true;
  log::agent(st.id).info("chaos: partition over");
  st.partitioned_until.reset();
  return false;
}

/// Writes a line to the guest unless a partition loses it.
void to_guest(vm_data& st, std::string line) {
  if (!partitioned(st))
    st.ctx.io->write(st.channel, std::move(line));
}

/// Sends queued calls to the guest while the bound on calls in flight allows.
void dispatch(self_ptr self) {
  auto& st = self->state;
  while (!st.queue.empty() && st.in_flight.size() < st.opts.max_calls_in_flight) {
    auto c = std::move(st.queue.front());
    st.queue.pop_front();
    auto out = st.session.call(c.call.tool, c.call.args_json);
    if (!out) {
      answer(st, c, make_error(errc::bad_request, "agent " + st.id + ": " + out.err().message),
             metrics::call_outcome::refused);
      continue;
    }
    to_guest(st, std::move(out->line));
    self->delayed_send(self, ms(timeout_of(st, c.call)), call_timeout_atom::value, out->id);
    st.in_flight.emplace(out->id, std::move(c));
  }
  set_phase(self, st.in_flight.empty() ? vm_state::ready : vm_state::busy);
}

void accept_call(self_ptr self, tool_call& call, caf::response_promise rp) {
  auto& st = self->state;
  st.queue.push_back({std::move(call), std::move(rp)});
  if (st.phase == vm_state::ready || st.phase == vm_state::busy)
    dispatch(self);
}

/// Sends a chaos fault; reporting kinds wait for their result like calls.
void send_fault(self_ptr self, fault_request& f, caf::response_promise rp) {
  auto& st = self->state;
  auto kind = guest::fault_kind_from_string(f.kind);
  if (!kind) {
    rp.deliver(make_error(errc::bad_request, "agent " + st.id + ": unknown fault '" + f.kind
                                               + "' (exit, abort, oom, cpu_hog, disk_fill, "
                                                 "fork_bomb, garbage)"));
    return;
  }
  guest::fault g;
  g.kind = *kind;
  g.code = f.code;
  g.ms = f.ms;
  if (*kind == guest::fault_kind::garbage) {
    auto what = guest::garbage_kind_from_string(f.what);
    if (!what) {
      rp.deliver(make_error(errc::bad_request, "agent " + st.id + ": unknown garbage kind '"
                                                 + f.what + "'"));
      return;
    }
    g.what = *what;
  }
  auto out = st.session.fault(g);
  to_guest(st, std::move(out.line));
  log::agent(st.id).warn("fault injected: {}", f.kind);
  if (auto& m = st.ctx.metrics)
    m->fault_injected(metrics::fault_kind_from(f.kind));
  if (out.id == 0) {
    rp.deliver(tool_result{});
    return;
  }
  tool_call as_call{"fault " + f.kind, "{}", false, 0};
  self->delayed_send(self, ms(timeout_of(st, as_call)), call_timeout_atom::value, out.id);
  st.in_flight.emplace(out.id,
                       queued_call{std::move(as_call), std::move(rp), clock_type::now(), true});
  set_phase(self, vm_state::busy);
}

void on_result(self_ptr self, guest::call_result& r) {
  auto& st = self->state;
  auto it = st.in_flight.find(r.id);
  if (it == st.in_flight.end())
    return; // timed out already; the caller has its answer
  tool_result out;
  out.ok = r.ok;
  if (r.ok) {
    out.result_json = std::move(r.result_json);
  } else {
    out.error_code = std::string(guest::to_string(r.error.code));
    out.error_message = std::move(r.error.message);
  }
  answer(st, it->second, std::move(out),
         r.ok ? metrics::call_outcome::ok : metrics::call_outcome::tool_error);
  st.in_flight.erase(it);
  if (st.phase == vm_state::ready || st.phase == vm_state::busy)
    dispatch(self);
  else if (st.phase == vm_state::draining && st.in_flight.empty() && st.started)
    shut_machine(self); // the last call of a graceful stop is done
}

// --- the guest's lines --------------------------------------------------------

void become_ready(self_ptr self);

/// The heartbeat lag: how much later than heartbeat_ms after the previous
/// one this beat came.
void note_heartbeat(vm_data& st) {
  auto now = clock_type::now();
  if (auto& m = st.ctx.metrics; m && st.last_beat) {
    auto lag = (now - *st.last_beat) - ms(st.opts.spec.heartbeat_ms);
    m->heartbeat_lag(lag);
    metrics::metrics::agent_heartbeat_lag(st.series, lag);
    metrics::metrics::agent_memory(st.series, st.memory_bytes);
  }
  st.last_beat = now;
}

/// Feeds one event of the session; shared by every live phase.
void on_event(self_ptr self, guest::session_event& ev) {
  auto& st = self->state;
  std::visit(
    [&](auto& e) {
      using T = std::decay_t<decltype(e)>;
      if constexpr (std::is_same_v<T, guest::ready>) {
        st.ready_seen = true;
        if (st.started)
          become_ready(self);
      } else if constexpr (std::is_same_v<T, guest::heartbeat>) {
        st.memory_bytes = e.memory_bytes;
        note_heartbeat(st);
      } else if constexpr (std::is_same_v<T, guest::call_result>) {
        on_result(self, e);
      } else if constexpr (std::is_same_v<T, guest::protocol_error>) {
        // The guest refused a line of ours: a host bug, not the guest's.
        log::agent(st.id).error("the guest refused a host line: {}", e.message);
      } else if constexpr (std::is_same_v<T, guest::channel_closed>) {
        st.channel_open = false;
        // The guest is dying; agent_exited will say how. If it does not
        // come, the machine is killed after a grace period.
        if (!st.end_deadline)
          st.end_deadline = clock_type::now() + ms(2000);
      } else {
        (void) e; // hello, bye: the session checks their order
      }
    },
    ev);
}

void on_line(self_ptr self, io::stream_line& m) {
  auto& st = self->state;
  if (st.session.failed())
    return; // acted on the first protocol error already
  if (partitioned(st))
    return; // lost on the way: the watchdog sees silence
  st.last_line = clock_type::now();
  auto ev = st.session.on_line(m.line);
  if (!ev)
    return fail(self, make_down(st, down_reason::protocol_error, ev.err().message));
  on_event(self, *ev);
}

void on_closed(self_ptr self, io::stream_closed& m) {
  auto& st = self->state;
  st.channel_open = false;
  if (st.session.failed())
    return;
  auto ev = st.session.on_closed(m.reason);
  if (!ev)
    return fail(self, make_down(st, down_reason::protocol_error, ev.err().message));
  on_event(self, *ev);
}

// --- usage and the watchdog ---------------------------------------------------

void poll_usage(self_ptr self) {
  auto& st = self->state;
  if (!st.started || st.opts.usage_interval_ms == 0)
    return;
  auto now = clock_type::now();
  if (now - st.last_usage < ms(st.opts.usage_interval_ms))
    return;
  st.last_usage = now;
  self->request(st.ctx.backend, ms(1000), usage_atom::value, st.id)
    .then([self](agent_usage& u) {
      auto& s = self->state;
      s.memory_bytes = u.memory_bytes;
      metrics::metrics::agent_memory(s.series, u.memory_bytes);
      if (s.ctx.metrics && u.machine_memory_bytes > 0)
        s.ctx.metrics->agent_machine_available(s.series, s.id, u.machine_available_bytes);
      if (s.ctx.governor)
        self->send(s.ctx.governor, std::move(u));
    },
          [](caf::error&) {}); // the agent is going; its exit says why
}

void on_tick(self_ptr self) {
  auto& st = self->state;
  auto now = clock_type::now();
  if (st.end_deadline && now >= *st.end_deadline) {
    if (st.phase == vm_state::failed || st.phase == vm_state::draining) {
      // The backend kills what it was told to kill; agent_exited is late.
      // Quitting hands the machine to the backend's owner watch.
      log::agent(st.id).error("no exit report from the backend in time; giving up on it");
      auto d = st.cause ? *st.cause
                        : make_down(st, down_reason::crashed, "its channel closed");
      return finish(self, d);
    }
    return fail(self, make_down(st, down_reason::crashed,
                                "its channel closed and it did not exit"));
  }
  switch (st.phase) {
    case vm_state::spawning:
      if (now - st.born > ms(st.opts.ready_timeout_ms))
        return fail(self, make_down(st, down_reason::spawn_failed,
                                    "no ready line within "
                                      + std::to_string(st.opts.ready_timeout_ms) + " ms"));
      break;
    case vm_state::ready:
    case vm_state::busy:
    case vm_state::draining:
      if (st.channel_open && now - st.last_line > ms(st.opts.hang_timeout_ms))
        return fail(self, make_down(st, down_reason::hung,
                                    "no line from the guest for "
                                      + std::to_string(st.opts.hang_timeout_ms)
                                      + " ms (heartbeat every "
                                      + std::to_string(st.opts.spec.heartbeat_ms) + " ms)"));
      break;
    default:
      break;
  }
  poll_usage(self);
  tick_later(self);
}

void on_call_timeout(self_ptr self, uint64_t id) {
  auto& st = self->state;
  auto it = st.in_flight.find(id);
  if (it == st.in_flight.end())
    return;
  answer(st, it->second,
         make_error(errc::timeout, "agent " + st.id + ": " + it->second.call.tool
                                     + " got no result within "
                                     + std::to_string(timeout_of(st, it->second.call)) + " ms"),
         metrics::call_outcome::timeout);
  st.in_flight.erase(it);
  if (st.phase == vm_state::ready || st.phase == vm_state::busy)
    dispatch(self);
}

void on_oom(self_ptr self, agent_oom& e) {
  auto& st = self->state;
  ++st.oom_kills;
  if (auto& m = st.ctx.metrics)
    m->oom_kill();
  if (st.ctx.governor)
    self->send(st.ctx.governor, e);
  if (st.ctx.parent)
    self->send(st.ctx.parent, e);
}

agent_info info_of(const vm_data& st) {
  agent_info i;
  i.id = st.id;
  i.state = st.phase;
  i.backend = st.backend;
  i.oom_kills = st.oom_kills;
  i.memory_bytes = st.memory_bytes;
  i.memory_limit_bytes = st.opts.spec.memory_bytes;
  i.pids_limit = st.opts.spec.pids;
  i.pid = st.pid;
  i.calls_in_flight = static_cast<uint32_t>(st.in_flight.size());
  i.calls_queued = static_cast<uint32_t>(st.queue.size());
  return i;
}

// --- behaviours ---------------------------------------------------------------

/// What every phase answers the same way.
caf::message_handler common(self_ptr self) {
  return {
    [=](get_atom) { return info_of(self->state); },
    [=](io::stream_line& m) { on_line(self, m); },
    [=](io::stream_closed& m) { on_closed(self, m); },
    [=](agent_oom& e) { on_oom(self, e); },
    [=](agent_exited& e) { on_exited(self, e); },
    [=](tick_atom) { on_tick(self); },
    [=](call_timeout_atom, uint64_t id) { on_call_timeout(self, id); },
    [=](kill_atom, down_reason r, std::string& detail) {
      fail(self, make_down(self->state, r, std::move(detail)));
    },
    [=](partition_atom, uint32_t duration_ms) {
      auto& st = self->state;
      log::agent(st.id).warn("chaos: partition for {} ms", duration_ms);
      st.partitioned_until = clock_type::now() + ms(duration_ms);
    },
    [=](io::io_failed& m) {
      log::agent(self->state.id).warn("I/O command {} failed: {}", m.id, m.what);
    },
  };
}

caf::error stopping(const vm_data& st) {
  return make_error(errc::draining, "agent " + st.id + " is stopping");
}

caf::behavior draining_behavior(self_ptr self) {
  return caf::message_handler{
    [=](call_atom, tool_call& c) -> caf::result<tool_result> {
      return refuse(self->state, c, stopping(self->state));
    },
    [=](stop_atom, uint32_t) {}, // already stopping
    [=](fault_atom, fault_request&) -> caf::result<tool_result> {
      return stopping(self->state);
    },
    [=](grace_over_atom) { shut_machine(self); },
  }
    .or_else(common(self));
}

/// The answer to anything asked of an agent that is going down.
caf::error going_down(const vm_data& st) {
  return down_error(st, st.cause ? *st.cause
                                 : make_down(st, down_reason::crashed, "it is going down"));
}

caf::behavior failed_behavior(self_ptr self) {
  return caf::message_handler{
    [=](call_atom, tool_call& c) -> caf::result<tool_result> {
      return refuse(self->state, c, going_down(self->state));
    },
    [=](stop_atom, uint32_t) {},
    [=](fault_atom, fault_request&) -> caf::result<tool_result> {
      return going_down(self->state);
    },
    [=](grace_over_atom) {},
  }
    .or_else(common(self));
}

/// Graceful stop: refuse new calls, give calls in flight the grace period.
void begin_stop(self_ptr self, uint32_t grace_ms) {
  auto& st = self->state;
  st.cause = make_down(st, down_reason::stopped, "stopped on request");
  st.stop_grace_ms = grace_ms;
  auto err = stopping(st);
  for (auto& c : st.queue)
    answer(st, c, err, metrics::call_outcome::refused);
  st.queue.clear();
  set_phase(self, vm_state::draining);
  self->become(draining_behavior(self));
  if (!st.started)
    return; // the spawn's answer ends it (spawn_machine)
  if (st.in_flight.empty())
    shut_machine(self);
  else
    self->delayed_send(self, ms(grace_ms), grace_over_atom::value);
}

caf::behavior live_behavior(self_ptr self) {
  return caf::message_handler{
    [=](call_atom, tool_call& call) {
      // The promise owns the answer from here on (dispatch, result,
      // timeout or the agent's end deliver it).
      auto rp = self->make_response_promise();
      accept_call(self, call, rp);
      return rp;
    },
    [=](stop_atom, uint32_t grace_ms) { begin_stop(self, grace_ms); },
    [=](fault_atom, fault_request& f) {
      auto rp = self->make_response_promise();
      auto& st = self->state;
      if (st.phase == vm_state::spawning)
        rp.deliver(make_error(errc::draining, "agent " + st.id + " is not ready yet"));
      else
        send_fault(self, f, rp);
      return rp;
    },
    [=](grace_over_atom) {},
  }
    .or_else(common(self));
}

void set_phase(self_ptr self, vm_state p) {
  auto& st = self->state;
  if (st.phase == p)
    return;
  if (auto& m = st.ctx.metrics)
    m->agent_state(st.phase, p);
  st.phase = p;
}

void become_ready(self_ptr self) {
  auto& st = self->state;
  if (st.phase != vm_state::spawning)
    return;
  auto spawn_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now() - st.born);
  log::agent(st.id).info("ready: pid {}, {} backend, {:.2f} ms after the spawn request", st.pid,
                         st.backend, spawn_ns.count() / 1e6);
  st.last_line = clock_type::now();
  if (auto& m = st.ctx.metrics)
    m->spawned(st.ctx.kind, metrics::spawn_result::ok, spawn_ns);
  if (st.ctx.parent)
    self->send(st.ctx.parent,
               agent_ready{st.id, st.pid, st.backend, static_cast<uint64_t>(spawn_ns.count())});
  dispatch(self); // sets ready or busy
}

/// Asks the guest to shut down and the backend to stop the machine; the
/// backend's agent_exited ends the actor.
void shut_machine(self_ptr self) {
  auto& st = self->state;
  if (st.stop_sent)
    return;
  st.stop_sent = true;
  if (st.channel && st.channel_open)
    st.ctx.io->write(st.channel, st.session.shutdown());
  self->send(st.ctx.backend, stop_atom::value, st.id, std::max<uint32_t>(st.stop_grace_ms, 100));
  st.end_deadline = clock_type::now() + ms(st.stop_grace_ms + 5000);
}

void fail(self_ptr self, down_info d) {
  auto& st = self->state;
  if (!st.cause)
    st.cause = d;
  if (st.phase == vm_state::failed)
    return;
  log::agent(st.id).warn("ending it: {}", describe(*st.cause));
  auto err = down_error(st, *st.cause);
  for (auto& c : st.queue)
    answer(st, c, err, metrics::call_outcome::agent_down);
  st.queue.clear();
  set_phase(self, vm_state::failed);
  self->become(failed_behavior(self));
  if (st.started) {
    self->send(st.ctx.backend, kill_atom::value, st.id);
    st.end_deadline = clock_type::now() + ms(5000);
  } else if (!st.spawn_pending) {
    finish(self, *st.cause);
  }
  // else: spawn_machine kills it once the spawn answers.
}

task<void> spawn_machine(self_ptr self) {
  auto& st = self->state;
  auto me = caf::actor_cast<caf::actor>(self);
  auto r = co_await ask<agent_started>(self, st.ctx.backend, within{ms(st.opts.ready_timeout_ms)},
                                       spawn_atom::value, st.opts.spec, me);
  auto& s = self->state;
  s.spawn_pending = false;
  if (!r) {
    // No machine runs (or, after a timeout, the backend kills it once it
    // sees this actor gone): nothing to wait for.
    auto d = s.cause ? *s.cause
                     : make_down(s, down_reason::spawn_failed, view(r.error()).message);
    co_return finish(self, d);
  }
  s.started = true;
  s.pid = r->pid;
  s.channel = r->channel;
  s.backend = r->backend;
  if (s.phase == vm_state::draining)
    co_return shut_machine(self);
  if (s.cause) { // failed while the spawn was out
    self->send(s.ctx.backend, kill_atom::value, s.id);
    s.end_deadline = clock_type::now() + ms(5000);
    co_return;
  }
  if (s.ready_seen)
    become_ready(self);
}

caf::behavior vm_actor_impl(self_ptr self, vm_context ctx, vm_options opts) {
  auto& st = self->state;
  st.id = opts.spec.id;
  st.ctx = std::move(ctx);
  st.opts = std::move(opts);
  if (st.opts.max_calls_in_flight == 0)
    st.opts.max_calls_in_flight = 1;
  if (auto& m = st.ctx.metrics) {
    m->agent_state(std::nullopt, st.phase);
    st.series = m->add_agent(st.id);
  }
  log::agent(st.id).debug("spawning: {} MiB, {} pids", st.opts.spec.memory_bytes >> 20,
                          st.opts.spec.pids);
  launch(self, spawn_machine(self));
  tick_later(self);
  return live_behavior(self);
}

} // namespace

caf::actor spawn_vm_actor(caf::actor_system& sys, vm_context ctx, vm_options opts) {
  return sys.spawn(vm_actor_impl, std::move(ctx), std::move(opts));
}

} // namespace agentvisor

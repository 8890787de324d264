// The spawner: Erlang/OTP supervision of vm_actors through monitors, the
// warm pool, and the one place where every tool call is answered exactly
// once. docs/supervision.md ("Spawner") describes the semantics; the
// comments here say why the code looks the way it does.

#include "spawner.hpp"

#include "backend_router.hpp"
#include "vm_actor.hpp"

#include "agentvisor/log.hpp"
#include "agentvisor/task.hpp"

#include <caf/all.hpp>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <tuple>
#include <utility>

namespace agentvisor {

std::chrono::milliseconds restart_backoff(const supervision_config& cfg, uint32_t failures,
                                          std::mt19937_64& rng) {
  // Doubles without overflow: 2^62 ms already exceeds any max_backoff.
  double base = std::min(static_cast<double>(cfg.max_backoff_ms),
                         cfg.min_backoff_ms * std::ldexp(1.0, static_cast<int>(std::min(failures, 62u))));
  std::uniform_real_distribution<double> u(0.0, 1.0);
  double jitter = 1.0 + std::max(0.0, cfg.random_factor) * u(rng);
  return std::chrono::milliseconds(static_cast<int64_t>(base * jitter));
}

namespace {

// Private messages of the spawner to itself.
using restart_atom = caf::atom_constant<caf::atom("restart")>;
using wait_down_atom = caf::atom_constant<caf::atom("waitdown")>;

using clock_type = std::chrono::steady_clock;
using std::chrono::milliseconds;

/// Added to a call's own timeouts before the spawner stops waiting for the
/// child: the child answers timeouts itself, this only catches a child that
/// never answers.
constexpr auto call_margin = milliseconds(5000);
/// How long get/list wait for a child's live state before using the record.
constexpr auto get_timeout = milliseconds(500);
/// Limits beyond which a request is a mistake, not a workload.
constexpr uint64_t max_memory_mb = 1ull << 20; // 1 TiB
constexpr uint32_t max_pids = 1u << 22;        // Linux's pid_max ceiling
constexpr uint32_t max_cpu_weight = 10000;     // cgroup v2 cpu.weight range
constexpr std::size_t max_name_len = 63;

/// Where a child is in its life. A child without an actor is granting or
/// restarting.
enum class phase : uint8_t { granting, spawning, ready, restarting, stopping };

struct pending_call {
  tool_call call;
  caf::typed_response_promise<tool_result> rp;
  uint32_t attempts = 1;
};

struct child {
  /// The agent's id (API, list, get, calls): the child's for its whole life.
  std::string id;
  std::string name;
  /// opts.spec.id is the *machine* id: the current vm_actor's, its cgroup's
  /// and its usage reports'. It equals `id` unless the child restarted on an
  /// adopted pool member, whose machine keeps the member's own id.
  vm_options opts;
  restart_type restart = restart_type::permanent;
  /// A warm pool member not handed out yet.
  bool pooled = false;
  phase ph = phase::granting;
  caf::actor actor;
  /// The id the governor's grant is held under (a machine id), empty when
  /// none is held: every release goes there, once.
  std::string grant_id;
  bool ever_ready = false;
  /// Bumped at each (re)spawn, so late grants and timers of an older
  /// incarnation are ignored.
  uint64_t generation = 0;
  uint32_t restarts = 0;
  /// Consecutive failures, the exponent of the backoff.
  uint32_t failures = 0;
  std::string last_down;
  uint64_t oom_kills = 0;
  clock_type::time_point ready_since;
  /// Stopped by request, shutdown or escalation: removed once down.
  bool remove_on_down = false;
  /// The stop request wants its last state after removal.
  bool stop_requested = false;
  /// Stopped by the supervisor to restart with its group (one_for_all,
  /// rest_for_one): its down is expected and triggers no strategy.
  bool in_group = false;
  std::vector<caf::typed_response_promise<agent_info>> start_waiters;
  std::deque<pending_call> queued;
  std::map<uint64_t, pending_call> in_flight;

  const std::string& machine() const {
    return opts.spec.id;
  }
};

struct spawner_state {
  spawner_context ctx;
  spawner_options opts;
  /// In start order; unique_ptr so that a child's address survives growth.
  std::vector<std::unique_ptr<child>> children;
  uint64_t next_id = 0;
  uint64_t next_call = 0;
  /// Restart times within the intensity window (all children).
  std::deque<clock_type::time_point> restart_times;
  std::mt19937_64 rng{std::random_device{}()};
  /// Our own wait_down requests, answered from the down handler.
  std::map<caf::actor_addr, std::vector<caf::response_promise>> down_waiters;
  /// Last state of children removed by a stop request, until answered.
  std::map<std::string, agent_info> stopped_info;
  bool draining = false;
  std::optional<caf::error> escalation;
  /// Told every agent_event (chaos runs).
  std::vector<caf::actor> observers;
  uint64_t calls_received = 0;
  uint64_t calls_answered = 0;

  static inline const char* name = "spawner";
};

using self_ptr = caf::stateful_actor<spawner_state>*;

// --- lookups ------------------------------------------------------------------

child* find(self_ptr self, const std::string& id) {
  for (auto& c : self->state.children)
    if (c->id == id)
      return c.get();
  return nullptr;
}

/// An assigned agent: pool members are internal and invisible to clients.
child* find_agent(self_ptr self, const std::string& id) {
  auto* c = find(self, id);
  return c != nullptr && !c->pooled ? c : nullptr;
}

child* find_by_actor(self_ptr self, const caf::actor_addr& addr) {
  for (auto& c : self->state.children)
    if (c->actor && c->actor.address() == addr)
      return c.get();
  return nullptr;
}

/// By machine id: what the governor (evict_request) and agent_oom name.
child* find_by_machine(self_ptr self, const std::string& machine) {
  for (auto& c : self->state.children)
    if (c->machine() == machine)
      return c.get();
  return nullptr;
}

bool is_live_child(self_ptr self, const caf::actor& a) {
  return find_by_actor(self, a.address()) != nullptr;
}

// --- records ------------------------------------------------------------------

vm_state state_of(phase p) {
  switch (p) {
    case phase::ready: return vm_state::ready;
    case phase::stopping: return vm_state::draining;
    default: return vm_state::spawning;
  }
}

agent_info record_info(const child& c) {
  agent_info i;
  i.id = c.id;
  i.machine = c.machine();
  i.name = c.name;
  i.state = state_of(c.ph);
  i.backend = c.opts.spec.backend;
  i.restart = c.restart;
  i.restarts = c.restarts;
  i.last_down_reason = c.last_down;
  i.oom_kills = c.oom_kills;
  i.memory_limit_bytes = c.opts.spec.memory_bytes;
  i.pids_limit = c.opts.spec.pids;
  i.calls_in_flight = static_cast<uint32_t>(c.in_flight.size());
  i.calls_queued = static_cast<uint32_t>(c.queued.size());
  return i;
}

/// The child's live view, with what only the spawner knows on top.
agent_info merge(agent_info live, const child& c) {
  live.id = c.id;
  live.machine = c.machine();
  live.name = c.name;
  if (live.backend.empty())
    live.backend = c.opts.spec.backend;
  live.restart = c.restart;
  live.restarts = c.restarts;
  live.last_down_reason = c.last_down;
  live.oom_kills = std::max(live.oom_kills, c.oom_kills);
  live.calls_queued += static_cast<uint32_t>(c.queued.size());
  if (live.memory_limit_bytes == 0)
    live.memory_limit_bytes = c.opts.spec.memory_bytes;
  if (live.pids_limit == 0)
    live.pids_limit = c.opts.spec.pids;
  return live;
}

// --- requests -----------------------------------------------------------------

/// Whether `name` (empty: the default) may run agents here; the refusal
/// names the field, or the enabled backends as the router would.
caf::error check_backend(const spawner_state& st, const std::string& name) {
  if (name.empty())
    return {};
  auto kind = backend_from_string(name);
  if (!kind)
    return make_error(errc::bad_request,
                      "backend: expected one of sandbox, qemu, firecracker, got \"" + name + "\"");
  auto enabled = st.opts.backends;
  if (enabled.empty())
    enabled.push_back(st.ctx.kind);
  if (std::find(enabled.begin(), enabled.end(), *kind) != enabled.end())
    return {};
  std::vector<std::string> names;
  for (auto b : enabled)
    names.emplace_back(to_string(b));
  std::sort(names.begin(), names.end()); // the router's order (by name)
  return make_error(errc::bad_request, not_enabled_message(name, names));
}

caf::error validate(const agent_request& req) {
  if (req.name.empty())
    return make_error(errc::bad_request, "name: must not be empty");
  if (req.name.size() > max_name_len)
    return make_error(errc::bad_request,
                      "name: at most " + std::to_string(max_name_len) + " characters");
  for (char ch : req.name) {
    bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')
              || ch == '-' || ch == '_' || ch == '.';
    if (!ok)
      return make_error(errc::bad_request, "name: only letters, digits, '-', '_' and '.'");
  }
  if (req.memory_mb > max_memory_mb)
    return make_error(errc::bad_request, "memory_mb: at most " + std::to_string(max_memory_mb));
  if (req.pids > max_pids)
    return make_error(errc::bad_request, "pids: at most " + std::to_string(max_pids));
  if (req.cpu_weight > max_cpu_weight)
    return make_error(errc::bad_request, "cpu_weight: 1..10000");
  if (req.restart_set && static_cast<uint8_t>(req.restart) > static_cast<uint8_t>(restart_type::temporary))
    return make_error(errc::bad_request, "restart: permanent, transient or temporary");
  return {};
}

/// The request's spec, defaults applied; `backend` is the default backend.
vm_options resolve(const agent_request& req, const agent_defaults& d, backend_kind backend) {
  vm_options o;
  o.spec.backend = req.backend.empty() ? std::string{to_string(backend)} : req.backend;
  o.spec.memory_bytes = (req.memory_mb != 0 ? req.memory_mb : d.memory_mb) << 20;
  o.spec.pids = req.pids != 0 ? req.pids : d.pids;
  o.spec.cpu_weight = req.cpu_weight != 0 ? req.cpu_weight : d.cpu_weight;
  o.spec.workspace_bytes = d.workspace_mb << 20;
  o.spec.heartbeat_ms = d.heartbeat_ms;
  o.spec.allow_faults = d.allow_faults;
  o.hang_timeout_ms = d.hang_timeout_ms;
  o.ready_timeout_ms = d.ready_timeout_ms;
  o.max_calls_in_flight = d.max_calls_in_flight;
  return o;
}

/// The warm pool's spec (the pool runs on the default backend).
bool is_default_spec(const vm_options& o, const agent_defaults& d, backend_kind backend) {
  return o.spec.memory_bytes == (d.memory_mb << 20) && o.spec.pids == d.pids
         && o.spec.cpu_weight == d.cpu_weight && o.spec.backend == to_string(backend);
}

// --- calls --------------------------------------------------------------------

void answer(self_ptr self, pending_call& pc, caf::expected<tool_result> x) {
  ++self->state.calls_answered;
  if (x)
    pc.rp.deliver(std::move(*x));
  else
    pc.rp.deliver(std::move(x.error()));
}

caf::error agent_down_error(const child& c, const std::string& why) {
  return make_error(errc::agent_down, "agent " + c.id + " went down: " + why);
}

/// The error for calls of a child that is gone for good.
caf::error removal_error(self_ptr self, const child& c) {
  if (self->state.escalation)
    return *self->state.escalation;
  return agent_down_error(c, c.last_down.empty() ? "stopped" : c.last_down);
}

std::optional<pending_call> take_in_flight(self_ptr self, const std::string& id, uint64_t key) {
  auto* c = find(self, id);
  if (c == nullptr)
    return std::nullopt;
  auto i = c->in_flight.find(key);
  if (i == c->in_flight.end())
    return std::nullopt; // already settled by the down handler
  auto pc = std::move(i->second);
  c->in_flight.erase(i);
  return pc;
}

/// A call whose child went down: once more on the replacement when allowed,
/// else the error.
void retry_or_fail(self_ptr self, child& c, pending_call pc, caf::error err) {
  if (!self->state.escalation && pc.call.retryable && pc.attempts == 1) {
    pc.attempts = 2;
    c.queued.push_back(std::move(pc));
    return;
  }
  answer(self, pc, std::move(err));
}

bool is_receiver_down(const caf::error& err) {
  return err.category() == caf::atom("system")
         && err.code() == static_cast<uint8_t>(caf::sec::request_receiver_down);
}

void call_failed(self_ptr self, const std::string& id, uint64_t key, caf::error err) {
  // A dead receiver says nothing about why: the down handler, which knows
  // the reason, settles the call.
  if (is_receiver_down(err))
    return;
  auto pc = take_in_flight(self, id, key);
  if (!pc)
    return;
  auto* c = find(self, id);
  if (view(err).code == errc::agent_down && c != nullptr)
    retry_or_fail(self, *c, std::move(*pc), std::move(err));
  else
    answer(self, *pc, std::move(err));
}

void forward_call(self_ptr self, child& c, pending_call pc) {
  auto key = ++self->state.next_call;
  auto id = c.id;
  auto call = pc.call;
  auto timeout = milliseconds(uint64_t{call.timeout_ms} + c.opts.call_timeout_ms) + call_margin;
  c.in_flight.emplace(key, std::move(pc));
  self->request(c.actor, timeout, call_atom::value, std::move(call))
    .then(
      [=](tool_result& r) {
        auto p = take_in_flight(self, id, key);
        if (!p)
          return;
        r.attempts = p->attempts;
        answer(self, *p, std::move(r));
      },
      [=](caf::error& err) { call_failed(self, id, key, std::move(err)); });
}

void flush_queue(self_ptr self, child& c) {
  auto queued = std::move(c.queued);
  c.queued.clear();
  for (auto& pc : queued)
    forward_call(self, c, std::move(pc));
}

// --- children -----------------------------------------------------------------

void begin_spawn(self_ptr self, child& c);
void child_down(self_ptr self, child& c, const down_info& d);

/// Tells the observers about an assigned child (pool members are internal).
void notify(self_ptr self, const child& c, agent_event_kind kind, std::string reason = {},
            std::string detail = {}) {
  auto& st = self->state;
  if (st.observers.empty() || c.pooled)
    return;
  agent_event ev{c.id,
                 c.machine(),
                 kind,
                 std::move(reason),
                 std::move(detail),
                 c.restarts,
                 c.failures,
                 std::chrono::duration_cast<std::chrono::nanoseconds>(
                   clock_type::now().time_since_epoch())
                   .count()};
  for (auto& o : st.observers)
    self->send(o, ev);
}
void fill_pool(self_ptr self);

child& add_child(self_ptr self, std::string name, vm_options opts, restart_type restart,
                 bool pooled) {
  auto& st = self->state;
  auto c = std::make_unique<child>();
  c->id = st.opts.id_prefix + "-" + std::to_string(++st.next_id);
  c->name = std::move(name);
  c->opts = std::move(opts);
  c->opts.spec.id = c->id;
  c->restart = restart;
  c->pooled = pooled;
  st.children.push_back(std::move(c));
  return *st.children.back();
}

void release_grant(self_ptr self, child& c) {
  if (!c.grant_id.empty() && self->state.ctx.governor)
    self->send(self->state.ctx.governor, release_atom::value, c.grant_id);
  c.grant_id.clear();
}

/// Removes a child for good; every promise it holds gets its answer.
void remove_child(self_ptr self, const std::string& id) {
  auto& st = self->state;
  auto i = std::find_if(st.children.begin(), st.children.end(),
                        [&](auto& c) { return c->id == id; });
  if (i == st.children.end())
    return;
  auto c = std::move(*i);
  st.children.erase(i);
  release_grant(self, *c);
  caf::error start_err;
  if (st.escalation)
    start_err = *st.escalation;
  else if (st.draining || c->stop_requested)
    start_err = make_error(errc::draining, "agent " + c->id + " was stopped before it was ready");
  else
    start_err = make_error(errc::spawn_failed, "agent " + c->id + " went down before it was ready: "
                                                 + c->last_down);
  for (auto& rp : c->start_waiters)
    rp.deliver(start_err);
  auto err = removal_error(self, *c);
  for (auto& pc : c->queued)
    answer(self, pc, err);
  for (auto& [key, pc] : c->in_flight)
    answer(self, pc, err);
  if (c->stop_requested) {
    auto info = record_info(*c);
    info.state = vm_state::stopped;
    info.calls_in_flight = 0;
    info.calls_queued = 0;
    st.stopped_info[c->id] = std::move(info);
  }
  log::agent(c->id).info("removed ({})", c->last_down.empty() ? "never down" : c->last_down);
  if (c->pooled)
    fill_pool(self);
}

void do_spawn(self_ptr self, child& c) {
  auto& st = self->state;
  c.ph = phase::spawning;
  auto parent = caf::actor_cast<caf::actor>(self);
  caf::actor a;
  if (st.ctx.factory)
    a = st.ctx.factory(self->system(), c.opts, parent);
  else
    a = spawn_vm_actor(self->system(),
                       vm_context{st.ctx.backend, st.ctx.io, parent, st.ctx.governor, st.ctx.metrics,
                                  backend_from_string(c.opts.spec.backend).value_or(st.ctx.kind)},
                       c.opts);
  if (!a) {
    child_down(self, c, down_info{c.id, down_reason::spawn_failed, 0, 0, "no actor was spawned"});
    return;
  }
  self->monitor(a);
  c.actor = std::move(a);
}

/// The governor said no: a first start reports it to its caller; a restart
/// counts as a failed restart; a pool refill tries again later.
void grant_refused(self_ptr self, child& c, caf::error err) {
  auto why = "no grant: " + view(err).message;
  if (c.pooled && !c.ever_ready) {
    c.ph = phase::restarting;
    self->delayed_send(self, milliseconds(self->state.opts.supervision.max_backoff_ms),
                       restart_atom::value, c.id, c.generation);
    return;
  }
  if (!c.ever_ready) {
    for (auto& rp : c.start_waiters)
      rp.deliver(err);
    c.start_waiters.clear();
    c.last_down = why;
    remove_child(self, c.id);
    return;
  }
  child_down(self, c, down_info{c.id, down_reason::spawn_failed, 0, 0, why});
}

void begin_spawn(self_ptr self, child& c) {
  auto& st = self->state;
  auto gen = ++c.generation;
  c.ph = phase::granting;
  // A cold spawn runs under the agent's own id, also after the child ran
  // on an adopted pool machine (ids are never reused: no clash).
  c.opts.spec.id = c.id;
  if (!st.ctx.governor) {
    do_spawn(self, c);
    return;
  }
  grant_request req{c.machine(), c.opts.spec.memory_bytes, c.opts.spec.pids,
                    c.opts.spec.cpu_weight, st.opts.grant_deadline_ms};
  auto id = c.id;
  auto machine = c.machine();
  self->request(st.ctx.governor, milliseconds(st.opts.grant_deadline_ms) + call_margin,
                grant_atom::value, std::move(req))
    .then(
      [=](grant&) {
        auto* c = find(self, id);
        if (c == nullptr || c->generation != gen || c->ph != phase::granting
            || self->state.escalation) {
          // Nobody needs it any more: give it straight back.
          self->send(self->state.ctx.governor, release_atom::value, machine);
          return;
        }
        c->grant_id = machine;
        do_spawn(self, *c);
      },
      [=](caf::error& err) {
        auto* c = find(self, id);
        if (c != nullptr && c->generation == gen && c->ph == phase::granting)
          grant_refused(self, *c, std::move(err));
      });
}

/// The pool's gauges, after anything that may have changed it.
void note_pool(self_ptr self) {
  auto& st = self->state;
  if (!st.ctx.metrics)
    return;
  auto ready = std::count_if(st.children.begin(), st.children.end(),
                             [](auto& c) { return c->pooled && c->ph == phase::ready && c->actor; });
  st.ctx.metrics->pool_size(static_cast<std::size_t>(ready), st.opts.pool.warm);
}

/// A start or restart of the pool's spec: a hand-out, or a miss when the
/// pool (if configured) had no ready member.
void note_pool_use(self_ptr self, bool handed_out) {
  auto& st = self->state;
  if (!st.ctx.metrics || st.opts.pool.warm == 0)
    return;
  if (handed_out)
    st.ctx.metrics->pool_handout();
  else
    st.ctx.metrics->pool_miss();
}

void fill_pool(self_ptr self) {
  auto& st = self->state;
  note_pool(self);
  if (st.draining || st.escalation)
    return;
  auto pooled = std::count_if(st.children.begin(), st.children.end(),
                              [](auto& c) { return c->pooled; });
  for (auto n = pooled; n < static_cast<long>(st.opts.pool.warm); ++n) {
    auto& c = add_child(self, {}, resolve({}, st.opts.defaults, st.ctx.kind), restart_type::permanent, true);
    begin_spawn(self, c);
  }
}

/// A restart on the warm pool: a child whose spec is the pool's takes the
/// first ready pool member's machine (its actor, machine id and grant) and
/// keeps its own identity (id, name, restarts, last down, OOM kills). The
/// member's record goes; the pool refills in the background. False when no
/// member is ready or the spec differs: the caller spawns cold.
bool adopt_pool_member(self_ptr self, child& c) {
  auto& st = self->state;
  if (c.pooled || !is_default_spec(c.opts, st.opts.defaults, st.ctx.kind))
    return false;
  auto i = std::find_if(st.children.begin(), st.children.end(), [](auto& p) {
    return p->pooled && p->ph == phase::ready && p->actor && !p->remove_on_down;
  });
  note_pool_use(self, i != st.children.end());
  if (i == st.children.end())
    return false;
  auto p = std::move(*i);
  st.children.erase(i);
  release_grant(self, c); // none is held while restarting; never leak one
  ++c.generation;         // timers and grants of the cold path are stale now
  c.actor = std::move(p->actor);
  c.opts = p->opts; // the same resolved spec; its spec.id is the machine's
  c.grant_id = std::move(p->grant_id);
  c.ph = phase::ready;
  c.ready_since = clock_type::now();
  log::agent(c.id).info("restarted on pool machine {}", c.machine());
  notify(self, c, agent_event_kind::ready);
  flush_queue(self, c);
  fill_pool(self);
  return true;
}

/// Brings a restarting child back: on a ready pool member if it fits, else
/// with a cold spawn (grant first).
void restart_child(self_ptr self, child& c) {
  if (auto& m = self->state.ctx.metrics)
    m->restarted();
  if (!adopt_pool_member(self, c))
    begin_spawn(self, c);
}

// --- ordered stops ------------------------------------------------------------

/// True once `a` is down, false after `timeout` (none: wait for ever).
task<bool> wait_down(self_ptr self, caf::actor a, std::optional<milliseconds> timeout) {
  // A request to ourselves, answered from the down handler: an awaitable
  // down_msg without a second bookkeeping.
  auto me = caf::actor_cast<caf::actor>(self);
  if (timeout) {
    auto r = co_await ask<void>(self, me, within{*timeout}, wait_down_atom::value, a);
    co_return static_cast<bool>(r);
  }
  auto r = co_await ask<void>(self, me, wait_down_atom::value, a);
  co_return static_cast<bool>(r);
}

/// Stops the children one after the other, each gracefully, then with a
/// kill after shutdown_timeout, then with an exit(kill) after another.
task<void> stop_in_order(self_ptr self, std::vector<std::string> ids) {
  for (const auto& id : ids) {
    auto* c = find(self, id);
    if (c == nullptr || !c->actor)
      continue;
    caf::actor a = c->actor;
    c->ph = phase::stopping;
    auto timeout = milliseconds(self->state.opts.supervision.shutdown_timeout_ms);
    // Half the timeout for calls in flight, the rest for the machine's end.
    self->send(a, stop_atom::value, static_cast<uint32_t>(timeout.count() / 2));
    if (co_await wait_down(self, a, timeout))
      continue;
    log::agent(id).warn("no down {} ms after stop: killing", timeout.count());
    self->send(a, kill_atom::value, down_reason::stopped, std::string{"shutdown timeout"});
    if (co_await wait_down(self, a, timeout))
      continue;
    log::agent(id).error("no down {} ms after kill: exiting its actor", timeout.count());
    self->send_exit(a, caf::exit_reason::kill);
    co_await wait_down(self, a, std::nullopt);
  }
}

std::vector<std::string> reverse_ids(self_ptr self) {
  std::vector<std::string> ids;
  for (auto i = self->state.children.rbegin(); i != self->state.children.rend(); ++i)
    ids.push_back((*i)->id);
  return ids;
}

/// Marks every child for removal; those without a machine go at once.
/// Returns the others, in reverse start order.
std::vector<std::string> remove_all(self_ptr self) {
  auto ids = reverse_ids(self);
  std::vector<std::string> live;
  for (const auto& id : ids) {
    auto* c = find(self, id);
    if (c == nullptr)
      continue;
    c->remove_on_down = true;
    if (c->actor)
      live.push_back(id);
    else
      remove_child(self, id);
  }
  return live;
}

void escalate(self_ptr self, std::string why) {
  auto& st = self->state;
  spdlog::error("spawner gives up: {}", why);
  st.escalation = make_error(errc::escalated, std::move(why));
  auto live = remove_all(self);
  // Answer now what nobody will serve, before the ordered stop.
  for (auto& c : st.children) {
    for (auto& rp : c->start_waiters)
      rp.deliver(*st.escalation);
    c->start_waiters.clear();
    for (auto& pc : c->queued)
      answer(self, pc, *st.escalation);
    c->queued.clear();
  }
  launch(self, [self, live]() -> task<void> {
    co_await stop_in_order(self, live);
    self->quit(*self->state.escalation);
  });
}

/// one_for_all / rest_for_one: stop the group in reverse start order, wait
/// the failed child's backoff, restart the failed child and the group in
/// start order.
task<void> restart_group(self_ptr self, std::string failed, std::vector<std::string> group,
                         milliseconds delay) {
  for (const auto& id : group)
    if (auto* c = find(self, id))
      c->in_group = true;
  std::vector<std::string> reversed(group.rbegin(), group.rend());
  co_await stop_in_order(self, reversed);
  co_await sleep_for(self, delay);
  if (self->state.draining || self->state.escalation)
    co_return;
  // By id: a spawn that fails at once may change the list under us.
  std::vector<std::string> order;
  for (auto& c : self->state.children)
    order.push_back(c->id);
  for (const auto& id : order) {
    auto* c = find(self, id);
    if (c == nullptr)
      continue;
    bool member = c->id == failed
                  || (c->in_group && std::find(group.begin(), group.end(), c->id) != group.end());
    if (!member || c->actor || c->remove_on_down || self->state.escalation)
      continue;
    c->in_group = false;
    if (c->ph != phase::restarting && c->ph != phase::stopping)
      continue; // already restarted by an overlapping group
    ++c->restarts;
    restart_child(self, *c);
  }
}

/// Applies restart type, intensity and strategy to a child that went down
/// on its own (or was evicted).
void decide(self_ptr self, child& c, const down_info& d) {
  auto& st = self->state;
  const auto& sup = st.opts.supervision;
  bool restart = c.pooled || c.restart == restart_type::permanent
                 || (c.restart == restart_type::transient && !is_normal(d));
  if (!restart || st.draining) {
    remove_child(self, c.id);
    return;
  }
  auto now = clock_type::now();
  st.restart_times.push_back(now);
  while (!st.restart_times.empty() && now - st.restart_times.front() > milliseconds(sup.period_ms))
    st.restart_times.pop_front();
  if (st.restart_times.size() > sup.max_restarts) {
    escalate(self, std::to_string(st.restart_times.size()) + " restarts within "
                     + std::to_string(sup.period_ms) + " ms; last: agent " + c.id + " "
                     + describe(d));
    return;
  }
  // A child that stayed ready for a whole period starts its backoff afresh.
  if (c.ph == phase::ready && now - c.ready_since >= milliseconds(sup.period_ms))
    c.failures = 0;
  auto delay = restart_backoff(sup, c.failures, st.rng);
  ++c.failures;
  c.ph = phase::restarting;
  log::agent(c.id).info("restarting in {} ms after {}", delay.count(), describe(d));
  // Pool members never drag assigned agents into a group restart.
  if (c.pooled || sup.strategy == restart_strategy::one_for_one
      || sup.strategy == restart_strategy::simple_one_for_one) {
    self->delayed_send(self, delay, restart_atom::value, c.id, c.generation);
    return;
  }
  std::vector<std::string> group;
  bool after = false;
  for (auto& o : st.children) {
    if (o.get() == &c) {
      after = true;
      continue;
    }
    if (o->pooled || o->remove_on_down)
      continue;
    if (sup.strategy == restart_strategy::one_for_all || after)
      group.push_back(o->id);
  }
  launch(self, restart_group(self, c.id, std::move(group), delay));
}

/// A child's machine is gone (or never came): settle its calls, then let
/// removal, its group or the strategy decide.
void child_down(self_ptr self, child& c, const down_info& d) {
  c.actor = nullptr;
  notify(self, c, agent_event_kind::down, std::string{to_string(d.reason)}, d.detail);
  if (c.pooled)
    note_pool(self);
  release_grant(self, c);
  c.last_down = describe(d);
  auto in_flight = std::move(c.in_flight);
  c.in_flight.clear();
  auto err = self->state.escalation ? *self->state.escalation : agent_down_error(c, c.last_down);
  for (auto& [key, pc] : in_flight)
    retry_or_fail(self, c, std::move(pc), err);
  if (c.remove_on_down || self->state.escalation) {
    remove_child(self, c.id);
    return;
  }
  if (!c.ever_ready && !c.pooled) {
    remove_child(self, c.id); // a start that failed: its caller gets spawn_failed
    return;
  }
  if (c.in_group) {
    c.ph = phase::restarting; // restart_group respawns it
    return;
  }
  decide(self, c, d);
}

void on_down(self_ptr self, caf::down_msg& dm) {
  auto& st = self->state;
  std::erase_if(st.observers, [&](const caf::actor& o) { return o.address() == dm.source; });
  if (auto* c = find_by_actor(self, dm.source)) {
    // The vm_actor logged the down itself; the spawner logs its decision.
    child_down(self, *c, down_info_from(dm.reason, c->id));
  }
  // After the record is updated, so that waiters see the child gone.
  if (auto i = st.down_waiters.find(dm.source); i != st.down_waiters.end()) {
    auto waiters = std::move(i->second);
    st.down_waiters.erase(i);
    for (auto& rp : waiters)
      rp.deliver(caf::unit);
  }
}

void on_ready(self_ptr self, const agent_ready& r) {
  auto* c = find_by_actor(self, caf::actor_cast<caf::actor_addr>(self->current_sender()));
  if (c == nullptr || c->ph == phase::stopping)
    return;
  c->ph = phase::ready;
  c->ever_ready = true;
  c->ready_since = clock_type::now();
  if (c->pooled)
    note_pool(self);
  auto info = record_info(*c);
  info.pid = r.pid;
  info.backend = r.backend;
  for (auto& rp : c->start_waiters)
    rp.deliver(info);
  c->start_waiters.clear();
  notify(self, *c, agent_event_kind::ready);
  flush_queue(self, *c);
}

// --- handlers -----------------------------------------------------------------

caf::result<agent_info> on_start(self_ptr self, const agent_request& req) {
  auto& st = self->state;
  if (st.escalation)
    return *st.escalation;
  if (st.draining)
    return make_error(errc::draining, "the spawner is shutting down");
  if (auto err = validate(req))
    return err;
  if (auto err = check_backend(st, req.backend))
    return err;
  auto opts = resolve(req, st.opts.defaults, st.ctx.kind);
  auto restart = req.restart_set ? req.restart : st.opts.supervision.restart;
  if (is_default_spec(opts, st.opts.defaults, st.ctx.kind)) {
    // Hand-out is a lookup: the first ready pool member becomes this agent
    // and moves to the end of the start order.
    auto i = std::find_if(st.children.begin(), st.children.end(),
                          [](auto& c) { return c->pooled && c->ph == phase::ready; });
    note_pool_use(self, i != st.children.end());
    if (i != st.children.end()) {
      auto c = std::move(*i);
      st.children.erase(i);
      c->pooled = false;
      c->name = req.name;
      c->restart = restart;
      auto info = record_info(*c);
      st.children.push_back(std::move(c));
      fill_pool(self);
      return info;
    }
  }
  auto& c = add_child(self, req.name, std::move(opts), restart, false);
  auto rp = self->make_response_promise<agent_info>();
  c.start_waiters.push_back(rp);
  begin_spawn(self, c);
  return rp;
}

caf::result<tool_result> on_call(self_ptr self, const std::string& id, tool_call& call) {
  auto& st = self->state;
  ++st.calls_received;
  auto rp = self->make_response_promise<tool_result>();
  pending_call pc{std::move(call), rp, 1};
  auto* c = find_agent(self, id);
  if (c == nullptr)
    answer(self, pc, make_error(errc::not_found, "no agent " + id));
  else if (st.escalation)
    answer(self, pc, *st.escalation);
  else if (c->ph == phase::ready)
    forward_call(self, *c, std::move(pc));
  else if (c->ph == phase::stopping && c->remove_on_down)
    answer(self, pc, make_error(errc::draining, "agent " + id + " is stopping"));
  else
    c->queued.push_back(std::move(pc)); // served by the replacement
  return rp;
}

caf::result<agent_info> on_get(self_ptr self, const std::string& id) {
  auto* c = find_agent(self, id);
  if (c == nullptr)
    return make_error(errc::not_found, "no agent " + id);
  if (c->ph != phase::ready)
    return record_info(*c);
  auto rp = self->make_response_promise<agent_info>();
  self->request(c->actor, get_timeout, get_atom::value)
    .then(
      [=](agent_info& live) mutable {
        if (auto* c = find(self, id))
          rp.deliver(merge(std::move(live), *c));
        else
          rp.deliver(make_error(errc::not_found, "no agent " + id));
      },
      [=](caf::error&) mutable {
        if (auto* c = find(self, id))
          rp.deliver(record_info(*c));
        else
          rp.deliver(make_error(errc::not_found, "no agent " + id));
      });
  return rp;
}

caf::result<std::vector<agent_info>> on_list(self_ptr self) {
  // Asks every ready child at once; each answer (or its timeout) fills its
  // slot and the last one delivers.
  struct gather {
    std::vector<agent_info> infos;
    std::size_t pending = 0;
    caf::typed_response_promise<std::vector<agent_info>> rp;
  };
  auto g = std::make_shared<gather>();
  g->rp = self->make_response_promise<std::vector<agent_info>>();
  std::vector<std::pair<std::size_t, caf::actor>> asks;
  for (auto& c : self->state.children) {
    if (c->pooled)
      continue;
    if (c->ph == phase::ready)
      asks.emplace_back(g->infos.size(), c->actor);
    g->infos.push_back(record_info(*c));
  }
  g->pending = asks.size();
  if (asks.empty()) {
    g->rp.deliver(std::move(g->infos));
    return g->rp;
  }
  auto done = [g] {
    if (--g->pending == 0)
      g->rp.deliver(std::move(g->infos));
  };
  for (auto& [slot, a] : asks) {
    auto i = slot;
    self->request(a, get_timeout, get_atom::value)
      .then(
        [=](agent_info& live) {
          if (auto* c = find(self, g->infos[i].id))
            g->infos[i] = merge(std::move(live), *c);
          done();
        },
        [=](caf::error&) { done(); });
  }
  return g->rp;
}

/// Answers a stop request with the last state remove_child kept.
void deliver_stopped(self_ptr self, const std::string& id,
                     caf::typed_response_promise<agent_info>& rp) {
  auto& infos = self->state.stopped_info;
  if (auto i = infos.find(id); i != infos.end()) {
    rp.deliver(std::move(i->second));
    infos.erase(i);
  } else {
    rp.deliver(make_error(errc::internal, "agent " + id + " left no record"));
  }
}

task<void> stop_one(self_ptr self, std::string id, caf::typed_response_promise<agent_info> rp) {
  co_await stop_in_order(self, std::vector<std::string>(1, id));
  deliver_stopped(self, id, rp);
}

caf::result<agent_info> on_stop(self_ptr self, const std::string& id) {
  auto* c = find_agent(self, id);
  if (c == nullptr)
    return make_error(errc::not_found, "no agent " + id);
  c->remove_on_down = true;
  c->stop_requested = true;
  auto rp = self->make_response_promise<agent_info>();
  if (!c->actor) {
    remove_child(self, id);
    deliver_stopped(self, id, rp);
    return rp;
  }
  launch(self, stop_one(self, id, rp));
  return rp;
}

/// A chaos fault for the child's current machine: its vm_actor answers.
/// Not a tool call (not counted, never queued or retried): a child without
/// a ready machine refuses it, as a spawning vm_actor does.
caf::result<tool_result> on_fault(self_ptr self, const std::string& id, fault_request& f) {
  auto* c = find_agent(self, id);
  if (c == nullptr)
    return make_error(errc::not_found, "no agent " + id);
  if (c->ph != phase::ready)
    return make_error(errc::draining, "agent " + id + " is not ready");
  // Host-side faults: real signals from the backend (kill, hang) or a lossy
  // channel in the vm_actor (partition); the guest plays no part, so the
  // spawner checks allow_faults itself.
  if (f.kind == "kill" || f.kind == "hang" || f.kind == "partition") {
    const auto& st = self->state;
    if (!st.opts.defaults.allow_faults)
      return make_error(errc::bad_request, "agent " + id + ": faults are off (agents.allow_faults)");
    if (f.kind == "partition")
      self->send(c->actor, partition_atom::value, f.ms);
    else
      self->send(st.ctx.backend, signal_atom::value, c->machine(),
                 int32_t{f.kind == "kill" ? SIGKILL : SIGSTOP});
    if (auto& m = st.ctx.metrics)
      m->fault_injected(metrics::fault_kind_from(f.kind));
    return tool_result{};
  }
  auto rp = self->make_response_promise<tool_result>();
  // Reporting faults (cpu_hog) answer after f.ms; the others at once.
  auto timeout = milliseconds(uint64_t{f.ms} + c->opts.call_timeout_ms) + call_margin;
  self->request(c->actor, timeout, fault_atom::value, std::move(f))
    .then([=](tool_result& r) mutable { rp.deliver(std::move(r)); },
          [=](caf::error& err) mutable {
            // A machine that died under the fault says nothing: name it.
            if (is_receiver_down(err))
              rp.deliver(make_error(errc::agent_down, "agent " + id + " went down"));
            else
              rp.deliver(std::move(err));
          });
  return rp;
}

caf::result<void> on_evict(self_ptr self, const evict_request& ev) {
  // The governor names the machine (the grant's id); accept the agent id too.
  auto* c = find_by_machine(self, ev.agent_id);
  if (c == nullptr)
    c = find(self, ev.agent_id);
  if (c == nullptr || !c->actor)
    return caf::unit;
  log::agent(c->id).warn("evicted: {}", ev.why);
  self->send(c->actor, kill_atom::value, down_reason::evicted, ev.why);
  return caf::unit;
}

caf::response_promise on_shutdown(self_ptr self) {
  self->state.draining = true;
  auto live = remove_all(self);
  auto rp = self->make_response_promise();
  launch(self, [self, live, rp]() mutable -> task<void> {
    co_await stop_in_order(self, live);
    rp.deliver(caf::unit);
  });
  return rp;
}

caf::behavior spawner(self_ptr self, spawner_context ctx, spawner_options opts) {
  self->state.ctx = std::move(ctx);
  self->state.opts = std::move(opts);
  if (self->state.ctx.governor)
    self->monitor(self->state.ctx.governor); // keeps nothing, but logs its loss below
  self->set_down_handler([self](caf::down_msg& dm) {
    if (self->state.ctx.governor && dm.source == self->state.ctx.governor.address()) {
      spdlog::error("spawner: the resource governor is gone: {}", caf::to_string(dm.reason));
      return;
    }
    on_down(self, dm);
  });
  // An exit from our parent: an ordered shutdown first, as OTP does.
  self->set_exit_handler([self](caf::exit_msg& em) {
    if (em.reason == caf::exit_reason::normal)
      return;
    auto reason = em.reason;
    self->state.draining = true;
    auto live = remove_all(self);
    launch(self, [self, live, reason]() -> task<void> {
      co_await stop_in_order(self, live);
      self->quit(reason);
    });
  });
  fill_pool(self);
  return {
    [self](start_atom, agent_request& req) { return on_start(self, req); },
    [self](call_atom, std::string& id, tool_call& call) { return on_call(self, id, call); },
    [self](get_atom, std::string& id) { return on_get(self, id); },
    [self](list_atom) { return on_list(self); },
    [self](stop_atom, std::string& id) { return on_stop(self, id); },
    [self](fault_atom, std::string& id, fault_request& f) { return on_fault(self, id, f); },
    [self](evict_request& ev) { return on_evict(self, ev); },
    [self](observe_atom, caf::actor& observer) {
      self->monitor(observer); // its down_msg finds no child: harmless
      self->state.observers.push_back(std::move(observer));
    },
    [self](shutdown_atom) { return on_shutdown(self); },
    [self](const agent_ready& r) { on_ready(self, r); },
    [self](const agent_oom& oom) {
      // oom.id is the machine id: a child on an adopted pool machine is
      // found by its actor (or that id), not by its agent id.
      auto* c = find_by_actor(self, caf::actor_cast<caf::actor_addr>(self->current_sender()));
      if (c == nullptr)
        c = find_by_machine(self, oom.id);
      if (c != nullptr)
        ++c->oom_kills;
    },
    [self](restart_atom, std::string& id, uint64_t gen) {
      auto* c = find(self, id);
      if (c == nullptr || c->generation != gen || c->ph != phase::restarting
          || self->state.draining || self->state.escalation)
        return;
      if (c->ever_ready)
        ++c->restarts;
      restart_child(self, *c);
    },
    [self](wait_down_atom, caf::actor& a) -> caf::response_promise {
      auto rp = self->make_response_promise();
      if (is_live_child(self, a))
        self->state.down_waiters[a.address()].push_back(rp);
      else
        rp.deliver(caf::unit);
      return rp;
    },
    [self](calls_atom) {
      return std::make_tuple(self->state.calls_received, self->state.calls_answered);
    },
  };
}

} // namespace

caf::actor spawn_spawner(caf::actor_system& sys, spawner_context ctx, spawner_options opts) {
  return sys.spawn(spawner, std::move(ctx), std::move(opts));
}

} // namespace agentvisor

// resource_governor: the budget, the grant queue and the memory pressure
// policy (docs/governor.md). One stateful event-based actor; every grant
// request is answered through a response promise, errors included (a CAF
// 0.17 trap: an error returned past a promise is lost).

#include "resource_governor.hpp"

#include "agentvisor/host.hpp"
#include "agentvisor/log.hpp"

#include <caf/all.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace agentvisor {
namespace {

// Private timer messages to itself.
using deadline_atom = caf::atom_constant<caf::atom("gv_dline")>;
using tick_atom = caf::atom_constant<caf::atom("gv_tick")>;
using evict_timeout_atom = caf::atom_constant<caf::atom("gv_evtmo")>;
using pressure_over_atom = caf::atom_constant<caf::atom("gv_presov")>;

using clock_type = std::chrono::steady_clock;
using ms = std::chrono::milliseconds;

constexpr uint64_t mib = uint64_t{1} << 20;

/// An agent holding a grant.
struct holding {
  grant g;
  /// Grant order: higher is younger (ties in the eviction policy).
  uint64_t seq = 0;
  uint64_t in_use = 0;
  uint64_t oom_kills = 0;
  /// Asked to go; never picked again.
  bool evicting = false;
};

/// A grant request waiting for room.
struct waiting {
  uint64_t ticket = 0;
  grant_request req;
  caf::typed_response_promise<grant> rp;
  clock_type::time_point since;
};

struct eviction {
  std::string agent_id;
  uint64_t ticket = 0;
};

struct gov_state {
  governor_options opts;
  budget total;
  budget used;
  /// Set when host detection failed: every grant is refused with it.
  std::string broken;
  std::map<std::string, holding> holdings;
  std::deque<waiting> queue;
  uint64_t next_seq = 1;
  uint64_t memory_in_use = 0;
  uint64_t granted_total = 0;
  uint64_t denied_total = 0;
  uint64_t oom_kills_total = 0;
  uint64_t evictions_total = 0;
  std::optional<uint64_t> host_available;
  bool meminfo_warned = false;
  bool no_spawner_warned = false;
  bool no_victim_warned = false;
  caf::actor spawner;
  std::optional<eviction> evicting;
  /// Chaos: the memory budget before a pressure fault shrank it, and the
  /// ticket of the timer that restores it.
  std::optional<uint64_t> budget_before_pressure;
  uint64_t pressure_ticket = 0;

  static inline const char* name = "resource_governor";
};

using self_ptr = caf::stateful_actor<gov_state>*;

// --- text --------------------------------------------------------------------

/// "512 MiB", "1.5 MiB", "4096 bytes".
std::string bytes_text(uint64_t n) {
  if (n >= mib && n % mib == 0)
    return std::to_string(n / mib) + " MiB";
  if (n >= mib) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(n) / mib);
    return buf;
  }
  return std::to_string(n) + " bytes";
}

std::string join(const std::vector<std::string>& parts) {
  std::string out;
  for (const auto& p : parts) {
    if (!out.empty())
      out += "; ";
    out += p;
  }
  return out;
}

/// "512 MiB and 128 pids".
std::string asks_text(const grant_request& r) {
  return bytes_text(r.memory_bytes) + " and " + std::to_string(r.pids) + " pids";
}

/// What of `r` can never fit the whole budget (empty: it could fit).
std::vector<std::string> never_fits(const gov_state& s, const grant_request& r) {
  std::vector<std::string> out;
  if (r.memory_bytes > s.total.memory_bytes)
    out.push_back("agent " + r.agent_id + " asks " + bytes_text(r.memory_bytes)
                  + "; the budget is " + bytes_text(s.total.memory_bytes) + " in all");
  if (r.pids > s.total.pids)
    out.push_back("agent " + r.agent_id + " asks " + std::to_string(r.pids)
                  + " pids; the budget is " + std::to_string(s.total.pids)
                  + " pids in all");
  return out;
}

/// What of `r` does not fit now (empty: it fits).
std::vector<std::string> short_now(const gov_state& s, const grant_request& r) {
  std::vector<std::string> out;
  // Under a chaos pressure fault the budget may sit below what is granted.
  uint64_t mem_free
    = s.total.memory_bytes > s.used.memory_bytes ? s.total.memory_bytes - s.used.memory_bytes : 0;
  if (r.memory_bytes > mem_free)
    out.push_back("memory: " + bytes_text(s.used.memory_bytes) + " of "
                  + bytes_text(s.total.memory_bytes) + " granted, "
                  + bytes_text(mem_free) + " free");
  uint32_t pids_free = s.total.pids - s.used.pids;
  if (r.pids > pids_free)
    out.push_back("pids: " + std::to_string(s.used.pids) + " of "
                  + std::to_string(s.total.pids) + " granted, "
                  + std::to_string(pids_free) + " free");
  if (s.used.agents >= s.total.agents)
    out.push_back("agents: all " + std::to_string(s.total.agents) + " slots taken");
  return out;
}

// --- grants --------------------------------------------------------------------

void publish_budget(const gov_state& s) {
  if (const auto& m = s.opts.metrics)
    m->budget(s.total);
}

/// The gauges, after anything that may have moved them (atomic stores).
void publish(const gov_state& s) {
  if (const auto& m = s.opts.metrics) {
    m->granted(s.used, s.used.agents);
    m->queued(static_cast<uint32_t>(s.queue.size()));
    m->memory_in_use(s.memory_in_use);
    m->host_available(s.host_available.value_or(0));
  }
}

grant take(self_ptr self, const grant_request& r) {
  auto& s = self->state;
  grant g{r.agent_id, r.memory_bytes, r.pids};
  s.used.memory_bytes += r.memory_bytes;
  s.used.pids += r.pids;
  s.used.agents += 1;
  s.holdings[r.agent_id] = holding{g, s.next_seq++, 0, 0, false};
  s.granted_total += 1;
  if (const auto& m = s.opts.metrics)
    m->grant_given();
  publish(s);
  log::agent(r.agent_id).info("granted {}", asks_text(r));
  return g;
}

caf::error refuse(gov_state& s, errc code, std::string msg) {
  s.denied_total += 1;
  if (const auto& m = s.opts.metrics)
    m->grant_refused(code == errc::budget_timeout ? metrics::refusal::budget_timeout
                                                  : metrics::refusal::over_budget);
  return make_error(code, std::move(msg));
}

/// Grants from the head of the queue while the head fits (strict FIFO: a
/// small request never overtakes a large one, which would starve it).
void drain_queue(self_ptr self) {
  auto& s = self->state;
  while (!s.queue.empty() && short_now(s, s.queue.front().req).empty()) {
    auto w = std::move(s.queue.front());
    s.queue.pop_front();
    w.rp.deliver(take(self, w.req));
  }
}

/// Answers every queued request with errc::draining (before quitting: a
/// promise dropped with the state would leave its requester waiting).
void answer_queue_draining(self_ptr self) {
  auto& s = self->state;
  for (auto& w : s.queue) {
    if (const auto& m = s.opts.metrics)
      m->grant_refused(metrics::refusal::draining);
    w.rp.deliver(make_error(errc::draining, "agent " + w.req.agent_id
                                              + " was waiting for a grant; the "
                                                "governor is shutting down"));
  }
  if (!s.queue.empty())
    spdlog::info("governor: answered {} queued grant requests with draining",
                 s.queue.size());
  s.queue.clear();
}

void on_grant(self_ptr self, grant_request& r, caf::typed_response_promise<grant>& rp) {
  auto& s = self->state;
  if (!s.broken.empty())
    return void(rp.deliver(refuse(s, errc::over_budget, "agent " + r.agent_id
                                                          + " cannot be granted: "
                                                          + s.broken)));
  auto bad_request = [&](std::string msg) {
    if (const auto& m = s.opts.metrics)
      m->grant_refused(metrics::refusal::bad_request);
    rp.deliver(make_error(errc::bad_request, std::move(msg)));
  };
  if (r.agent_id.empty())
    return bad_request("a grant request needs an agent id");
  if (auto i = s.holdings.find(r.agent_id); i != s.holdings.end())
    return bad_request("agent " + r.agent_id + " already holds a grant of "
                       + bytes_text(i->second.g.memory_bytes) + "; release it first");
  auto queued = std::find_if(s.queue.begin(), s.queue.end(),
                             [&](const waiting& w) { return w.req.agent_id == r.agent_id; });
  if (queued != s.queue.end())
    return bad_request("agent " + r.agent_id + " already waits for a grant");
  if (auto never = never_fits(s, r); !never.empty())
    return void(rp.deliver(refuse(s, errc::over_budget, join(never))));
  auto shortfall = short_now(s, r);
  if (s.queue.empty() && shortfall.empty())
    return void(rp.deliver(take(self, r)));
  if (shortfall.empty())
    shortfall.push_back(std::to_string(s.queue.size()) + " requests wait ahead of it");
  if (r.deadline_ms == 0)
    return void(rp.deliver(refuse(s, errc::over_budget, "agent " + r.agent_id + " asks "
                                                          + asks_text(r)
                                                          + " and will not wait; "
                                                          + join(shortfall))));
  if (s.queue.size() >= s.opts.max_queued)
    return void(rp.deliver(refuse(s, errc::over_budget,
                                  "agent " + r.agent_id + " asks " + asks_text(r)
                                    + "; it does not fit now (" + join(shortfall)
                                    + ") and the queue is full (host.max_queued = "
                                    + std::to_string(s.opts.max_queued) + ")")));
  auto ticket = s.next_seq++;
  log::agent(r.agent_id).info("queued for {} (deadline {} ms): {}", asks_text(r),
                              r.deadline_ms, join(shortfall));
  // The clock starts before the timer, so "waited" is never below deadline_ms.
  auto since = clock_type::now();
  self->delayed_send(self, ms{r.deadline_ms}, deadline_atom::value, ticket);
  s.queue.push_back(waiting{ticket, std::move(r), rp, since});
  publish(s);
}

void on_deadline(self_ptr self, uint64_t ticket) {
  auto& s = self->state;
  auto i = std::find_if(s.queue.begin(), s.queue.end(),
                        [&](const waiting& w) { return w.ticket == ticket; });
  if (i == s.queue.end())
    return; // granted meanwhile
  auto w = std::move(*i);
  s.queue.erase(i);
  auto waited = std::chrono::duration_cast<ms>(clock_type::now() - w.since).count();
  auto msg = "agent " + w.req.agent_id + " waited " + std::to_string(waited)
             + " ms for " + asks_text(w.req) + "; still short: ";
  auto shortfall = short_now(s, w.req);
  msg += shortfall.empty() ? "requests ahead of it in the queue" : join(shortfall);
  log::agent(w.req.agent_id).info("grant timed out: {}", msg);
  w.rp.deliver(refuse(s, errc::budget_timeout, std::move(msg)));
  // The head may have been what blocked the requests behind it.
  drain_queue(self);
  publish(s);
}

// --- pressure ------------------------------------------------------------------

/// Why the host is under memory pressure; empty when it is not.
std::string pressure_reason(const gov_state& s) {
  const auto& h = s.opts.host;
  auto limit = static_cast<double>(s.total.memory_bytes) * h.pressure_high_water;
  if (s.total.memory_bytes > 0 && static_cast<double>(s.memory_in_use) > limit)
    return "agents use " + bytes_text(s.memory_in_use) + ", above "
           + std::to_string(static_cast<int>(h.pressure_high_water * 100 + 0.5))
           + "% of the " + bytes_text(s.total.memory_bytes) + " budget";
  uint64_t floor = h.min_available_mb * mib;
  if (floor > 0 && s.host_available && *s.host_available < floor)
    return "the host has " + bytes_text(*s.host_available)
           + " available (MemAvailable), below the " + bytes_text(floor) + " floor";
  return {};
}

/// The policy: the agent most above its own grant, else the largest user;
/// ties go to the youngest grant. Agents already asked to go are skipped.
const holding* pick_victim(const gov_state& s) {
  const holding* best = nullptr;
  auto excess = [](const holding& h) {
    return h.in_use > h.g.memory_bytes ? h.in_use - h.g.memory_bytes : 0;
  };
  auto better = [&](const holding& a, const holding& b) {
    auto ka = std::make_tuple(excess(a), excess(a) > 0 ? 0 : a.in_use, a.seq);
    auto kb = std::make_tuple(excess(b), excess(b) > 0 ? 0 : b.in_use, b.seq);
    return ka > kb;
  };
  for (const auto& [id, h] : s.holdings)
    if (!h.evicting && (best == nullptr || better(h, *best)))
      best = &h;
  return best;
}

std::string victim_text(const holding& h) {
  if (h.in_use > h.g.memory_bytes)
    return "agent " + h.g.agent_id + " uses " + bytes_text(h.in_use) + ", "
           + bytes_text(h.in_use - h.g.memory_bytes) + " above its "
           + bytes_text(h.g.memory_bytes) + " grant (the most above its grant)";
  return "agent " + h.g.agent_id + " is the largest user (" + bytes_text(h.in_use)
         + " of its " + bytes_text(h.g.memory_bytes) + " grant)";
}

/// Under pressure and with no eviction in flight: asks the spawner to
/// evict one agent, then waits for its release or evict_timeout_ms.
void check_pressure(self_ptr self) {
  auto& s = self->state;
  if (s.evicting)
    return;
  auto why = pressure_reason(s);
  if (why.empty()) {
    s.no_spawner_warned = s.no_victim_warned = false;
    return;
  }
  if (!s.spawner) {
    if (!std::exchange(s.no_spawner_warned, true))
      spdlog::warn("governor: memory pressure ({}) but no spawner attached", why);
    return;
  }
  const auto* victim = pick_victim(s);
  if (victim == nullptr) {
    if (!std::exchange(s.no_victim_warned, true))
      spdlog::warn("governor: memory pressure ({}) but no agent left to evict", why);
    return;
  }
  auto id = victim->g.agent_id;
  auto text = why + "; " + victim_text(*victim);
  s.holdings[id].evicting = true;
  auto ticket = s.next_seq++;
  s.evicting = eviction{id, ticket};
  s.evictions_total += 1;
  if (const auto& m = s.opts.metrics)
    m->eviction();
  log::agent(id).warn("evicting: {}", text);
  self->send(s.spawner, evict_request{id, std::move(text)});
  self->delayed_send(self, ms{s.opts.host.evict_timeout_ms}, evict_timeout_atom::value,
                     ticket);
}

void on_evict_timeout(self_ptr self, uint64_t ticket) {
  auto& s = self->state;
  if (!s.evicting || s.evicting->ticket != ticket)
    return;
  log::agent(s.evicting->agent_id)
    .warn("not released {} ms after its eviction; another may be picked",
          s.opts.host.evict_timeout_ms);
  s.evicting.reset();
  check_pressure(self);
}

void on_tick(self_ptr self) {
  auto& s = self->state;
  // procfs reads do not block on I/O; reading here keeps the actor simple.
  auto mem = read_meminfo(s.opts.proc_root);
  if (mem) {
    s.host_available = mem->available_bytes;
    s.meminfo_warned = false;
  } else {
    s.host_available.reset();
    if (!std::exchange(s.meminfo_warned, true))
      spdlog::warn("governor: {}; the MemAvailable check is off until it reads",
                   mem.err().message);
  }
  publish(s);
  check_pressure(self);
  self->delayed_send(self, ms{s.opts.host.pressure_check_ms}, tick_atom::value);
}

// --- events from agents ----------------------------------------------------------

void on_release(self_ptr self, const std::string& id) {
  auto& s = self->state;
  auto i = s.holdings.find(id);
  if (i == s.holdings.end()) {
    log::agent(id).debug("release of an agent without a grant: ignored");
    return;
  }
  const auto& g = i->second.g;
  s.used.memory_bytes -= g.memory_bytes;
  s.used.pids -= g.pids;
  s.used.agents -= 1;
  s.memory_in_use -= i->second.in_use;
  s.holdings.erase(i);
  log::agent(id).info("released");
  if (s.evicting && s.evicting->agent_id == id)
    s.evicting.reset();
  drain_queue(self);
  publish(s);
  check_pressure(self);
}

void on_usage(self_ptr self, const agent_usage& u) {
  auto& s = self->state;
  auto i = s.holdings.find(u.id);
  if (i == s.holdings.end()) {
    log::agent(u.id).debug("usage of an agent without a grant: ignored");
    return;
  }
  s.memory_in_use = s.memory_in_use - i->second.in_use + u.memory_bytes;
  i->second.in_use = u.memory_bytes;
  publish(s);
  check_pressure(self);
}

void on_oom(self_ptr self, const agent_oom& o) {
  auto& s = self->state;
  s.oom_kills_total += 1;
  uint64_t mine = 1;
  if (auto i = s.holdings.find(o.id); i != s.holdings.end())
    mine = ++i->second.oom_kills;
  log::agent(o.id).warn("OOM kill at limit {} (peak {}); {} for this agent, {} in all",
                        bytes_text(o.limit_bytes), bytes_text(o.peak_bytes), mine,
                        s.oom_kills_total);
}

governor_state snapshot(const gov_state& s) {
  governor_state st;
  st.total = s.total;
  st.used = s.used;
  st.memory_in_use_bytes = s.memory_in_use;
  st.queued = static_cast<uint32_t>(s.queue.size());
  st.granted_total = s.granted_total;
  st.denied_total = s.denied_total;
  st.oom_kills_total = s.oom_kills_total;
  st.evictions_total = s.evictions_total;
  st.host_available_bytes = s.host_available.value_or(0);
  std::vector<const holding*> by_age;
  for (const auto& [id, h] : s.holdings)
    by_age.push_back(&h);
  std::sort(by_age.begin(), by_age.end(),
            [](const holding* a, const holding* b) { return a->seq < b->seq; });
  for (const auto* h : by_age)
    st.agents.push_back(governor_agent{h->g.agent_id, h->g.memory_bytes, h->g.pids,
                                       h->in_use, h->oom_kills, h->evicting});
  for (const auto& w : s.queue)
    st.queue.push_back(w.req.agent_id);
  if (s.evicting)
    st.evicting = s.evicting->agent_id;
  return st;
}

// --- the actor -------------------------------------------------------------------

caf::behavior governor(self_ptr self, governor_options opts, host_budget b, std::string broken) {
  auto& s = self->state;
  s.opts = std::move(opts);
  s.total = budget{b.memory_bytes, b.cpus, b.agents, b.pids};
  s.broken = std::move(broken);
  publish_budget(s);
  publish(s);
  self->set_exit_handler([self](caf::exit_msg& m) {
    answer_queue_draining(self);
    self->quit(m.reason);
  });
  self->send(self, tick_atom::value);
  return {
    [self](grant_atom, grant_request& r) {
      auto rp = self->make_response_promise<grant>();
      on_grant(self, r, rp);
      return rp;
    },
    [self](release_atom, const std::string& id) { on_release(self, id); },
    [self](const agent_usage& u) { on_usage(self, u); },
    [self](const agent_oom& o) { on_oom(self, o); },
    [self](get_atom) { return snapshot(self->state); },
    [self](attach_atom, caf::actor spawner) {
      self->state.spawner = std::move(spawner);
      check_pressure(self);
    },
    [self](shutdown_atom) {
      answer_queue_draining(self);
      self->quit();
    },
    [self](deadline_atom, uint64_t ticket) { on_deadline(self, ticket); },
    [self](evict_timeout_atom, uint64_t ticket) { on_evict_timeout(self, ticket); },
    [self](tick_atom) { on_tick(self); },
    [self](pressure_atom, uint64_t memory_bytes, uint32_t duration_ms) -> caf::result<void> {
      auto& s = self->state;
      if (!s.opts.allow_faults)
        return make_error(errc::bad_request, "governor: faults are off (agents.allow_faults)");
      if (!s.budget_before_pressure)
        s.budget_before_pressure = s.total.memory_bytes;
      spdlog::warn("governor: chaos: memory budget {} for {} ms (was {})",
                   bytes_text(memory_bytes), duration_ms, bytes_text(*s.budget_before_pressure));
      s.total.memory_bytes = memory_bytes;
      if (const auto& m = s.opts.metrics)
        m->fault_injected(metrics::fault_kind::governor_pressure);
      self->delayed_send(self, ms{duration_ms}, pressure_over_atom::value, ++s.pressure_ticket);
      publish_budget(s);
      check_pressure(self);
      return caf::unit;
    },
    [self](pressure_over_atom, uint64_t ticket) {
      auto& s = self->state;
      if (ticket != s.pressure_ticket || !s.budget_before_pressure)
        return; // a later pressure fault owns the budget now
      s.total.memory_bytes = *s.budget_before_pressure;
      s.budget_before_pressure.reset();
      spdlog::info("governor: chaos: memory budget restored to {}", bytes_text(s.total.memory_bytes));
      publish_budget(s);
      drain_queue(self);
      publish(s);
    },
  };
}

} // namespace

governor_options make_governor_options(const config& cfg) {
  governor_options o;
  o.host = cfg.host;
  o.max_queued = cfg.host.max_queued;
  o.allow_faults = cfg.agents.allow_faults;
  return o;
}

caf::actor spawn_resource_governor(caf::actor_system& sys, io::io_thread*,
                                   governor_options opts) {
  host_budget b;
  std::string broken;
  if (auto r = detect_budget(opts.host, opts.proc_root)) {
    b = *r;
    spdlog::info("governor: budget {} memory, {} CPUs, {} agents, {} pids", bytes_text(b.memory_bytes),
                 b.cpus, b.agents, b.pids);
  } else {
    broken = "the host budget could not be detected: " + r.err().message;
    spdlog::error("governor: {}", broken);
  }
  return sys.spawn(governor, std::move(opts), b, std::move(broken));
}

} // namespace agentvisor

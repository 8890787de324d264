// The spawner's OTP logic over test children: small CAF actors speaking
// the vm_actor protocol (agent_ready after a short delay, calls, get, stop,
// kill ending with make_down_error). The scenarios of
// spawner_scenarios.hpp run here and, later, over real sandboxes; the
// cases below them need what only a test child can do (ignore a stop, hold
// a call, never become ready). Nothing asserts speed: waits are generous
// and checks are about order and counts.

#include "spawner_scenarios.hpp"

#include "resource_governor.hpp"

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>
#include <set>

using namespace agentvisor;
using namespace agentvisor::testing;

namespace {

using ready_atom = caf::atom_constant<caf::atom("ready")>;
using die_atom = caf::atom_constant<caf::atom("die")>;

/// How test children behave, per child id (ids are predictable: a-1, a-2,
/// ...). Shared with the children's threads.
struct control {
  std::mutex m;
  /// Ignore stop and kill: only exit(kill) ends them.
  std::set<std::string> stubborn;
  /// Die with spawn_failed instead of becoming ready.
  std::set<std::string> never_ready;
  /// Die without answering held calls (as an actor that crashed would).
  bool drop_held = false;
  std::map<std::string, int> incarnations;
  std::map<std::string, std::vector<std::chrono::steady_clock::time_point>> spawn_times;
  /// Set under `m` once children may be spawning.
  std::chrono::milliseconds ready_delay{10};
  /// Children that sent agent_ready (after the send: a request the test
  /// sends after seeing it queues behind the agent_ready).
  int readies = 0;

  int ready_count() {
    std::lock_guard<std::mutex> g{m};
    return readies;
  }

  std::chrono::milliseconds delay() {
    std::lock_guard<std::mutex> g{m};
    return ready_delay;
  }

  int spawned(const std::string& id) {
    std::lock_guard<std::mutex> g{m};
    spawn_times[id].push_back(std::chrono::steady_clock::now());
    return ++incarnations[id];
  }

  bool has(const std::set<std::string>& s, const std::string& id) {
    std::lock_guard<std::mutex> g{m};
    return s.count(id) > 0;
  }
};

struct test_child_state {
  std::vector<caf::typed_response_promise<tool_result>> held;
};

/// A call whose tool is "hold" is held (unanswered) by the first
/// incarnation of a child, and answered at once by later ones: a call in
/// flight when the child goes down, served by the replacement if retried.
caf::behavior test_child(caf::stateful_actor<test_child_state>* self, vm_options o,
                         caf::actor parent, std::shared_ptr<control> ctl) {
  auto id = o.spec.id;
  int incarnation = ctl->spawned(id);
  auto die = [=](down_info d) {
    if (!ctl->drop_held)
      for (auto& rp : self->state.held)
        rp.deliver(make_error(errc::agent_down, "agent " + id + " went down: " + describe(d)));
    self->state.held.clear();
    self->quit(make_down_error(d));
  };
  if (ctl->has(ctl->never_ready, id))
    self->delayed_send(self, ctl->delay(), die_atom::value);
  else
    self->delayed_send(self, ctl->delay(), ready_atom::value);
  return {
    [=](ready_atom) {
      self->send(parent, agent_ready{id, 4242, "test", 1});
      std::lock_guard<std::mutex> g{ctl->m};
      ++ctl->readies;
    },
    [=](die_atom) { die(down_info{id, down_reason::spawn_failed, 0, 0, "no ready line"}); },
    [=](call_atom, tool_call& c) -> caf::result<tool_result> {
      if (c.tool == "hold" && incarnation == 1) {
        auto rp = self->make_response_promise<tool_result>();
        self->state.held.push_back(rp);
        return rp;
      }
      tool_result r;
      r.result_json = "{\"by\":\"" + id + "#" + std::to_string(incarnation) + "\"}";
      return r;
    },
    [=](get_atom) {
      agent_info i;
      i.id = id;
      i.state = vm_state::ready;
      i.backend = "test";
      i.pid = 4242;
      i.calls_in_flight = static_cast<uint32_t>(self->state.held.size());
      return i;
    },
    [=](stop_atom, uint32_t) {
      if (!ctl->has(ctl->stubborn, id))
        die(down_info{id, down_reason::stopped, 0, 0, ""});
    },
    [=](kill_atom, down_reason r, std::string& detail) {
      if (!ctl->has(ctl->stubborn, id))
        die(down_info{id, r, 0, 0, detail});
    },
  };
}

child_factory test_children(std::shared_ptr<control> ctl) {
  return [ctl](caf::actor_system& sys, const vm_options& o, const caf::actor& parent) {
    return sys.spawn(test_child, o, parent, ctl);
  };
}

struct test_fixture : spawner_fixture {
  std::shared_ptr<control> ctl;

  test_fixture() : test_fixture(std::make_shared<control>()) {}
  explicit test_fixture(std::shared_ptr<control> c)
    : spawner_fixture(test_children(c)), ctl(std::move(c)) {}
};

/// Answers of calls sent from their own actors, so that many are pending at
/// once.
struct tally {
  std::atomic<int> sent{0};
  std::atomic<int> answered{0};
  std::mutex m;
  std::vector<caf::expected<tool_result>> answers;
};

void async_call(test_fixture& f, std::shared_ptr<tally> t, std::string id, tool_call c) {
  ++t->sent;
  f.sys.spawn([sp = f.sp, t, id, c](caf::event_based_actor* self) {
    self->request(sp, std::chrono::seconds(60), call_atom::value, id, c)
      .then(
        [t](tool_result& r) {
          std::lock_guard<std::mutex> g{t->m};
          t->answers.emplace_back(std::move(r));
          ++t->answered;
        },
        [t](caf::error& e) {
          std::lock_guard<std::mutex> g{t->m};
          t->answers.emplace_back(std::move(e));
          ++t->answered;
        });
  });
}

tool_call make_call(std::string tool, bool retryable) {
  tool_call c;
  c.tool = std::move(tool);
  c.retryable = retryable;
  return c;
}

struct granted_state {
  std::shared_ptr<child_log> log;
};

/// A governor that grants everything below 1 GiB and logs grants and
/// releases; larger requests get over_budget.
caf::behavior test_governor(caf::stateful_actor<granted_state>* self,
                            std::shared_ptr<child_log> log) {
  self->state.log = log;
  return {
    [=](grant_atom, grant_request& r) -> caf::result<grant> {
      if (r.memory_bytes >= (uint64_t{1} << 30))
        return make_error(errc::over_budget, "agent " + r.agent_id + " needs "
                                               + std::to_string(r.memory_bytes)
                                               + " bytes, the host has 1073741824");
      self->state.log->add("grant " + r.agent_id);
      return grant{r.agent_id, r.memory_bytes, r.pids};
    },
    [=](release_atom, std::string& id) { self->state.log->add("release " + id); },
  };
}

} // namespace

// --- pure functions -------------------------------------------------------------

TEST_CASE("restart_backoff stays within min(max, min*2^k) * [1, 1+random_factor]") {
  supervision_config cfg;
  cfg.min_backoff_ms = 10;
  cfg.max_backoff_ms = 5000;
  cfg.random_factor = 0.2;
  std::mt19937_64 rng{42};
  for (uint32_t k = 0; k < 40; ++k) {
    double base = std::min(5000.0, 10.0 * std::pow(2.0, k));
    for (int i = 0; i < 1000; ++i) {
      auto d = restart_backoff(cfg, k, rng).count();
      REQUIRE(d >= static_cast<int64_t>(base));
      REQUIRE(d <= static_cast<int64_t>(base * 1.2));
    }
  }
  // random_factor 0: exactly the base; huge k does not overflow.
  cfg.random_factor = 0;
  CHECK(restart_backoff(cfg, 0, rng).count() == 10);
  CHECK(restart_backoff(cfg, 3, rng).count() == 80);
  CHECK(restart_backoff(cfg, 1000, rng).count() == 5000);
}

// --- scenarios shared with real sandboxes --------------------------------------

TEST_CASE_FIXTURE(test_fixture, "one_for_one restarts only the child that failed (test children)") {
  scenario_one_for_one(*this);
}
TEST_CASE_FIXTURE(test_fixture, "simple_one_for_one restarts only the child that failed (test children)") {
  scenario_simple_one_for_one(*this);
}
TEST_CASE_FIXTURE(test_fixture, "one_for_all stops the others in reverse order and restarts all in order (test children)") {
  scenario_one_for_all(*this);
}
TEST_CASE_FIXTURE(test_fixture, "rest_for_one restarts the failed child and those started after it (test children)") {
  scenario_rest_for_one(*this);
}
TEST_CASE_FIXTURE(test_fixture, "permanent, transient and temporary children restart as OTP says (test children)") {
  scenario_restart_types(*this);
}
TEST_CASE_FIXTURE(test_fixture, "an evicted permanent child is restarted (test children)") {
  scenario_evicted_permanent_restarts(*this);
}
TEST_CASE_FIXTURE(test_fixture, "too many restarts escalate to the parent's down_msg (test children)") {
  scenario_intensity_escalates(*this);
}
TEST_CASE_FIXTURE(test_fixture, "stop by id removes the child for good (test children)") {
  scenario_stop_removes(*this);
}
TEST_CASE_FIXTURE(test_fixture, "shutdown stops children in reverse start order, then refuses starts (test children)") {
  scenario_shutdown_order(*this);
}
TEST_CASE_FIXTURE(test_fixture, "bad requests name the field and spawn nothing (test children)") {
  scenario_bad_requests(*this);
}

// --- what only test children can show -------------------------------------------

TEST_CASE_FIXTURE(test_fixture, "restarts wait at least min_backoff (test children)") {
  opts.supervision.min_backoff_ms = 300;
  opts.supervision.max_backoff_ms = 300;
  opts.supervision.random_factor = 0.5;
  start_spawner();
  auto a = start_ok("a");
  auto killed = std::chrono::steady_clock::now();
  kill(a, down_reason::crashed, "boom");
  REQUIRE(ready_after(a, 1));
  std::lock_guard<std::mutex> g{ctl->m};
  REQUIRE(ctl->spawn_times[a].size() == 2);
  CHECK(ctl->spawn_times[a][1] - killed >= std::chrono::milliseconds(300));
}

TEST_CASE_FIXTURE(test_fixture, "calls for a restarting child are served by its replacement (test children)") {
  opts.supervision.min_backoff_ms = 500;
  opts.supervision.max_backoff_ms = 500;
  start_spawner();
  auto a = start_ok("a");
  kill(a, down_reason::crashed, "boom");
  // Once the spawner knows it is down, calls queue for the replacement.
  REQUIRE(eventually([&] {
    auto x = get(a);
    return x && x->state == vm_state::spawning;
  }));
  auto t = std::make_shared<tally>();
  for (int i = 0; i < 5; ++i)
    async_call(*this, t, a, make_call("echo", false));
  REQUIRE(eventually([&] { return t->answered == 5; }));
  std::lock_guard<std::mutex> g{t->m};
  for (auto& x : t->answers) {
    REQUIRE(x);
    CHECK(x->result_json == "{\"by\":\"" + a + "#2\"}");
    CHECK(x->attempts == 1);
  }
}

TEST_CASE_FIXTURE(test_fixture, "a retryable call is retried once on the replacement, others fail with the reason (test children)") {
  start_spawner();
  auto a = start_ok("a");
  auto t = std::make_shared<tally>();
  async_call(*this, t, a, make_call("hold", true));
  auto u = std::make_shared<tally>();
  async_call(*this, u, a, make_call("hold", false));
  REQUIRE(eventually([&] {
    auto x = get(a);
    return x && x->calls_in_flight == 2;
  }));
  kill(a, down_reason::oom, "OOM kill at limit 67108864 bytes");
  REQUIRE(eventually([&] { return t->answered == 1 && u->answered == 1; }));
  std::lock_guard<std::mutex> g{t->m};
  REQUIRE(t->answers[0]);
  CHECK(t->answers[0]->attempts == 2);
  CHECK(t->answers[0]->result_json == "{\"by\":\"" + a + "#2\"}");
  REQUIRE(!u->answers[0]);
  auto v = view(u->answers[0].error());
  CHECK(v.code == errc::agent_down);
  CHECK(v.message.find("oom: OOM kill at limit 67108864 bytes") != std::string::npos);
}

TEST_CASE_FIXTURE(test_fixture, "no call is lost under repeated kills (test children)") {
  SUBCASE("children answer their held calls with agent_down when they die") {
    ctl->drop_held = false;
  }
  SUBCASE("children die without answering their held calls") {
    ctl->drop_held = true;
  }
  start_spawner();
  auto a = start_ok("a"), b = start_ok("b");
  auto t = std::make_shared<tally>();
  for (uint32_t round = 1; round <= 5; ++round) {
    for (int i = 0; i < 8; ++i) {
      async_call(*this, t, a, make_call(i % 2 ? "hold" : "echo", i % 3 == 0));
      async_call(*this, t, b, make_call("echo", i % 2 == 0));
    }
    kill(a, round % 2 ? down_reason::crashed : down_reason::hung, "round " + std::to_string(round));
    REQUIRE(ready_after(a, round));
  }
  REQUIRE(eventually([&] { return t->answered == t->sent; }));
  auto [received, answered] = call_counts();
  CHECK(received == static_cast<uint64_t>(t->sent));
  CHECK(answered == received);
  // Stopping a child with queued and held calls answers them too.
  auto before = t->sent.load();
  for (int i = 0; i < 4; ++i)
    async_call(*this, t, b, make_call("hold", false));
  REQUIRE(eventually([&] { return call_counts().first == static_cast<uint64_t>(before + 4); }));
  REQUIRE(stop(b));
  REQUIRE(eventually([&] { return t->answered == t->sent; }));
  auto counts = call_counts();
  CHECK(counts.first == counts.second);
}

TEST_CASE_FIXTURE(test_fixture, "shutdown forces a child that ignores stop (test children)") {
  opts.supervision.shutdown_timeout_ms = 200;
  start_spawner();
  auto a = start_ok("a"), b = start_ok("b"), c = start_ok("c");
  {
    std::lock_guard<std::mutex> g{ctl->m};
    ctl->stubborn.insert(b);
  }
  auto mark = log->size();
  REQUIRE(shutdown());
  // b ignored stop and kill: it ended by exit(kill), read as crashed.
  CHECK(downs_since(mark, 3) == ids{c + " stopped", b + " crashed", a + " stopped"});
}

TEST_CASE_FIXTURE(test_fixture, "the warm pool hands out ready children and refills (test children)") {
  opts.pool.warm = 2;
  start_spawner();
  REQUIRE(eventually([&] { return log->total_spawns() == 2; }));
  // Pool members are not agents.
  REQUIRE(eventually([&] { return list().empty(); }));
  // Once both are ready, a start takes one: no spawn for it.
  REQUIRE(eventually([&] { return ctl->ready_count() == 2; }));
  auto x = start("w1");
  REQUIRE(x);
  CHECK((x->id == "a-1" || x->id == "a-2"));
  CHECK(x->name == "w1");
  CHECK(x->state == vm_state::ready);
  CHECK(log->spawns(x->id) == 1);
  // The pool refills in the background.
  REQUIRE(eventually([&] { return log->total_spawns() == 3; }));
  // A request that differs from the defaults gets a machine of its own.
  auto y = start("big", restart_type::permanent, 128);
  REQUIRE(y);
  CHECK(y->id == "a-4");
  CHECK(y->memory_limit_bytes == (uint64_t{128} << 20));
  auto all = list();
  REQUIRE(all.size() == 2);
  CHECK(all[0].name == "w1");
  CHECK(all[1].name == "big");
}

TEST_CASE_FIXTURE(test_fixture, "an agent on another enabled backend gets its own machine, its spec naming that backend (test children)") {
  opts.pool.warm = 1;
  opts.backends = {backend_kind::sandbox, backend_kind::qemu};
  // Which backend each spawned machine's spec names.
  struct seen_t {
    std::mutex m;
    std::vector<std::string> backends;
  };
  auto seen = std::make_shared<seen_t>();
  inner = [seen, orig = inner](caf::actor_system& s, const vm_options& o, const caf::actor& p) {
    {
      std::lock_guard<std::mutex> lock{seen->m};
      seen->backends.push_back(o.spec.backend);
    }
    return orig(s, o, p);
  };
  start_spawner();
  REQUIRE(eventually([&] { return ctl->ready_count() == 1; }));
  // The pool runs on the default backend; a qemu agent is spawned cold.
  agent_request q;
  q.name = "vm";
  q.backend = "qemu";
  auto x = ask<agent_info>(start_atom::value, q);
  REQUIRE_MESSAGE(x, sys.render(x.error()));
  CHECK(log->spawns(x->id) == 1);
  CHECK(log->total_spawns() == 2);
  auto info = get(x->id);
  REQUIRE(info);
  CHECK(info->name == "vm");
  {
    std::lock_guard<std::mutex> lock{seen->m};
    CHECK(seen->backends == std::vector<std::string>{"sandbox", "qemu"});
  }
  // A request for the default backend, named or not, takes the pool member.
  agent_request d;
  d.name = "sb";
  d.backend = "sandbox";
  auto y = ask<agent_info>(start_atom::value, d);
  REQUIRE(y);
  CHECK(y->backend == "sandbox");
  CHECK(y->id == "a-1");
  // Still refused: a backend that is not enabled.
  agent_request f;
  f.name = "fc";
  f.backend = "firecracker";
  auto z = ask<agent_info>(start_atom::value, f);
  REQUIRE_FALSE(z);
  CHECK(view(z.error()).message
        == "backend \"firecracker\" is not enabled here (enabled: qemu, sandbox)");
}

TEST_CASE_FIXTURE(test_fixture, "pool members restart alone, even under one_for_all (test children)") {
  opts.pool.warm = 1;
  opts.supervision.strategy = restart_strategy::one_for_all;
  start_spawner();
  REQUIRE(eventually([&] { return ctl->ready_count() == 1; }));
  // Not the default spec: these get machines of their own.
  auto b = start("b", restart_type::permanent, 128);
  auto c = start("c", restart_type::permanent, 128);
  REQUIRE(b);
  REQUIRE(c);
  std::string pooled = "a-1";
  auto mark = log->size();
  kill(pooled, down_reason::crashed, "boom");
  REQUIRE(eventually([&] { return ctl->ready_count() == 4; }));
  // A group restart would have stopped b and c right away.
  for (auto& i : list()) {
    CHECK(i.state == vm_state::ready);
    CHECK(i.restarts == 0);
  }
  CHECK(log->since(mark, "spawn ") == ids{pooled});
  CHECK(log->spawns(b->id) == 1);
  CHECK(log->spawns(c->id) == 1);
}

TEST_CASE_FIXTURE(test_fixture, "a child that dies before ready fails its start with spawn_failed (test children)") {
  ctl->never_ready.insert("a-1");
  start_spawner();
  auto x = start("doomed");
  REQUIRE(!x);
  auto v = view(x.error());
  CHECK(v.code == errc::spawn_failed);
  CHECK(v.message.find("spawn_failed: no ready line") != std::string::npos);
  CHECK(list().empty());
  CHECK(log->spawns("a-1") == 1); // a failed start is not restarted
}

TEST_CASE_FIXTURE(test_fixture, "the governor's refusal reaches the start caller; grants are released (test children)") {
  governor = sys.spawn(test_governor, log);
  extra.push_back(governor);
  start_spawner();
  auto x = start("huge", restart_type::permanent, 4096);
  REQUIRE(!x);
  CHECK(view(x.error()).code == errc::over_budget);
  CHECK(view(x.error()).message.find("needs 4294967296 bytes") != std::string::npos);
  CHECK(log->total_spawns() == 0);
  auto a = start_ok("a");
  kill(a, down_reason::crashed, "boom");
  REQUIRE(ready_after(a, 1));
  REQUIRE(stop(a));
  REQUIRE(eventually([&] { return log->since(0, "release ").size() == 2; }));
  CHECK(log->since(0, "grant ") == ids{a, a});
  CHECK(log->since(0, "release ") == ids{a, a});
}

TEST_CASE_FIXTURE(test_fixture, "escalation answers pending calls and starts before the spawner quits (test children)") {
  opts.supervision.max_restarts = 0;
  ctl->ready_delay = std::chrono::milliseconds(300);
  start_spawner();
  self()->monitor(sp);
  auto a = start_ok("a");
  auto b = start_ok("b");
  auto t = std::make_shared<tally>();
  async_call(*this, t, b, make_call("hold", false));
  async_call(*this, t, b, make_call("hold", true));
  REQUIRE(eventually([&] {
    auto x = get(b);
    return x && x->calls_in_flight == 2;
  }));
  // A start still waiting for its child's ready line.
  auto pending = std::make_shared<std::atomic<int>>(0);
  auto starter = sys.spawn([sp = sp, pending](caf::event_based_actor* s) {
    agent_request req;
    req.name = "late";
    s->request(sp, std::chrono::seconds(60), start_atom::value, req)
      .then([pending](agent_info&) { *pending = 1; },
            [pending](caf::error& e) { *pending = view(e).code == errc::escalated ? 2 : 3; });
  });
  REQUIRE(eventually([&] { return log->total_spawns() == 3; }));
  kill(a, down_reason::crashed, "boom");
  caf::error reason;
  self()->receive([&](caf::down_msg& dm) { reason = dm.reason; });
  CHECK(view(reason).code == errc::escalated);
  REQUIRE(eventually([&] { return t->answered == 2 && *pending != 0; }));
  CHECK(*pending == 2);
  sp = nullptr;
}

// --- restarts on the warm pool ---------------------------------------------------

namespace {

/// A real resource_governor with an explicit budget (no detection, no
/// pressure): its state shows what is granted.
caf::actor real_governor(caf::actor_system& sys) {
  governor_options g;
  g.host.memory_mb = 4096;
  g.host.cpus = 2;
  g.host.max_agents = 64;
  g.host.pids = 1u << 20;
  g.host.min_available_mb = 0;
  g.host.pressure_high_water = 1.0;
  return spawn_resource_governor(sys, nullptr, g);
}

governor_state governor_now(spawner_fixture& f) {
  governor_state out;
  f.self()
    ->request(f.governor, caf::infinite, get_atom::value)
    .receive([&](governor_state& s) { out = std::move(s); },
             [&](caf::error& err) { FAIL(caf::to_string(err)); });
  return out;
}

std::vector<std::string> granted_ids(spawner_fixture& f) {
  std::vector<std::string> out;
  for (auto& a : governor_now(f).agents)
    out.push_back(a.agent_id);
  std::sort(out.begin(), out.end());
  return out;
}

/// The pool is full and every child (pool members and agents) is ready.
bool settled(test_fixture& f, int spawns) {
  return f.eventually([&] {
    return f.log->total_spawns() == spawns && f.ctl->ready_count() == spawns;
  });
}

/// Every grant the test governor logged was released exactly once, after it
/// was granted: no leak, no double release.
void check_grants_balance(const child_log& log) {
  std::map<std::string, int> held;
  for (auto& e : log.events()) {
    if (e.rfind("grant ", 0) == 0) {
      auto& n = held[e.substr(6)];
      CHECK_MESSAGE(n == 0, "granted twice without release: " << e);
      ++n;
    } else if (e.rfind("release ", 0) == 0) {
      auto& n = held[e.substr(8)];
      CHECK_MESSAGE(n == 1, "released without a grant held: " << e);
      --n;
    }
  }
  for (auto& [id, n] : held)
    CHECK_MESSAGE(n == 0, "grant of " << id << " leaked");
}

} // namespace

TEST_CASE_FIXTURE(test_fixture, "a crashed child with the pool's spec restarts on a ready pool member (test children)") {
  opts.pool.warm = 2;
  opts.supervision.min_backoff_ms = 200; // calls queue while it restarts
  opts.supervision.max_backoff_ms = 200;
  governor = sys.spawn(test_governor, log);
  extra.push_back(governor);
  start_spawner();
  REQUIRE(settled(*this, 2));
  auto x = start("w");
  REQUIRE(x);
  auto a = x->id;
  CHECK(x->machine == a); // handed out: the member's id is the agent's
  REQUIRE(settled(*this, 3));
  auto mark = log->size();
  kill(a, down_reason::crashed, "boom");
  REQUIRE(eventually([&] {
    auto i = get(a);
    return i && i->state == vm_state::spawning;
  }));
  auto t = std::make_shared<tally>();
  for (int i = 0; i < 3; ++i)
    async_call(*this, t, a, make_call("echo", false));
  REQUIRE(ready_after(a, 1));
  auto info = get(a);
  REQUIRE(info);
  CHECK(info->id == a);
  CHECK(info->name == "w");
  CHECK(info->last_down_reason == "crashed: boom");
  CHECK(info->machine != a);
  auto m1 = info->machine;
  // No cold spawn for the agent: its machine was a ready pool member.
  CHECK(log->spawns(a) == 1);
  CHECK(log->spawns(m1) == 1);
  // The calls queued during the restart went to the adopted machine.
  REQUIRE(eventually([&] { return t->answered == 3; }));
  {
    std::lock_guard<std::mutex> g{t->m};
    for (auto& r : t->answers) {
      REQUIRE(r);
      CHECK(r->result_json == "{\"by\":\"" + m1 + "#1\"}");
    }
  }
  // The pool refills in the background, and the member is no agent.
  REQUIRE(settled(*this, 4));
  CHECK(log->since(mark, "spawn ").size() == 1);
  CHECK(log->since(mark, "spawn ") != ids{a});
  auto all = list();
  REQUIRE(all.size() == 1);
  CHECK(all[0].id == a);
  CHECK(all[0].machine == m1);
  // Again, through the adopted machine: another member, still no spawn of a.
  kill(m1, down_reason::oom, "OOM kill");
  REQUIRE(ready_after(a, 2));
  auto m2 = get(a)->machine;
  CHECK(m2 != m1);
  CHECK(m2 != a);
  CHECK(log->spawns(a) == 1);
  REQUIRE(settled(*this, 5));
  auto r = call(a, make_call("echo", false));
  REQUIRE(r);
  CHECK(r->result_json == "{\"by\":\"" + m2 + "#1\"}");
  REQUIRE(stop(a));
  REQUIRE(shutdown());
  REQUIRE(eventually([&] {
    return log->since(0, "release ").size() == log->since(0, "grant ").size();
  }));
  CHECK(log->since(0, "grant ").size() == 5);
  check_grants_balance(*log);
}

TEST_CASE_FIXTURE(test_fixture, "grants follow the machine through pool restarts and stops (test children)") {
  opts.pool.warm = 2;
  opts.supervision.min_backoff_ms = 1;
  opts.supervision.max_backoff_ms = 1;
  governor = real_governor(sys);
  extra.push_back(governor);
  start_spawner();
  REQUIRE(settled(*this, 2));
  auto a = start_ok("a");
  REQUIRE(settled(*this, 3));
  auto b = start_ok("b");
  REQUIRE(settled(*this, 4));
  int spawns = 4;
  for (int round = 1; round <= 4; ++round) {
    auto victim = round % 2 ? a : b;
    auto machine = get(victim)->machine;
    kill(machine, down_reason::crashed, "round " + std::to_string(round));
    REQUIRE(ready_after(victim, static_cast<uint32_t>((round + 1) / 2)));
    REQUIRE(settled(*this, ++spawns));
    CHECK(get(victim)->machine != machine);
    // Two agents and two pool members hold a grant each, under their
    // machine ids.
    auto g = governor_now(*this);
    CHECK(g.used.agents == 4);
    CHECK(g.used.memory_bytes == 4 * (uint64_t{64} << 20));
    auto held = granted_ids(*this);
    CHECK(std::find(held.begin(), held.end(), get(a)->machine) != held.end());
    CHECK(std::find(held.begin(), held.end(), get(b)->machine) != held.end());
  }
  CHECK(log->spawns(a) == 1);
  CHECK(log->spawns(b) == 1);
  REQUIRE(stop(a));
  REQUIRE(eventually([&] { return governor_now(*this).used.agents == 3; }));
  REQUIRE(shutdown());
  REQUIRE(eventually([&] {
    auto g = governor_now(*this);
    return g.used.agents == 0 && g.used.memory_bytes == 0;
  }));
}

TEST_CASE_FIXTURE(test_fixture, "a child whose spec differs from the pool's restarts cold (test children)") {
  opts.pool.warm = 1;
  governor = sys.spawn(test_governor, log);
  extra.push_back(governor);
  start_spawner();
  REQUIRE(settled(*this, 1));
  auto big = start("big", restart_type::permanent, 128);
  REQUIRE(big);
  REQUIRE(settled(*this, 2));
  kill(big->id, down_reason::crashed, "boom");
  REQUIRE(ready_after(big->id, 1));
  CHECK(get(big->id)->machine == big->id);
  CHECK(log->spawns(big->id) == 2);
  // The pool member is untouched.
  CHECK(log->total_spawns() == 3);
  CHECK(list().size() == 1);
  REQUIRE(stop(big->id));
  REQUIRE(shutdown());
  REQUIRE(eventually([&] {
    return log->since(0, "release ").size() == log->since(0, "grant ").size();
  }));
  check_grants_balance(*log);
}

TEST_CASE_FIXTURE(test_fixture, "a restart with no ready pool member spawns cold (test children)") {
  opts.pool.warm = 1;
  start_spawner();
  REQUIRE(settled(*this, 1));
  {
    // Before the hand-out: the refill it starts must not be ready in time
    // (set after it, the refill may already run with the short delay).
    std::lock_guard<std::mutex> g{ctl->m};
    ctl->ready_delay = std::chrono::milliseconds(1500);
  }
  auto a = start_ok("a"); // takes the only member
  REQUIRE(eventually([&] { return log->total_spawns() == 2; }));
  kill(a, down_reason::crashed, "boom");
  REQUIRE(ready_after(a, 1));
  CHECK(get(a)->machine == a);
  CHECK(log->spawns(a) == 2);
}

TEST_CASE_FIXTURE(test_fixture, "with pool.warm = 0 a restart spawns cold under the agent's id (test children)") {
  opts.pool.warm = 0;
  start_spawner();
  auto a = start_ok("a");
  CHECK(get(a)->machine == a);
  kill(a, down_reason::crashed, "boom");
  REQUIRE(ready_after(a, 1));
  CHECK(get(a)->machine == a);
  CHECK(log->spawns(a) == 2);
  CHECK(log->total_spawns() == 2);
}

// The spawner over real sandboxes. Guests are ended from outside (SIGKILL,
// SIGSTOP) or by chaos faults through the spawner's fault route (exit, oom),
// and the checks are what OTP says: which agents got a new machine (a new
// pid), restart counts, the last down reason, escalation, no call lost, no
// cgroup left. The vm_actor-protocol scenarios of spawner_scenarios.hpp run
// again over real vm_actors. Never asserts on speed: every wait is a poll
// with a generous limit.

#include "real_host.hpp"
#include "resource_governor.hpp"
#include "spawner_fixture.hpp"
#include "spawner_scenarios.hpp"
#include "vm_actor.hpp"

#include "agentvisor/messages.hpp"

#include <caf/all.hpp>
#include <doctest/doctest.h>

#include <atomic>
#include <condition_variable>
#include <csignal>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

using namespace agentvisor;
using namespace std::chrono_literals;
using testing::ids;

namespace {

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.rfind(prefix, 0) == 0;
}

bool live(vm_state s) {
  return s == vm_state::ready || s == vm_state::busy;
}

/// A real host and a spawner in its actor system. `recorded`: children are
/// spawned through a factory that spawns vm_actors exactly as the spawner's
/// default does and records them (spawner_scenarios.hpp needs the record);
/// otherwise the spawner's own default factory runs.
struct real_fixture {
  testing::real_host host{"spawner"};
  testing::spawner_fixture sf;

  explicit real_fixture(bool recorded = false)
    : sf(host.sys, [this](caf::actor_system& s, const vm_options& o, const caf::actor& parent) {
        return spawn_vm_actor(s, vm_context{host.backend, &host.io, parent, sf.governor, {}, {}}, o);
      }) {
    sf.backend = host.backend;
    sf.io = &host.io;
    sf.default_factory = !recorded;
    auto& d = sf.opts.defaults;
    d.memory_mb = 64;
    d.workspace_mb = 16;
    d.pids = 64;
    d.heartbeat_ms = 100;
    // Generous: hundreds of calls on two shared cores must not look hung.
    d.hang_timeout_ms = 3000;
    d.ready_timeout_ms = 15000;
    d.allow_faults = true;
    sf.opts.supervision.min_backoff_ms = 5;
    sf.opts.supervision.max_backoff_ms = 50;
    sf.opts.supervision.shutdown_timeout_ms = 4000;
    sf.opts.grant_deadline_ms = 5000;
  }

  ~real_fixture() {
    // The spawner's ordered shutdown (in ~spawner_fixture) runs first; then
    // no machine of this test may be left.
    if (sf.sp && sf.shutdown())
      CHECK(host.live_cgroups() == 0);
  }

  caf::actor start_governor() {
    governor_options g;
    g.host.memory_mb = 4096;
    g.host.cpus = 2;
    g.host.max_agents = 64;
    g.host.pids = 100000;
    // No pressure evictions from whatever else the machine does.
    g.host.pressure_high_water = 1.0;
    g.host.min_available_mb = 0;
    sf.governor = spawn_resource_governor(host.sys, nullptr, g);
    sf.extra.push_back(sf.governor);
    return sf.governor;
  }

  agent_info info(const std::string& id) {
    auto x = sf.get(id);
    REQUIRE_MESSAGE(x, "get " << id << ": " << (x ? "" : view(x.error()).message));
    return *x;
  }

  /// The pid of `id`'s machine, once it is ready.
  int pid_of(const std::string& id) {
    int pid = 0;
    REQUIRE(poll([&] {
      auto x = sf.get(id);
      if (x && live(x->state) && x->pid > 0)
        pid = x->pid;
      return pid > 0;
    }));
    return pid;
  }

  /// Polls every 50 ms, up to 20 s.
  template <class Pred>
  bool poll(Pred pred, std::chrono::milliseconds limit = 20s) {
    auto until = std::chrono::steady_clock::now() + limit;
    while (!pred()) {
      if (std::chrono::steady_clock::now() > until)
        return false;
      std::this_thread::sleep_for(50ms);
    }
    return true;
  }

  /// Until `id` is ready on a machine other than `old_pid`; its info.
  agent_info ready_again(const std::string& id, int old_pid) {
    agent_info out;
    bool ok = poll([&] {
      auto x = sf.get(id);
      if (x && live(x->state) && x->pid > 0 && x->pid != old_pid) {
        out = *x;
        return true;
      }
      return false;
    });
    REQUIRE_MESSAGE(ok, id << " not ready with a new pid (old " << old_pid << ")");
    return out;
  }

  void sigkill(const std::string& id, int pid) {
    INFO("SIGKILL " << id << " pid " << pid);
    REQUIRE(::kill(pid, SIGKILL) == 0);
  }

  caf::expected<tool_result> fault(const std::string& id, fault_request req) {
    return sf.ask<tool_result>(fault_atom::value, id, std::move(req));
  }

  governor_state governor_now() {
    governor_state out;
    sf.self()
      ->request(sf.governor, caf::duration{10s}, get_atom::value)
      .receive([&](governor_state& s) { out = std::move(s); },
               [&](caf::error& e) { FAIL("governor get: " << caf::to_string(e)); });
    return out;
  }
};

struct recorded_fixture : real_fixture {
  recorded_fixture() : real_fixture(true) {}
};

/// Starts `n` agents under `strategy`, SIGKILLs the guest of agent
/// `victim`, and checks that exactly the agents in `restarted` (indexes)
/// got a new machine and a restart, the others kept theirs.
void strategy_case(real_fixture& rf, restart_strategy strategy, int n, int victim,
                   std::set<int> restarted) {
  auto& sf = rf.sf;
  sf.opts.supervision.strategy = strategy;
  sf.start_spawner();
  std::vector<std::string> agents;
  std::vector<int> pids;
  for (int k = 0; k < n; ++k) {
    agents.push_back(sf.start_ok("agent" + std::to_string(k)));
    pids.push_back(rf.pid_of(agents.back()));
  }
  rf.sigkill(agents[victim], pids[victim]);
  // The restarted ones come back on new machines...
  for (int k : restarted) {
    CAPTURE(agents[k]);
    auto i = rf.ready_again(agents[k], pids[k]);
    CHECK(i.restarts == 1);
    if (k == victim)
      CHECK_MESSAGE(starts_with(i.last_down_reason, "crashed"), i.last_down_reason);
    else
      CHECK_MESSAGE(starts_with(i.last_down_reason, "stopped"), i.last_down_reason);
  }
  // ...and the rest never went down (a group restart is over once its
  // members are ready, so this is not a race).
  for (int k = 0; k < n; ++k) {
    if (restarted.count(k) != 0)
      continue;
    CAPTURE(agents[k]);
    auto i = rf.info(agents[k]);
    CHECK(live(i.state));
    CHECK(i.pid == pids[k]);
    CHECK(i.restarts == 0);
    CHECK(i.last_down_reason.empty());
  }
  CHECK(rf.host.live_cgroups() == static_cast<size_t>(n));
}

// --- the load client of "no lost calls" -----------------------------------

using tick_atom = caf::atom_constant<caf::atom("loadtick")>;

struct load_state {
  std::mutex m;
  std::condition_variable cv;
  std::atomic<bool> stop{false};
  int min_calls = 300;
  int max_calls = 3000;
  int sent = 0;
  int answered = 0;
  bool done_sending = false;
  int retryable_sent = 0;
  int retryable_ok = 0;
  int plain_ok = 0;
  int plain_down = 0;
  int retried = 0; // answers saying attempts: 2
  std::vector<std::string> wrong;
  /// One flag per call sent: its answer arrived.
  std::vector<char> done = std::vector<char>(static_cast<std::size_t>(max_calls), 0);

  bool all_answered() {
    return done_sending && answered == sent;
  }

  /// Every call to agent `k` (of `n`) among the first `below` is answered.
  bool settled(int k, int n, int below) {
    for (int i = k; i < below; i += n)
      if (done[static_cast<std::size_t>(i)] == 0)
        return false;
    return true;
  }
};

/// Call `i`: for each agent in turn, list_directory (retryable),
/// execute_command (retryable), write_file (not) and read_file (not).
tool_call make_call(int i, std::size_t agents) {
  auto k = static_cast<int>((i / static_cast<int>(agents)) % 4);
  auto n = std::to_string(i);
  switch (k) {
    case 0: return tool_call{"list_directory", "{}", true, 0};
    case 1: return tool_call{"execute_command", R"({"argv":["/bin/echo",")" + n + R"("]})", true, 0};
    case 2:
      return tool_call{"write_file", R"({"path":"f)" + n + R"(.txt","content":"x)" + n + R"("})",
                       false, 0};
    default: return tool_call{"read_file", R"({"path":"absent.txt"})", false, 0};
  }
}

/// Sends a call every 5 ms, round robin over `agents`, until told to stop
/// (and at least min_calls were sent); records each answer against its call.
caf::behavior load_client(caf::event_based_actor* self, caf::actor sp,
                          std::vector<std::string> agents, std::shared_ptr<load_state> L) {
  self->send(self, tick_atom::value);
  return {
    [=](tick_atom) {
      int i = 0;
      {
        std::lock_guard<std::mutex> g{L->m};
        if ((L->stop && L->sent >= L->min_calls) || L->sent >= L->max_calls) {
          L->done_sending = true;
          L->cv.notify_all();
          return;
        }
        i = L->sent++;
      }
      auto call = make_call(i, agents.size());
      bool retryable = call.retryable;
      bool reads_absent = call.tool == "read_file";
      if (retryable) {
        std::lock_guard<std::mutex> g{L->m};
        ++L->retryable_sent;
      }
      auto id = agents[static_cast<std::size_t>(i) % agents.size()];
      self->request(sp, caf::duration{120s}, call_atom::value, id, std::move(call))
        .then(
          [=](tool_result& r) {
            std::lock_guard<std::mutex> g{L->m};
            ++L->answered;
            L->done[static_cast<std::size_t>(i)] = 1;
            L->retried += r.attempts == 2 ? 1 : 0;
            // read_file of a file no agent has: the guest's not_found.
            bool good = reads_absent ? (!r.ok && r.error_code == "not_found") : r.ok;
            if (!good)
              L->wrong.push_back("call " + std::to_string(i) + " to " + id + ": "
                                 + r.error_code + " " + r.error_message);
            else if (retryable)
              ++L->retryable_ok;
            else
              ++L->plain_ok;
            L->cv.notify_all();
          },
          [=](caf::error& e) {
            std::lock_guard<std::mutex> g{L->m};
            ++L->answered;
            L->done[static_cast<std::size_t>(i)] = 1;
            auto v = view(e);
            if (!retryable && v.code == errc::agent_down)
              ++L->plain_down;
            else
              L->wrong.push_back("call " + std::to_string(i) + " to " + id
                                 + (retryable ? " (retryable)" : "") + ": "
                                 + std::string(to_string(v.code)) + " " + v.message);
            L->cv.notify_all();
          });
      self->delayed_send(self, 5ms, tick_atom::value);
    },
  };
}

} // namespace

// --- the scenarios of spawner_scenarios.hpp, over real vm_actors -------------

TEST_CASE_FIXTURE(recorded_fixture, "one_for_one restarts only the child that failed (real)") {
  testing::scenario_one_for_one(sf);
}
TEST_CASE_FIXTURE(recorded_fixture, "simple_one_for_one restarts only the child that failed (real)") {
  testing::scenario_simple_one_for_one(sf);
}
TEST_CASE_FIXTURE(recorded_fixture, "one_for_all stops the others in reverse order, restarts all in order (real)") {
  testing::scenario_one_for_all(sf);
}
TEST_CASE_FIXTURE(recorded_fixture, "rest_for_one restarts the failed child and those after it (real)") {
  testing::scenario_rest_for_one(sf);
}
TEST_CASE_FIXTURE(recorded_fixture, "permanent, transient, temporary on vm_actor ends (real)") {
  testing::scenario_restart_types(sf);
}
TEST_CASE_FIXTURE(recorded_fixture, "an evicted permanent agent is restarted (real)") {
  testing::scenario_evicted_permanent_restarts(sf);
}
TEST_CASE_FIXTURE(recorded_fixture, "too many restarts escalate (real, vm_actor kills)") {
  testing::scenario_intensity_escalates(sf);
  CHECK(host.live_cgroups() == 0);
}
TEST_CASE_FIXTURE(recorded_fixture, "stop by id removes the agent for good (real)") {
  testing::scenario_stop_removes(sf);
}
TEST_CASE_FIXTURE(recorded_fixture, "shutdown stops agents in reverse start order (real)") {
  testing::scenario_shutdown_order(sf);
  CHECK(host.live_cgroups() == 0);
}
TEST_CASE_FIXTURE(recorded_fixture, "bad requests name the field and spawn nothing (real)") {
  testing::scenario_bad_requests(sf);
}

// --- strategies on guests killed from outside --------------------------------

TEST_CASE_FIXTURE(real_fixture, "SIGKILL under one_for_one: only that agent gets a new machine") {
  strategy_case(*this, restart_strategy::one_for_one, 3, 1, {1});
}
TEST_CASE_FIXTURE(real_fixture, "SIGKILL under simple_one_for_one: only that agent gets a new machine") {
  strategy_case(*this, restart_strategy::simple_one_for_one, 2, 0, {0});
}
TEST_CASE_FIXTURE(real_fixture, "SIGKILL under one_for_all: every agent gets a new machine") {
  strategy_case(*this, restart_strategy::one_for_all, 3, 1, {0, 1, 2});
}
TEST_CASE_FIXTURE(real_fixture, "SIGKILL under rest_for_one: that agent and those after it") {
  strategy_case(*this, restart_strategy::rest_for_one, 4, 1, {1, 2, 3});
}

// --- the fault route and restart types on real ends --------------------------

TEST_CASE_FIXTURE(real_fixture, "the spawner forwards faults to the agent's vm_actor") {
  sf.start_spawner();
  auto a = sf.start_ok("a");
  auto unknown = fault("a-99", fault_request{"exit", 0});
  REQUIRE_FALSE(unknown);
  CHECK(view(unknown.error()).code == errc::not_found);
  auto bad = fault(a, fault_request{"sneeze"});
  REQUIRE_FALSE(bad);
  CHECK(view(bad.error()).code == errc::bad_request);
  // A reporting fault: the guest's own result comes back.
  auto hog = fault(a, fault_request{"cpu_hog", 0, 50});
  REQUIRE_MESSAGE(hog, (hog ? "" : view(hog.error()).message));
  CHECK(hog->ok);
  CHECK(info(a).restarts == 0);
}

TEST_CASE_FIXTURE(real_fixture, "agents.allow_faults false: guests refuse faults") {
  sf.opts.defaults.allow_faults = false;
  sf.start_spawner();
  auto a = sf.start_ok("a");
  auto pid = pid_of(a);
  auto hog = fault(a, fault_request{"cpu_hog", 0, 50});
  REQUIRE(hog);
  CHECK_FALSE(hog->ok);
  CHECK(hog->error_code == "faults_disabled");
  // An exit fault is refused too: the agent keeps its machine.
  REQUIRE(fault(a, fault_request{"exit", 0}));
  std::this_thread::sleep_for(300ms);
  auto i = info(a);
  CHECK(i.pid == pid);
  CHECK(i.restarts == 0);
}

TEST_CASE_FIXTURE(real_fixture, "permanent: restarted after a crash and after exit 0") {
  sf.start_spawner();
  auto p = sf.start_ok("perm", restart_type::permanent);
  auto pid = pid_of(p);
  sigkill(p, pid);
  auto i = ready_again(p, pid);
  CHECK(i.restarts == 1);
  CHECK_MESSAGE(starts_with(i.last_down_reason, "crashed"), i.last_down_reason);
  pid = i.pid;
  auto r = fault(p, fault_request{"exit", 0});
  REQUIRE_MESSAGE(r, (r ? "" : view(r.error()).message));
  i = ready_again(p, pid);
  CHECK(i.restarts == 2);
  CHECK_MESSAGE(starts_with(i.last_down_reason, "exited"), i.last_down_reason);
  CHECK(host.live_cgroups() == 1);
}

TEST_CASE_FIXTURE(real_fixture, "transient: removed after exit 0, restarted after a crash") {
  sf.start_spawner();
  auto t1 = sf.start_ok("trans1", restart_type::transient);
  auto t2 = sf.start_ok("trans2", restart_type::transient);
  pid_of(t1);
  auto pid2 = pid_of(t2);
  REQUIRE(fault(t1, fault_request{"exit", 0}));
  REQUIRE(sf.gone(t1));
  sigkill(t2, pid2);
  auto i = ready_again(t2, pid2);
  CHECK(i.restarts == 1);
  CHECK_MESSAGE(starts_with(i.last_down_reason, "crashed"), i.last_down_reason);
  // An exit with a non-zero code is abnormal: restarted too.
  REQUIRE(fault(t2, fault_request{"exit", 3}));
  i = ready_again(t2, i.pid);
  CHECK(i.restarts == 2);
  CHECK_MESSAGE(starts_with(i.last_down_reason, "exited"), i.last_down_reason);
  auto all = sf.list();
  REQUIRE(all.size() == 1);
  CHECK(all[0].id == t2);
  CHECK(host.live_cgroups() == 1);
}

TEST_CASE_FIXTURE(real_fixture, "temporary: removed after a crash") {
  sf.start_spawner();
  auto tmp = sf.start_ok("temp", restart_type::temporary);
  auto keep = sf.start_ok("keep", restart_type::temporary);
  auto keep_pid = pid_of(keep);
  sigkill(tmp, pid_of(tmp));
  REQUIRE(sf.gone(tmp));
  auto i = info(keep);
  CHECK(i.pid == keep_pid);
  CHECK(i.restarts == 0);
  CHECK(poll([&] { return host.live_cgroups() == 1; }));
}

// --- OOM, hang, escalation ----------------------------------------------------

TEST_CASE_FIXTURE(real_fixture, "an OOM kill reaches the governor and the spawner; permanent restarts") {
  start_governor();
  sf.start_spawner();
  auto a = sf.start("small", restart_type::permanent, 48);
  REQUIRE_MESSAGE(a, (a ? "" : view(a.error()).message));
  auto pid = pid_of(a->id);
  CHECK(info(a->id).memory_limit_bytes == 48ull << 20);
  auto r = fault(a->id, fault_request{"oom"});
  REQUIRE_MESSAGE(r, (r ? "" : view(r.error()).message));
  auto i = ready_again(a->id, pid);
  CHECK(i.restarts == 1);
  CHECK(i.oom_kills >= 1);
  CHECK_MESSAGE(starts_with(i.last_down_reason, "oom"), i.last_down_reason);
  CHECK(i.memory_limit_bytes == 48ull << 20);
  CHECK(governor_now().oom_kills_total >= 1);
  // The replacement works, and holds the only grant.
  auto c = sf.call(a->id, tool_call{"list_directory", "{}"});
  REQUIRE(c);
  CHECK(c->ok);
  auto g = governor_now();
  REQUIRE(g.agents.size() == 1);
  CHECK(g.agents[0].agent_id == a->id);
}

TEST_CASE_FIXTURE(real_fixture, "SIGSTOP: the agent is declared hung and restarted") {
  sf.opts.defaults.heartbeat_ms = 100;
  sf.opts.defaults.hang_timeout_ms = 800;
  sf.start_spawner();
  auto a = sf.start_ok("sleepy");
  auto b = sf.start_ok("awake");
  auto pid = pid_of(a);
  auto pid_b = pid_of(b);
  REQUIRE(::kill(pid, SIGSTOP) == 0);
  auto i = ready_again(a, pid);
  CHECK(i.restarts == 1);
  CHECK_MESSAGE(starts_with(i.last_down_reason, "hung"), i.last_down_reason);
  CHECK(::kill(pid, 0) != 0); // the stopped guest was killed and reaped
  auto j = info(b);
  CHECK(j.pid == pid_b);
  CHECK(j.restarts == 0);
}

TEST_CASE_FIXTURE(real_fixture, "three real crashes with max_restarts 2 escalate; no cgroup left") {
  sf.opts.supervision.max_restarts = 2;
  sf.opts.supervision.period_ms = 600000;
  sf.start_spawner();
  sf.self()->monitor(sf.sp);
  auto a = sf.start_ok("a");
  auto b = sf.start_ok("b");
  pid_of(b);
  auto pid = pid_of(a);
  for (int k = 1; k <= 2; ++k) {
    sigkill(a, pid);
    auto i = ready_again(a, pid);
    CHECK(i.restarts == static_cast<uint32_t>(k));
    pid = i.pid;
  }
  sigkill(a, pid);
  caf::error reason;
  bool down = false;
  sf.self()->receive([&](caf::down_msg& dm) {
    reason = dm.reason;
    down = true;
  },
                    caf::after(60s) >> [] {});
  REQUIRE_MESSAGE(down, "the spawner did not escalate");
  auto v = view(reason);
  CHECK(v.code == errc::escalated);
  CHECK_MESSAGE(v.message.find("3 restarts within 600000 ms") != std::string::npos, v.message);
  CHECK_MESSAGE(v.message.find("agent " + a + " crashed") != std::string::npos, v.message);
  CHECK(host.live_cgroups() == 0);
  sf.sp = nullptr; // gone: nothing to shut down
}

// --- calls under kills --------------------------------------------------------

TEST_CASE_FIXTURE(real_fixture, "no call is lost while guests are SIGKILLed") {
  sf.opts.defaults.max_calls_in_flight = 8;
  sf.start_spawner();
  std::vector<std::string> agents{sf.start_ok("x"), sf.start_ok("y"), sf.start_ok("z")};
  for (auto& id : agents)
    pid_of(id);
  auto L = std::make_shared<load_state>();
  auto client = host.sys.spawn(load_client, sf.sp, agents, L);
  sf.extra.push_back(client);
  // Kill a guest every ~300 ms, round robin, each once its replacement is
  // ready. A retryable call is retried once only, so an agent is killed
  // again only after every call sent to it before its previous kill has
  // its answer: no call may meet two kills (on a loaded machine a backlog
  // of calls can outlive a whole round of kills).
  const int kills = 6;
  const int n = static_cast<int>(agents.size());
  int killed = 0;
  std::vector<int> sent_at_kill(agents.size(), 0);
  caf::scoped_actor probe{host.sys};
  std::this_thread::sleep_for(200ms);
  for (int k = 0; k < kills; ++k) {
    auto slot = static_cast<std::size_t>(k % n);
    auto& id = agents[slot];
    {
      std::unique_lock<std::mutex> g{L->m};
      bool ok = L->cv.wait_for(g, 120s,
                               [&] { return L->settled(k % n, n, sent_at_kill[slot]); });
      REQUIRE_MESSAGE(ok, "calls to " << id << " before its last kill got no answer");
    }
    auto pid = pid_of(id);
    // A slow retryable call is surely in flight at the kill: the spawner
    // forwards it before it asks the vm_actor for the get that follows
    // (both from one sender), and the vm_actor holds it when it answers.
    probe->send(sf.sp, call_atom::value, id,
                tool_call{"execute_command", R"({"argv":["/bin/sleep","1"]})", true, 0});
    probe->request(sf.sp, caf::infinite, get_atom::value, id)
      .receive([&](agent_info& i) { CHECK(i.pid == pid); },
               [&](caf::error& e) { FAIL_CHECK("get: " << caf::to_string(e)); });
    if (::kill(pid, SIGKILL) == 0)
      ++killed;
    {
      std::lock_guard<std::mutex> g{L->m};
      sent_at_kill[slot] = L->sent;
    }
    ready_again(id, pid);
    // The probe met the kill and ends ok on the replacement (before the
    // next kill of this agent, which it would meet too).
    probe->receive([&](tool_result& r) {
      CHECK(r.ok);
      CHECK(r.attempts == 2);
    },
                   [&](caf::error& e) { FAIL_CHECK("the probe call: " << caf::to_string(e)); },
                   caf::after(60s) >> [] { FAIL_CHECK("the probe call got no answer"); });
    std::this_thread::sleep_for(300ms);
  }
  L->stop = true;
  {
    std::unique_lock<std::mutex> g{L->m};
    bool ok = L->cv.wait_for(g, 180s, [&] { return L->all_answered(); });
    CHECK_MESSAGE(ok, "answered " << L->answered << " of " << L->sent
                                  << (L->done_sending ? "" : " (still sending)"));
  }
  std::lock_guard<std::mutex> g{L->m};
  MESSAGE("calls: " << L->sent << " (" << L->retryable_sent << " retryable), retried "
                    << L->retried << ", non-retryable agent_down " << L->plain_down << ", kills "
                    << killed);
  CHECK(killed == kills);
  CHECK(L->sent >= L->min_calls);
  CHECK(L->answered == L->sent);
  CHECK(L->retryable_ok == L->retryable_sent);
  CHECK(L->plain_ok + L->plain_down == L->sent - L->retryable_sent);
  for (auto& w : L->wrong)
    FAIL_CHECK(w);
  auto [received, answered] = sf.call_counts();
  CHECK(received == static_cast<uint64_t>(L->sent + kills));
  CHECK(answered == static_cast<uint64_t>(L->sent + kills));
  for (auto& id : agents)
    CHECK(info(id).restarts >= 1);
}

// --- graceful shutdown ----------------------------------------------------------

TEST_CASE_FIXTURE(real_fixture, "shutdown with live agents answers once all are down; no cgroup left") {
  sf.start_spawner();
  std::vector<std::string> agents{sf.start_ok("a"), sf.start_ok("b"), sf.start_ok("c")};
  std::vector<int> pids;
  for (auto& id : agents)
    pids.push_back(pid_of(id));
  CHECK(host.live_cgroups() == 3);
  // A call in flight on one of them finishes within the grace period.
  sf.self()->send(sf.sp, call_atom::value, agents[0],
                 tool_call{"execute_command", R"({"argv":["/bin/sleep","0.3"]})", false, 0});
  std::this_thread::sleep_for(100ms);
  REQUIRE(sf.shutdown());
  CHECK(host.live_cgroups() == 0);
  for (auto pid : pids)
    CHECK(::kill(pid, 0) != 0);
  bool answered = false;
  sf.self()->receive([&](tool_result& r) { answered = r.ok; },
                    [&](caf::error& e) { FAIL_CHECK("the call in flight: " << caf::to_string(e)); },
                    caf::after(10s) >> [] {});
  CHECK(answered);
  CHECK(sf.list().empty());
  auto late = sf.start("late");
  REQUIRE_FALSE(late);
  CHECK(view(late.error()).code == errc::draining);
  auto [received, done] = sf.call_counts();
  CHECK(received == 1);
  CHECK(done == 1);
}

// resource_governor: a real governor in a real actor_system, driven through
// its messages; scoped_actors play the spawner and the vm_actors. Host
// detection reads a directory the tests write in place of /proc. No assert
// depends on speed: waits are generous and only order and values count.

#include "resource_governor.hpp"

#include <agentvisor/host.hpp>
#include <agentvisor/messages.hpp>

#include <caf/all.hpp>
#include <doctest/doctest.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

using namespace agentvisor;
namespace fs = std::filesystem;

namespace {

constexpr uint64_t mib = uint64_t{1} << 20;
constexpr auto patience = std::chrono::seconds(30);

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

/// A scratch directory that plays /proc; removed at the end.
struct proc_dir {
  fs::path path;

  proc_dir() {
    std::string tmpl = (fs::temp_directory_path() / "gov-proc-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~proc_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  proc_dir(const proc_dir&) = delete;
  proc_dir& operator=(const proc_dir&) = delete;

  /// Writes `rel` whole, through a rename, so a reader never sees half.
  void write(const std::string& rel, const std::string& text) const {
    auto target = path / rel;
    fs::create_directories(target.parent_path());
    auto tmp = target;
    tmp += ".tmp";
    {
      std::ofstream out{tmp};
      out << text;
    }
    fs::rename(tmp, target);
  }

  void meminfo(uint64_t total_kb, uint64_t available_kb) const {
    write("meminfo", "MemTotal:       " + std::to_string(total_kb)
                       + " kB\nMemFree:         1000 kB\nMemAvailable:   "
                       + std::to_string(available_kb) + " kB\nBuffers: 12 kB\n");
  }
};

/// A fixed budget: 1024 MiB, 2 CPUs, 4 agents, 1000 pids; no MemAvailable
/// floor; a high water mark of 0.9.
governor_options test_options() {
  governor_options o;
  o.host.memory_mb = 1024;
  o.host.cpus = 2;
  o.host.max_agents = 4;
  o.host.pids = 1000;
  o.host.min_available_mb = 0;
  o.host.pressure_high_water = 0.9;
  o.host.pressure_check_ms = 50;
  return o;
}

struct fixture {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  proc_dir proc;
  caf::actor gov;

  fixture() {
    spdlog::set_level(spdlog::level::warn);
    register_messages(cfg);
    sys = std::make_unique<caf::actor_system>(cfg);
    proc.meminfo(8 * 1024 * 1024, 4 * 1024 * 1024);
  }
  ~fixture() {
    if (gov)
      caf::anon_send_exit(gov, caf::exit_reason::user_shutdown);
    gov = nullptr;
    sys.reset(); // waits for every actor
  }
  fixture(const fixture&) = delete;
  fixture& operator=(const fixture&) = delete;

  caf::actor start(governor_options o = test_options()) {
    o.proc_root = proc.path.string();
    gov = spawn_resource_governor(*sys, nullptr, std::move(o));
    return gov;
  }
};

grant_request req(std::string id, uint64_t mb, uint32_t deadline_ms = 0, uint32_t pids = 10) {
  grant_request r;
  r.agent_id = std::move(id);
  r.memory_bytes = mb * mib;
  r.pids = pids;
  r.deadline_ms = deadline_ms;
  return r;
}

/// A grant or the error's view.
struct answer {
  std::optional<grant> g;
  error_view err;
};

template <class Handle>
answer await(Handle& h) {
  answer a;
  h.receive([&](grant& g) { a.g = std::move(g); },
            [&](caf::error& e) { a.err = view(e); });
  return a;
}

answer ask(caf::scoped_actor& self, const caf::actor& gov, grant_request r) {
  auto h = self->request(gov, patience, grant_atom::value, std::move(r));
  return await(h);
}

governor_state state_of(caf::scoped_actor& self, const caf::actor& gov) {
  governor_state st;
  self->request(gov, patience, get_atom::value)
    .receive([&](governor_state& x) { st = std::move(x); },
             [&](caf::error& e) { FAIL("get failed: " << caf::to_string(e)); });
  return st;
}

std::vector<std::string> agent_ids(const governor_state& st) {
  std::vector<std::string> out;
  for (const auto& a : st.agents)
    out.push_back(a.agent_id);
  return out;
}

const governor_agent* find_agent(const governor_state& st, const std::string& id) {
  for (const auto& a : st.agents)
    if (a.agent_id == id)
      return &a;
  return nullptr;
}

void usage(caf::scoped_actor& self, const caf::actor& gov, std::string id, uint64_t mb) {
  agent_usage u;
  u.id = std::move(id);
  u.memory_bytes = mb * mib;
  self->send(gov, u);
}

/// The next evict_request in `sp`'s mailbox, waiting up to `patience`.
std::optional<evict_request> next_evict(caf::scoped_actor& sp,
                                        std::chrono::milliseconds wait = patience) {
  std::optional<evict_request> out;
  sp->receive([&](evict_request& e) { out = std::move(e); }, caf::after(wait) >> [] {});
  return out;
}

} // namespace

// --- grants ------------------------------------------------------------------

TEST_CASE_FIXTURE(fixture, "the governor grants a request within the budget and reserves it") {
  auto g = start();
  caf::scoped_actor self{*sys};
  auto a = ask(self, g, req("a-1", 256, 0, 10));
  REQUIRE(a.g);
  CHECK(a.g->agent_id == "a-1");
  CHECK(a.g->memory_bytes == 256 * mib);
  CHECK(a.g->pids == 10);
  auto st = state_of(self, g);
  CHECK(st.total.memory_bytes == 1024 * mib);
  CHECK(st.total.cpus == 2);
  CHECK(st.total.agents == 4);
  CHECK(st.total.pids == 1000);
  CHECK(st.used.memory_bytes == 256 * mib);
  CHECK(st.used.pids == 10);
  CHECK(st.used.agents == 1);
  CHECK(st.granted_total == 1);
  CHECK(agent_ids(st) == std::vector<std::string>{"a-1"});
}

TEST_CASE_FIXTURE(fixture, "a request that can never fit is refused naming what does not fit") {
  auto g = start();
  caf::scoped_actor self{*sys};
  auto a = ask(self, g, req("a-7", 2048, 60000));
  CHECK_FALSE(a.g);
  CHECK(a.err.code == errc::over_budget);
  CHECK(a.err.message == "agent a-7 asks 2048 MiB; the budget is 1024 MiB in all");
  auto p = ask(self, g, req("a-8", 16, 60000, 5000));
  CHECK(p.err.code == errc::over_budget);
  CHECK(p.err.message == "agent a-8 asks 5000 pids; the budget is 1000 pids in all");
  CHECK(state_of(self, g).denied_total == 2);
}

TEST_CASE_FIXTURE(fixture, "deadline 0 refuses at once naming what is in use") {
  auto g = start();
  caf::scoped_actor self{*sys};
  REQUIRE(ask(self, g, req("a-1", 768)).g);
  auto b = ask(self, g, req("b-1", 512));
  CHECK(b.err.code == errc::over_budget);
  CHECK(b.err.message
        == "agent b-1 asks 512 MiB and 10 pids and will not wait; memory: 768 MiB of "
           "1024 MiB granted, 256 MiB free");
  CHECK(state_of(self, g).queued == 0);
}

TEST_CASE_FIXTURE(fixture, "the agent count is part of the budget") {
  auto g = start();
  caf::scoped_actor self{*sys};
  for (auto id : {"a-1", "a-2", "a-3", "a-4"})
    REQUIRE(ask(self, g, req(id, 16)).g);
  auto e = ask(self, g, req("a-5", 16));
  CHECK(e.err.code == errc::over_budget);
  CHECK(contains(e.err.message, "agents: all 4 slots taken"));
}

TEST_CASE_FIXTURE(fixture, "a second grant for an agent is refused and an unknown release ignored") {
  auto g = start();
  caf::scoped_actor self{*sys};
  REQUIRE(ask(self, g, req("a-1", 128)).g);
  auto again = ask(self, g, req("a-1", 128));
  CHECK(again.err.code == errc::bad_request);
  CHECK(again.err.message == "agent a-1 already holds a grant of 128 MiB; release it first");
  CHECK(ask(self, g, req("", 128)).err.code == errc::bad_request);
  self->send(g, release_atom::value, std::string{"nobody"});
  auto st = state_of(self, g);
  CHECK(st.used.memory_bytes == 128 * mib);
  CHECK(st.used.agents == 1);
}

TEST_CASE_FIXTURE(fixture, "queued requests are granted in FIFO order as releases make room") {
  auto g = start();
  caf::scoped_actor self{*sys};
  REQUIRE(ask(self, g, req("a", 1024)).g);
  auto hb = self->request(g, patience, grant_atom::value, req("b", 1024, 60000));
  // c would fit once a goes, but it waits behind b (strict FIFO).
  auto hc = self->request(g, patience, grant_atom::value, req("c", 512, 60000));
  auto st = state_of(self, g);
  CHECK(st.queue == std::vector<std::string>{"b", "c"});
  CHECK(st.queued == 2);

  self->send(g, release_atom::value, std::string{"a"});
  auto b = await(hb);
  REQUIRE(b.g);
  CHECK(b.g->agent_id == "b");
  st = state_of(self, g);
  CHECK(agent_ids(st) == std::vector<std::string>{"b"});
  CHECK(st.queue == std::vector<std::string>{"c"});

  self->send(g, release_atom::value, std::string{"b"});
  auto c = await(hc);
  REQUIRE(c.g);
  CHECK(c.g->agent_id == "c");
  st = state_of(self, g);
  CHECK(agent_ids(st) == std::vector<std::string>{"c"});
  CHECK(st.queued == 0);
  CHECK(st.granted_total == 3);
}

TEST_CASE_FIXTURE(fixture, "a deadline that passes answers budget_timeout naming the wait and the shortage") {
  auto g = start();
  caf::scoped_actor self{*sys};
  REQUIRE(ask(self, g, req("a", 768)).g);
  auto hb = self->request(g, patience, grant_atom::value, req("b", 512, 200));
  // c fits now but waits behind b; once b times out, c is granted.
  auto hc = self->request(g, patience, grant_atom::value, req("c", 256, 60000));
  auto b = await(hb);
  CHECK_FALSE(b.g);
  CHECK(b.err.code == errc::budget_timeout);
  CHECK(b.err.message.starts_with("agent b waited "));
  CHECK(contains(b.err.message, " ms for 512 MiB and 10 pids; still short: memory: 768 MiB "
                                "of 1024 MiB granted, 256 MiB free"));
  auto c = await(hc);
  REQUIRE(c.g);
  CHECK(c.g->agent_id == "c");
  auto st = state_of(self, g);
  CHECK(st.denied_total == 1);
  CHECK(st.queued == 0);
}

TEST_CASE_FIXTURE(fixture, "a full queue refuses with over_budget") {
  auto o = test_options();
  o.max_queued = 1;
  auto g = start(o);
  caf::scoped_actor self{*sys};
  REQUIRE(ask(self, g, req("a", 1024)).g);
  auto hb = self->request(g, patience, grant_atom::value, req("b", 512, 60000));
  auto c = ask(self, g, req("c", 512, 60000));
  CHECK(c.err.code == errc::over_budget);
  CHECK(c.err.message
        == "agent c asks 512 MiB and 10 pids; it does not fit now (memory: 1024 MiB of 1024 "
           "MiB granted, 0 bytes free) and the queue is full (host.max_queued = 1)");
  self->send(g, release_atom::value, std::string{"a"});
  CHECK(await(hb).g);
}

TEST_CASE_FIXTURE(fixture, "every queued request is answered with draining when the governor stops") {
  auto g = start();
  caf::scoped_actor self{*sys};
  REQUIRE(ask(self, g, req("a", 1024)).g);
  auto h1 = self->request(g, patience, grant_atom::value, req("b", 512, 60000));
  auto h2 = self->request(g, patience, grant_atom::value, req("c", 512, 60000));
  auto h3 = self->request(g, patience, grant_atom::value, req("d", 512, 60000));
  REQUIRE(state_of(self, g).queued == 3);
  SUBCASE("by an exit message") {
    self->send_exit(g, caf::exit_reason::user_shutdown);
  }
  SUBCASE("by shutdown_atom") {
    self->send(g, shutdown_atom::value);
  }
  for (auto* h : {&h1, &h2, &h3}) {
    auto a = await(*h);
    CHECK_FALSE(a.g);
    CHECK(a.err.code == errc::draining);
    CHECK(contains(a.err.message, "the governor is shutting down"));
  }
  self->wait_for(g);
}

// --- agents' reports ---------------------------------------------------------

TEST_CASE_FIXTURE(fixture, "OOM kills are counted per agent and in total") {
  auto g = start();
  caf::scoped_actor self{*sys};
  REQUIRE(ask(self, g, req("a", 128)).g);
  REQUIRE(ask(self, g, req("b", 128)).g);
  self->send(g, agent_oom{"a", 128 * mib, 128 * mib});
  self->send(g, agent_oom{"a", 128 * mib, 128 * mib});
  self->send(g, agent_oom{"gone", 64 * mib, 64 * mib});
  auto st = state_of(self, g);
  CHECK(st.oom_kills_total == 3);
  REQUIRE(find_agent(st, "a"));
  CHECK(find_agent(st, "a")->oom_kills == 2);
  CHECK(find_agent(st, "b")->oom_kills == 0);
}

TEST_CASE_FIXTURE(fixture, "usage reports are tracked per agent and in total") {
  auto g = start();
  caf::scoped_actor self{*sys};
  REQUIRE(ask(self, g, req("a", 256)).g);
  REQUIRE(ask(self, g, req("b", 256)).g);
  usage(self, g, "a", 100);
  usage(self, g, "b", 200);
  auto st = state_of(self, g);
  CHECK(st.memory_in_use_bytes == 300 * mib);
  usage(self, g, "a", 150);
  usage(self, g, "nobody", 999);
  st = state_of(self, g);
  CHECK(st.memory_in_use_bytes == 350 * mib);
  CHECK(find_agent(st, "a")->memory_in_use_bytes == 150 * mib);
  self->send(g, release_atom::value, std::string{"b"});
  st = state_of(self, g);
  CHECK(st.memory_in_use_bytes == 150 * mib);
  CHECK(st.used.memory_bytes == 256 * mib);
}

// --- pressure ------------------------------------------------------------------

TEST_CASE_FIXTURE(fixture, "pressure over the high-water mark evicts the agent most above its grant, one at a time") {
  auto g = start();
  caf::scoped_actor self{*sys};
  caf::scoped_actor spawner{*sys};
  self->send(g, attach_atom::value, caf::actor{spawner});
  REQUIRE(ask(self, g, req("a", 256)).g);
  REQUIRE(ask(self, g, req("b", 512)).g);
  REQUIRE(ask(self, g, req("c", 128)).g);
  // 300 + 500 + 200 = 1000 MiB > 0.9 * 1024 MiB. Above their grants: a by
  // 44 MiB, c by 72 MiB; b is the largest user but within its grant.
  usage(self, g, "a", 300);
  usage(self, g, "b", 500);
  usage(self, g, "c", 200);
  auto first = next_evict(spawner);
  REQUIRE(first);
  CHECK(first->agent_id == "c");
  CHECK(contains(first->why, "agents use 1000 MiB, above 90% of the 1024 MiB budget"));
  CHECK(contains(first->why, "agent c uses 200 MiB, 72 MiB above its 128 MiB grant"));

  // Still under pressure, but c has not gone yet: no second eviction.
  usage(self, g, "b", 520);
  auto st = state_of(self, g);
  CHECK(st.evicting == "c");
  CHECK(st.evictions_total == 1);
  CHECK(find_agent(st, "c")->evicting);
  // The state answer left after any evict_request it caused was sent.
  CHECK_FALSE(next_evict(spawner, std::chrono::milliseconds(0)));

  // c goes: 820 MiB in use, no pressure. Then b grows past its grant.
  self->send(g, release_atom::value, std::string{"c"});
  st = state_of(self, g);
  CHECK(st.evicting.empty());
  CHECK_FALSE(next_evict(spawner, std::chrono::milliseconds(0)));
  usage(self, g, "b", 700);
  auto second = next_evict(spawner);
  REQUIRE(second);
  CHECK(second->agent_id == "b");
  CHECK(state_of(self, g).evictions_total == 2);
}

TEST_CASE_FIXTURE(fixture, "under pressure with no agent above its grant the largest user goes, ties to the youngest grant") {
  auto o = test_options();
  o.host.memory_mb = 512;
  auto g = start(o);
  caf::scoped_actor self{*sys};
  caf::scoped_actor spawner{*sys};
  self->send(g, attach_atom::value, caf::actor{spawner});
  REQUIRE(ask(self, g, req("old", 256)).g);
  REQUIRE(ask(self, g, req("young", 256)).g);
  SUBCASE("a tie goes to the youngest grant") {
    usage(self, g, "old", 240);
    usage(self, g, "young", 240);
    auto e = next_evict(spawner);
    REQUIRE(e);
    CHECK(e->agent_id == "young");
    CHECK(contains(e->why, "agent young is the largest user (240 MiB of its 256 MiB grant)"));
  }
  SUBCASE("else the largest user") {
    usage(self, g, "young", 220);
    usage(self, g, "old", 250);
    auto e = next_evict(spawner);
    REQUIRE(e);
    CHECK(e->agent_id == "old");
  }
}

TEST_CASE_FIXTURE(fixture, "an evicted agent not released in time lets the governor pick another") {
  auto o = test_options();
  o.host.memory_mb = 512;
  o.host.evict_timeout_ms = 100;
  auto g = start(o);
  caf::scoped_actor self{*sys};
  caf::scoped_actor spawner{*sys};
  self->send(g, attach_atom::value, caf::actor{spawner});
  REQUIRE(ask(self, g, req("a", 256)).g);
  REQUIRE(ask(self, g, req("b", 256)).g);
  usage(self, g, "a", 220);
  usage(self, g, "b", 250);
  auto first = next_evict(spawner);
  REQUIRE(first);
  CHECK(first->agent_id == "b");
  // b never goes; after the timeout the next usage report picks a, never b
  // twice.
  auto second = next_evict(spawner, std::chrono::milliseconds(300));
  for (int i = 0; i < 100 && !second; ++i) {
    usage(self, g, "a", 220);
    second = next_evict(spawner, std::chrono::milliseconds(300));
  }
  REQUIRE(second);
  CHECK(second->agent_id == "a");
}

TEST_CASE_FIXTURE(fixture, "low host MemAvailable evicts the largest user (meminfo from a test file)") {
  // 8 GiB MemTotal, 100 MiB available; the budget is detected from it.
  proc.meminfo(8 * 1024 * 1024, 100 * 1024);
  auto o = test_options();
  o.host.memory_mb = 0;
  o.host.reserve_mb = 512;
  o.host.min_available_mb = 256;
  auto g = start(o);
  caf::scoped_actor self{*sys};
  caf::scoped_actor spawner{*sys};
  REQUIRE(ask(self, g, req("a", 256)).g);
  REQUIRE(ask(self, g, req("b", 512)).g);
  usage(self, g, "a", 100);
  usage(self, g, "b", 400);
  // Attached only now: until the usage reports, a (0 bytes in use yet) would
  // have been the largest user.
  self->send(g, attach_atom::value, caf::actor{spawner});
  auto e = next_evict(spawner);
  REQUIRE(e);
  CHECK(e->agent_id == "b");
  CHECK(contains(e->why, "the host has 100 MiB available (MemAvailable), below the 256 MiB floor"));
  auto st = state_of(self, g);
  CHECK(st.total.memory_bytes == (8192 - 512) * mib);
  CHECK(st.host_available_bytes == 100 * mib);

  // The host recovers; once the governor has read it, b's release starts no
  // further eviction.
  proc.meminfo(8 * 1024 * 1024, 4 * 1024 * 1024);
  for (int i = 0; i < 600 && state_of(self, g).host_available_bytes != 4096 * mib; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  REQUIRE(state_of(self, g).host_available_bytes == 4096 * mib);
  self->send(g, release_atom::value, std::string{"b"});
  st = state_of(self, g);
  CHECK(st.evicting.empty());
  CHECK(st.evictions_total == 1);
  CHECK_FALSE(next_evict(spawner, std::chrono::milliseconds(0)));
}

TEST_CASE_FIXTURE(fixture, "a governor whose budget cannot be detected refuses every grant saying why") {
  fs::remove(proc.path / "meminfo");
  auto o = test_options();
  o.host.memory_mb = 0;
  auto g = start(o);
  caf::scoped_actor self{*sys};
  auto a = ask(self, g, req("a", 16));
  CHECK(a.err.code == errc::over_budget);
  CHECK(contains(a.err.message, "the host budget could not be detected: cannot read "));
  CHECK(contains(a.err.message, "/meminfo: No such file or directory"));
}

// --- host detection ----------------------------------------------------------

TEST_CASE("parse_meminfo reads MemTotal and MemAvailable in bytes") {
  auto m = parse_meminfo("MemTotal:       24683620 kB\nMemFree:        24117772 kB\n"
                         "MemAvailable:   24261036 kB\n");
  REQUIRE(m);
  CHECK(m->total_bytes == 24683620ull * 1024);
  CHECK(m->available_bytes == 24261036ull * 1024);
  auto no_avail = parse_meminfo("MemTotal: 100 kB\n");
  REQUIRE_FALSE(no_avail);
  CHECK(no_avail.err().message == "meminfo: no MemAvailable line (Linux before 3.14?)");
  auto bad = parse_meminfo("MemTotal: lots kB\nMemAvailable: 1 kB\n");
  REQUIRE_FALSE(bad);
  CHECK(bad.err().message == "meminfo: cannot read the value of MemTotal: \"lots kB\"");
}

TEST_CASE("parse_online_cpus counts the cpuN lines of /proc/stat") {
  auto n = parse_online_cpus("cpu  1 2 3\ncpu0 1 2 3\ncpu1 1 2 3\ncpu7 1\nintr 5\nctxt 9\n");
  REQUIRE(n);
  CHECK(*n == 3);
  CHECK_FALSE(parse_online_cpus("intr 5\n"));
}

TEST_CASE("detect_budget fills what the config leaves at 0 from a proc root") {
  proc_dir proc;
  proc.meminfo(4 * 1024 * 1024, 3 * 1024 * 1024);
  proc.write("stat", "cpu  1 1 1\ncpu0 1 1 1\ncpu1 1 1 1\ncpu2 1\ncpu3 1\n");
  proc.write("sys/kernel/pid_max", "32768\n");
  proc.write("sys/kernel/threads-max", "192730\n");
  host_config h;
  h.reserve_mb = 1024;
  h.max_agents = 9;
  auto b = detect_budget(h, proc.path.string());
  REQUIRE_MESSAGE(b, (b ? std::string{} : b.err().message));
  CHECK(b->memory_bytes == 3072 * mib);
  CHECK(b->cpus == 4);
  CHECK(b->pids == 32768);
  CHECK(b->agents == 9);

  SUBCASE("threads-max below pid_max wins") {
    proc.write("sys/kernel/threads-max", "5000\n");
    auto p = read_pid_budget(proc.path.string());
    REQUIRE(p);
    CHECK(*p == 5000);
  }
  SUBCASE("a reserve that leaves too little is an error naming the key") {
    h.reserve_mb = 4050;
    auto e = detect_budget(h, proc.path.string());
    REQUIRE_FALSE(e);
    CHECK(e.err().message
          == "host.reserve_mb: 4050 MiB leaves less than 64 MiB of the host's 4096 MiB "
             "(MemTotal) to agents; lower it or set host.memory_mb");
  }
  SUBCASE("values set in the config are not read") {
    proc_dir empty;
    host_config fixed;
    fixed.memory_mb = 100;
    fixed.cpus = 3;
    fixed.pids = 70;
    auto f = detect_budget(fixed, empty.path.string());
    REQUIRE(f);
    CHECK(f->memory_bytes == 100 * mib);
    CHECK(f->cpus == 3);
    CHECK(f->pids == 70);
  }
  SUBCASE("a missing file is an error naming it") {
    fs::remove(proc.path / "stat");
    auto e = detect_budget(h, proc.path.string());
    REQUIRE_FALSE(e);
    CHECK(e.err().message == "cannot read " + (proc.path / "stat").string()
                               + ": No such file or directory");
  }
}

TEST_CASE("detect_budget reads this host's /proc") {
  auto b = detect_budget(host_config{.reserve_mb = 0});
  REQUIRE_MESSAGE(b, (b ? std::string{} : b.err().message));
  CHECK(b->memory_bytes > 0);
  CHECK(b->cpus >= 1);
  CHECK(b->pids >= 1);
}

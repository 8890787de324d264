// The backend router in front of the real sandbox backend (real template,
// sandboxes and cgroups) and a stand-in second backend that reports what
// reaches it: spawns go where the spec says (empty: the default), the spec
// carries the resolved name, a backend that is not enabled is refused by
// name, and stop, kill, usage, signal and spawn faults follow the agent.

#include "backend_router.hpp"
#include "real_host.hpp"

#include "agentvisor/messages.hpp"

#include <caf/all.hpp>
#include <doctest/doctest.h>

#include <csignal>
#include <string>
#include <thread>

using namespace agentvisor;
using namespace std::chrono_literals;

namespace {

/// A backend that answers like one and tells `observer` each message as a
/// line: "spawn ID BACKEND", "stop ID", "kill ID", "usage ID", "signal ID
/// SIG", "fault BACKEND".
backend_actor::behavior_type stand_in(backend_actor::pointer, caf::actor observer) {
  auto note = [=](std::string line) { caf::anon_send(observer, std::move(line)); };
  return {
    [=](spawn_atom, agent_spec& s, caf::actor&) {
      note("spawn " + s.id + " " + s.backend);
      return agent_started{s.id, 4242, 0, "qemu"};
    },
    [=](stop_atom, std::string& id, uint32_t) { note("stop " + id); },
    [=](kill_atom, std::string& id) { note("kill " + id); },
    [=](usage_atom, std::string& id) {
      note("usage " + id);
      return agent_usage{id, 1, 2, 3, 4, 0, 0, 0};
    },
    [=](signal_atom, std::string& id, int32_t sig) {
      note("signal " + id + " " + std::to_string(sig));
    },
    [=](spawn_fault_atom, spawn_fault& f) {
      note("fault " + f.backend);
      return uint32_t{f.count};
    },
  };
}

agent_spec spec(const std::string& id, std::string backend) {
  agent_spec s;
  s.id = id;
  s.memory_bytes = 128 << 20;
  s.workspace_bytes = 16 << 20;
  s.pids = 64;
  s.heartbeat_ms = 200;
  s.backend = std::move(backend);
  return s;
}

struct fixture : testing::real_host {
  fixture() : real_host("router") {}

  ~fixture() {
    for (auto& a : {caf::actor_cast<caf::actor>(router), caf::actor_cast<caf::actor>(fake)})
      if (a) {
        self->send_exit(a, caf::exit_reason::user_shutdown);
        self->wait_for(a);
      }
  }

  /// The router over the real sandbox backend alone.
  void sandbox_only() {
    backend_router_options o;
    o.backends.emplace("sandbox", backend);
    o.default_backend = "sandbox";
    router = spawn_backend_router(sys, std::move(o));
  }

  /// The router over the sandbox backend (the default) and the stand-in,
  /// enabled as "qemu".
  void with_stand_in() {
    fake = sys.spawn(stand_in, caf::actor{self});
    backend_router_options o;
    o.backends.emplace("sandbox", backend);
    o.backends.emplace("qemu", fake);
    o.default_backend = "sandbox";
    router = spawn_backend_router(sys, std::move(o));
  }

  caf::expected<agent_started> spawn(const agent_spec& s, caf::actor owner = {}) {
    if (!owner)
      owner = caf::actor{self};
    caf::expected<agent_started> out{caf::sec::none};
    self->request(router, caf::duration{15s}, spawn_atom::value, s, owner)
      .receive([&](agent_started& a) { out = std::move(a); },
               [&](caf::error& e) { out = std::move(e); });
    return out;
  }

  caf::expected<agent_usage> usage(const std::string& id) {
    caf::expected<agent_usage> out{caf::sec::none};
    self->request(router, caf::duration{5s}, usage_atom::value, id)
      .receive([&](agent_usage& u) { out = std::move(u); },
               [&](caf::error& e) { out = std::move(e); });
    return out;
  }

  caf::expected<uint32_t> arm(const std::string& backend_name) {
    caf::expected<uint32_t> out{caf::sec::none};
    self->request(router, caf::duration{5s}, spawn_fault_atom::value,
                  spawn_fault{2, true, 0, backend_name, {}})
      .receive([&](uint32_t n) { out = n; }, [&](caf::error& e) { out = std::move(e); });
    return out;
  }

  /// The agent_exited of `id`, skipping guest lines on the way.
  agent_exited exited(const std::string& id) {
    agent_exited out;
    bool done = false;
    while (!done) {
      bool timeout = false;
      self->receive([&](agent_exited& e) {
        if (e.id == id) {
          out = e;
          done = true;
        }
      },
                    [&](io::stream_line&) {}, [&](io::stream_closed&) {},
                    [&](agent_oom&) {}, caf::after(15s) >> [&] { timeout = true; });
      REQUIRE_FALSE_MESSAGE(timeout, "no agent_exited for " << id << " within 15 s");
    }
    return out;
  }

  /// The stand-in's next report, skipping guest lines on the way.
  std::string report() {
    std::string out;
    bool timeout = false;
    while (out.empty() && !timeout)
      self->receive([&](std::string& line) { out = std::move(line); },
                    [&](io::stream_line&) {}, [&](io::stream_closed&) {},
                    caf::after(5s) >> [&] { timeout = true; });
    REQUIRE_FALSE_MESSAGE(timeout, "the stand-in backend heard nothing within 5 s");
    return out;
  }

  caf::scoped_actor self{sys};
  backend_actor router;
  backend_actor fake;
};

} // namespace

TEST_CASE_FIXTURE(fixture, "a spec naming no backend runs on the default one, which the router names") {
  sandbox_only();
  auto a = spawn(spec("dflt", ""));
  REQUIRE_MESSAGE(a, sys.render(a.error()));
  CHECK(a->backend == "sandbox");
  CHECK(a->pid > 0);
  auto u = usage("dflt");
  REQUIRE_MESSAGE(u, sys.render(u.error()));
  CHECK(u->id == "dflt");
  CHECK(u->memory_bytes > 0);
  self->send(router, kill_atom::value, std::string{"dflt"});
  CHECK(exited("dflt").signal == SIGKILL);
  CHECK(live_cgroups() == 0);
}

TEST_CASE_FIXTURE(fixture, "a spec naming sandbox runs there, and a stop through the router ends it") {
  sandbox_only();
  auto a = spawn(spec("named", "sandbox"));
  REQUIRE_MESSAGE(a, sys.render(a.error()));
  CHECK(a->backend == "sandbox");
  self->send(router, stop_atom::value, std::string{"named"}, uint32_t{500});
  exited("named");
  CHECK(live_cgroups() == 0);
}

TEST_CASE_FIXTURE(fixture, "a backend that is not enabled is refused, naming it and the enabled ones") {
  sandbox_only();
  auto a = spawn(spec("vm", "qemu"));
  REQUIRE_FALSE(a);
  CHECK(view(a.error()).code == errc::bad_request);
  CHECK(view(a.error()).message == "backend \"qemu\" is not enabled here (enabled: sandbox)");
  auto f = arm("firecracker");
  REQUIRE_FALSE(f);
  CHECK(view(f.error()).message
        == "backend \"firecracker\" is not enabled here (enabled: sandbox)");
  // An empty name arms the default, whose own answer comes back: this
  // backend does not allow faults.
  auto d = arm("");
  REQUIRE_FALSE(d);
  CHECK(view(d.error()).message.find("spawn faults are off") != std::string::npos);
  CHECK(live_cgroups() == 0);
}

TEST_CASE_FIXTURE(fixture, "stop, kill, usage, signal and spawn faults follow each agent to its backend") {
  with_stand_in();
  auto vm = spawn(spec("vm-1", "qemu"));
  REQUIRE_MESSAGE(vm, sys.render(vm.error()));
  CHECK(vm->backend == "qemu");
  CHECK(report() == "spawn vm-1 qemu");
  auto sb = spawn(spec("sb-1", ""));
  REQUIRE_MESSAGE(sb, sys.render(sb.error()));
  CHECK(sb->backend == "sandbox");

  auto u = usage("vm-1");
  REQUIRE(u);
  CHECK(u->pids == 3);
  CHECK(report() == "usage vm-1");
  self->send(router, signal_atom::value, std::string{"vm-1"}, int32_t{SIGSTOP});
  CHECK(report() == "signal vm-1 " + std::to_string(SIGSTOP));
  self->send(router, stop_atom::value, std::string{"vm-1"}, uint32_t{100});
  CHECK(report() == "stop vm-1");
  self->send(router, kill_atom::value, std::string{"vm-1"});
  CHECK(report() == "kill vm-1");
  auto n = arm("qemu");
  REQUIRE(n);
  CHECK(*n == 2);
  CHECK(report() == "fault qemu");

  // The sandbox agent's messages went to the sandbox backend, not the
  // stand-in: its usage is real, its kill ends it.
  auto su = usage("sb-1");
  REQUIRE_MESSAGE(su, sys.render(su.error()));
  CHECK(su->memory_bytes > 0);
  self->send(router, kill_atom::value, std::string{"sb-1"});
  CHECK(exited("sb-1").signal == SIGKILL);
  CHECK(live_cgroups() == 0);
}

TEST_CASE_FIXTURE(fixture, "an agent's route ends with its owner") {
  with_stand_in();
  auto owner = sys.spawn([]() -> caf::behavior { return {[](int) {}}; });
  auto vm = spawn(spec("vm-2", "qemu"), owner);
  REQUIRE_MESSAGE(vm, sys.render(vm.error()));
  CHECK(report() == "spawn vm-2 qemu");
  REQUIRE(usage("vm-2"));
  CHECK(report() == "usage vm-2");
  self->send_exit(owner, caf::exit_reason::user_shutdown);
  self->wait_for(owner);
  // Once the router saw the owner's down, the id is unknown: it goes to the
  // default backend, which has no such agent.
  std::string last;
  for (int i = 0; i < 200; ++i) {
    auto u = usage("vm-2");
    if (!u) {
      last = view(u.error()).message;
      break;
    }
    CHECK(report() == "usage vm-2");
    std::this_thread::sleep_for(10ms);
  }
  CHECK(last.find("no agent vm-2") != std::string::npos);
}

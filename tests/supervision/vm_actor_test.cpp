// vm_actor over real sandboxes: spawn and handshake, tool calls, the bound on
// calls in flight, graceful stop, and every way an agent goes down (crash by
// signal, OOM, hang, protocol error, spawn failure), each ending with the
// right down reason, every call answered and no cgroup left.

#include "real_host.hpp"
#include "vm_actor.hpp"

#include "agentvisor/messages.hpp"

#include <caf/all.hpp>
#include <doctest/doctest.h>

#include <csignal>
#include <string>
#include <vector>

using namespace agentvisor;
using namespace std::chrono_literals;

namespace {

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

struct fixture : testing::real_host {
  fixture() : real_host("vm") {}

  vm_options options(const std::string& id, uint64_t memory_mb = 128) {
    vm_options o;
    o.spec.id = id;
    o.spec.memory_bytes = memory_mb << 20;
    o.spec.workspace_bytes = 16 << 20;
    o.spec.pids = 64;
    o.spec.heartbeat_ms = 100;
    o.spec.allow_faults = true;
    o.hang_timeout_ms = 1000;
    o.ready_timeout_ms = 10000;
    o.max_calls_in_flight = 4;
    o.usage_interval_ms = 200;
    return o;
  }

  /// Spawns a vm_actor whose parent is `self`, monitored by `self`, and
  /// waits for its agent_ready.
  caf::actor start(const vm_options& o) {
    auto vm = spawn_vm_actor(sys, vm_context{backend, &io, caf::actor{self}, {}, {}, {}}, o);
    self->monitor(vm);
    bool ready = false;
    self->receive([&](agent_ready& r) {
      CHECK(r.agent_id == o.spec.id);
      CHECK(r.backend == "sandbox");
      CHECK(r.pid > 0);
      ready = true;
    },
                  [&](caf::down_msg& dm) { FAIL("down before ready: " << caf::to_string(dm.reason)); },
                  caf::after(15s) >> [&] { FAIL("no agent_ready within 15 s"); });
    REQUIRE(ready);
    return vm;
  }

  caf::expected<tool_result> call(const caf::actor& vm, std::string tool, std::string args,
                                  caf::duration timeout = caf::duration{20s}) {
    caf::expected<tool_result> out{caf::sec::none};
    self->request(vm, timeout, call_atom::value, tool_call{std::move(tool), std::move(args)})
      .receive([&](tool_result& r) { out = std::move(r); },
               [&](caf::error& e) { out = std::move(e); });
    return out;
  }

  agent_info info(const caf::actor& vm) {
    agent_info out;
    self->request(vm, caf::duration{5s}, get_atom::value)
      .receive([&](agent_info& i) { out = std::move(i); },
               [&](caf::error& e) { FAIL("get: " << caf::to_string(e)); });
    return out;
  }

  /// The down_info of `vm`'s end (skipping agent_oom and other messages).
  down_info wait_down(const caf::actor& vm, caf::duration timeout = caf::duration{20s}) {
    std::optional<down_info> out;
    while (!out) {
      bool timed_out = false;
      self->receive([&](caf::down_msg& dm) {
        if (dm.source == vm.address())
          out = down_info_from(dm.reason, {});
      },
                    [&](agent_oom&) { ++ooms; }, [&](agent_ready&) {},
                    caf::after(timeout) >> [&] { timed_out = true; });
      REQUIRE_FALSE_MESSAGE(timed_out, "the vm_actor did not end in time");
    }
    return *out;
  }

  int ooms = 0;
  caf::scoped_actor self{sys};
};

} // namespace

TEST_CASE_FIXTURE(fixture, "spawn, ready, tools, get, graceful stop: down reason stopped") {
  auto vm = start(options("vm-basic"));
  auto w = call(vm, "write_file", R"({"path":"a.txt","content":"hello"})");
  REQUIRE(w);
  CHECK(w->ok);
  auto r = call(vm, "read_file", R"({"path":"a.txt"})");
  REQUIRE(r);
  CHECK(r->ok);
  CHECK(contains(r->result_json, "hello"));
  auto bad = call(vm, "read_file", R"({"path":"../etc/passwd"})");
  REQUIRE(bad);
  CHECK_FALSE(bad->ok);
  CHECK(bad->error_code == "path_escape");
  // The OOM killer's order: a command (500) before the guest (0). The
  // guest writes the command's score just after the spawn; `cat` is
  // forked well after that.
  auto adj = call(vm, "execute_command",
                  R"({"argv":["/bin/sh","-c","sleep 0.2; cat /proc/1/oom_score_adj /proc/self/oom_score_adj"]})");
  REQUIRE(adj);
  INFO(adj->result_json);
  CHECK(contains(adj->result_json, R"(0\n500\n)"));
  auto i = info(vm);
  CHECK(i.id == "vm-basic");
  CHECK(i.state == vm_state::ready);
  CHECK(i.backend == "sandbox");
  CHECK(i.memory_limit_bytes == 128ull << 20);
  CHECK(live_cgroups() == 1);
  self->send(vm, stop_atom::value, uint32_t{2000});
  auto d = wait_down(vm);
  CHECK(d.reason == down_reason::stopped);
  CHECK(is_normal(d));
  CHECK(live_cgroups() == 0);
}

TEST_CASE_FIXTURE(fixture, "more calls than max_calls_in_flight: all answered, in order of queueing") {
  auto o = options("vm-queue");
  o.max_calls_in_flight = 2;
  auto vm = start(o);
  std::vector<caf::response_handle<caf::blocking_actor, caf::message, true>> handles;
  const int n = 12;
  for (int k = 0; k < n; ++k)
    self->send(vm, call_atom::value,
               tool_call{"execute_command", R"({"argv":["/bin/sh","-c","echo )" + std::to_string(k)
                                              + R"("]})"});
  int answered = 0, ok = 0;
  for (int k = 0; k < n; ++k)
    self->receive([&](tool_result& r) {
      ++answered;
      ok += r.ok ? 1 : 0;
    },
                  [&](caf::error& e) { FAIL(caf::to_string(e)); },
                  caf::after(20s) >> [&] { FAIL("a call got no answer"); });
  CHECK(answered == n);
  CHECK(ok == n);
  self->send(vm, stop_atom::value, uint32_t{1000});
  CHECK(wait_down(vm).reason == down_reason::stopped);
}

TEST_CASE_FIXTURE(fixture, "SIGKILL from outside: crashed (not oom), pending calls get agent_down") {
  auto vm = start(options("vm-crash"));
  auto pid = info(vm).pid;
  REQUIRE(pid > 0);
  // A call that would take 10 s is pending when the guest dies. (Sent, not
  // requested: a blocking actor sees a request's answer only through its
  // response handle, and this one must kill while the call waits.)
  self->send(vm, call_atom::value,
             tool_call{"execute_command", R"({"argv":["/bin/sleep","10"],"timeout_ms":20000})"});
  std::this_thread::sleep_for(200ms);
  REQUIRE(::kill(pid, SIGKILL) == 0);
  bool answered = false;
  self->receive([&](tool_result&) { FAIL("the call succeeded after the kill"); },
                [&](caf::error& e) {
                  auto v = view(e);
                  CHECK(v.code == errc::agent_down);
                  CHECK(contains(v.message, "crashed"));
                  answered = true;
                },
                caf::after(20s) >> [&] { FAIL("the pending call got no answer"); });
  CHECK(answered);
  auto d = wait_down(vm);
  CHECK(d.reason == down_reason::crashed);
  CHECK(d.signal == SIGKILL);
  CHECK_FALSE(is_normal(d));
  CHECK(live_cgroups() == 0);
}

TEST_CASE_FIXTURE(fixture, "the guest OOM-killed: down reason oom with limit and peak") {
  auto vm = start(options("vm-oom", 48));
  self->request(vm, caf::duration{10s}, fault_atom::value, fault_request{"oom"})
    .receive([](tool_result&) {}, [](caf::error& e) { FAIL(caf::to_string(e)); });
  auto d = wait_down(vm);
  CHECK(d.reason == down_reason::oom);
  CHECK(contains(d.detail, std::to_string(48ull << 20)));
  CHECK(ooms >= 1); // agent_oom reached the parent first
  CHECK(live_cgroups() == 0);
}

TEST_CASE_FIXTURE(fixture, "a command OOM-killed: agent_oom to the parent, the agent lives on") {
  auto vm = start(options("vm-cmd-oom", 128));
  // A command that allocates past the limit (head -c from /dev/zero into
  // a shell variable grows the shell).
  auto r = call(vm, "execute_command",
                R"({"argv":["/bin/sh","-c","x=$(head -c 400000000 /dev/zero | tr '\\0' a); echo ${#x}"],"timeout_ms":20000})",
                caf::duration{30s});
  REQUIRE(r);
  bool got_oom = false;
  self->receive([&](agent_oom& e) {
    CHECK(e.id == "vm-cmd-oom");
    got_oom = true;
  },
                caf::after(5s) >> [] {});
  CHECK(got_oom);
  CHECK(info(vm).oom_kills >= 1);
  auto again = call(vm, "list_directory", "{}");
  REQUIRE(again);
  CHECK(again->ok);
  self->send(vm, stop_atom::value, uint32_t{1000});
  CHECK(wait_down(vm).reason == down_reason::stopped);
}

TEST_CASE_FIXTURE(fixture, "SIGSTOP on the guest: hung after hang_timeout, killed, cleaned") {
  auto vm = start(options("vm-hang"));
  auto pid = info(vm).pid;
  REQUIRE(::kill(pid, SIGSTOP) == 0);
  auto d = wait_down(vm);
  CHECK(d.reason == down_reason::hung);
  CHECK(contains(d.detail, "no line from the guest for 1000 ms"));
  CHECK(live_cgroups() == 0);
}

TEST_CASE_FIXTURE(fixture, "garbage from the guest: protocol_error, agent killed") {
  for (auto what : {"malformed", "oversized", "unknown_type", "orphan_result"}) {
    CAPTURE(what);
    auto vm = start(options(std::string("vm-garbage-") + what));
    self->send(vm, fault_atom::value, fault_request{"garbage", 0, 0, what});
    bool answered = false;
    // The fault's own call is answered (agent_down) before the actor ends.
    self->receive([&](tool_result&) { answered = true; },
                  [&](caf::error& e) {
                    CHECK(view(e).code == errc::agent_down);
                    answered = true;
                  },
                  caf::after(20s) >> [] {});
    CHECK(answered);
    auto d = wait_down(vm);
    CHECK(d.reason == down_reason::protocol_error);
    CHECK_FALSE(d.detail.empty());
  }
  CHECK(live_cgroups() == 0);
}

TEST_CASE_FIXTURE(fixture, "the guest exits by itself: exited with its code") {
  auto vm = start(options("vm-exit"));
  self->send(vm, fault_atom::value, fault_request{"exit", 3});
  auto d = wait_down(vm);
  CHECK(d.reason == down_reason::exited);
  CHECK(d.exit_code == 3);
  CHECK_FALSE(is_normal(d));
}

TEST_CASE_FIXTURE(fixture, "a spawn the backend refuses: spawn_failed, calls queued meanwhile answered") {
  auto o = options("bad id with spaces");
  auto vm = spawn_vm_actor(sys, vm_context{backend, &io, caf::actor{self}, {}, {}, {}}, o);
  self->monitor(vm);
  self->request(vm, caf::duration{10s}, call_atom::value, tool_call{"list_directory", "{}"})
    .receive([](tool_result&) { FAIL("a call on a machine that never ran succeeded"); },
             [](caf::error& e) { CHECK(view(e).code == errc::agent_down); });
  auto d = wait_down(vm);
  CHECK(d.reason == down_reason::spawn_failed);
  CHECK(contains(d.detail, "invalid agent id"));
}

TEST_CASE_FIXTURE(fixture, "stop during calls: calls in flight finish, new ones are refused") {
  auto vm = start(options("vm-drain"));
  self->send(vm, call_atom::value,
             tool_call{"execute_command", R"({"argv":["/bin/sleep","0.3"]})"});
  std::this_thread::sleep_for(50ms);
  self->send(vm, stop_atom::value, uint32_t{5000});
  self->send(vm, call_atom::value, tool_call{"list_directory", "{}"});
  int ok = 0, refused = 0;
  for (int k = 0; k < 2; ++k)
    self->receive([&](tool_result& r) { ok += r.ok ? 1 : 0; },
                  [&](caf::error& e) {
                    CHECK(view(e).code == errc::draining);
                    ++refused;
                  },
                  caf::after(10s) >> [] { FAIL("no answer"); });
  CHECK(ok == 1);
  CHECK(refused == 1);
  CHECK(wait_down(vm).reason == down_reason::stopped);
}

TEST_CASE_FIXTURE(fixture, "kill with a reason (eviction): that reason") {
  auto vm = start(options("vm-evict"));
  self->send(vm, kill_atom::value, down_reason::evicted, std::string("host memory pressure"));
  auto d = wait_down(vm);
  CHECK(d.reason == down_reason::evicted);
  CHECK(d.detail == "host memory pressure");
  CHECK(live_cgroups() == 0);
}

TEST_CASE_FIXTURE(fixture, "a vm_actor killed outright: the backend kills its machine") {
  auto vm = start(options("vm-orphan"));
  auto pid = info(vm).pid;
  self->send_exit(vm, caf::exit_reason::kill);
  wait_down(vm);
  // The backend saw its owner go and killed the machine; its cgroup goes.
  for (int k = 0; k < 200 && live_cgroups() != 0; ++k)
    std::this_thread::sleep_for(25ms);
  CHECK(live_cgroups() == 0);
  CHECK(::kill(pid, 0) != 0);
}

#pragma once
// Spawner scenarios that need nothing but the vm_actor protocol: children
// are crashed with (kill_atom, reason, detail), so the same functions run
// over test children (spawner_otp) and, later, over real sandboxes. Each
// checks which children went down and restarted, in which order, and the
// spawner's records; never how fast.

#include "spawner_fixture.hpp"

#include <string>
#include <vector>

namespace agentvisor::testing {


inline void scenario_one_for_one(spawner_fixture& f) {
  f.opts.supervision.strategy = restart_strategy::one_for_one;
  f.start_spawner();
  auto a = f.start_ok("a"), b = f.start_ok("b"), c = f.start_ok("c");
  auto mark = f.log->size();
  f.kill(b, down_reason::crashed, "boom");
  REQUIRE(f.ready_after(b, 1));
  CHECK(f.log->since(mark, "spawn ") == ids{b});
  CHECK(f.log->spawns(a) == 1);
  CHECK(f.log->spawns(c) == 1);
  auto info = f.get(b);
  REQUIRE(info);
  CHECK(info->last_down_reason == "crashed: boom");
  CHECK(f.get(a)->restarts == 0);
}

inline void scenario_simple_one_for_one(spawner_fixture& f) {
  f.opts.supervision.strategy = restart_strategy::simple_one_for_one;
  f.start_spawner();
  auto a = f.start_ok("a"), b = f.start_ok("b");
  auto mark = f.log->size();
  f.kill(a, down_reason::hung, "no heartbeat");
  REQUIRE(f.ready_after(a, 1));
  CHECK(f.log->since(mark, "spawn ") == ids{a});
  CHECK(f.log->spawns(b) == 1);
}

inline void scenario_one_for_all(spawner_fixture& f) {
  f.opts.supervision.strategy = restart_strategy::one_for_all;
  f.start_spawner();
  auto a = f.start_ok("a"), b = f.start_ok("b"), c = f.start_ok("c");
  auto mark = f.log->size();
  f.kill(b, down_reason::crashed, "boom");
  REQUIRE(f.ready_after(a, 1));
  REQUIRE(f.ready_after(b, 1));
  REQUIRE(f.ready_after(c, 1));
  // The failed one first, the others stopped in reverse start order, then
  // all restarted in start order.
  CHECK(f.downs_since(mark, 3) == ids{b + " crashed", c + " stopped", a + " stopped"});
  CHECK(f.log->since(mark, "spawn ") == ids{a, b, c});
}

inline void scenario_rest_for_one(spawner_fixture& f) {
  f.opts.supervision.strategy = restart_strategy::rest_for_one;
  f.start_spawner();
  auto a = f.start_ok("a"), b = f.start_ok("b"), c = f.start_ok("c"), d = f.start_ok("d");
  auto mark = f.log->size();
  f.kill(b, down_reason::oom, "OOM kill");
  REQUIRE(f.ready_after(b, 1));
  REQUIRE(f.ready_after(c, 1));
  REQUIRE(f.ready_after(d, 1));
  CHECK(f.downs_since(mark, 3) == ids{b + " oom", d + " stopped", c + " stopped"});
  CHECK(f.log->since(mark, "spawn ") == ids{b, c, d});
  CHECK(f.log->spawns(a) == 1);
}

inline void scenario_restart_types(spawner_fixture& f) {
  f.start_spawner();
  auto p = f.start_ok("perm", restart_type::permanent);
  auto t1 = f.start_ok("trans1", restart_type::transient);
  auto t2 = f.start_ok("trans2", restart_type::transient);
  auto tmp = f.start_ok("temp", restart_type::temporary);
  // permanent: restarted even after a normal end.
  f.kill(p, down_reason::stopped, "asked to");
  REQUIRE(f.ready_after(p, 1));
  // transient: restarted after an abnormal end only.
  f.kill(t1, down_reason::crashed, "segv");
  REQUIRE(f.ready_after(t1, 1));
  f.kill(t2, down_reason::stopped, "done");
  REQUIRE(f.gone(t2));
  CHECK(f.log->spawns(t2) == 1);
  // temporary: never restarted, even after a crash.
  f.kill(tmp, down_reason::crashed, "segv");
  REQUIRE(f.gone(tmp));
  CHECK(f.log->spawns(tmp) == 1);
  auto all = f.list();
  REQUIRE(all.size() == 2);
  CHECK(all[0].id == p);
  CHECK(all[1].id == t1);
}

inline void scenario_evicted_permanent_restarts(spawner_fixture& f) {
  f.start_spawner();
  auto a = f.start_ok("a");
  caf::anon_send(f.sp, evict_request{a, "host memory pressure"});
  REQUIRE(f.ready_after(a, 1));
  CHECK(f.get(a)->last_down_reason == "evicted: host memory pressure");
}

inline void scenario_intensity_escalates(spawner_fixture& f) {
  f.opts.supervision.max_restarts = 2;
  f.opts.supervision.period_ms = 600000;
  f.start_spawner();
  f.self()->monitor(f.sp);
  auto a = f.start_ok("a");
  auto b = f.start_ok("b");
  f.kill(a, down_reason::crashed, "one");
  REQUIRE(f.ready_after(a, 1));
  f.kill(a, down_reason::crashed, "two");
  REQUIRE(f.ready_after(a, 2));
  f.kill(a, down_reason::oom, "three");
  caf::error reason;
  f.self()->receive([&](caf::down_msg& dm) { reason = dm.reason; });
  auto v = view(reason);
  CHECK(v.code == errc::escalated);
  CHECK(v.message.find("3 restarts within 600000 ms") != std::string::npos);
  CHECK(v.message.find("agent " + a + " oom: three") != std::string::npos);
  // Every child was stopped before the spawner quit.
  REQUIRE(f.eventually([&] { return f.log->since(0, "down " + b).size() == 1; }));
  f.sp = nullptr; // gone: nothing to shut down
}

inline void scenario_stop_removes(spawner_fixture& f) {
  f.start_spawner();
  auto a = f.start_ok("a"), b = f.start_ok("b");
  auto info = f.stop(a);
  REQUIRE(info);
  CHECK(info->id == a);
  CHECK(info->state == vm_state::stopped);
  CHECK(info->last_down_reason.rfind("stopped", 0) == 0);
  CHECK(view(f.get(a).error()).code == errc::not_found);
  CHECK(view(f.stop(a).error()).code == errc::not_found);
  CHECK(f.log->spawns(a) == 1); // permanent, yet not restarted
  auto all = f.list();
  REQUIRE(all.size() == 1);
  CHECK(all[0].id == b);
}

inline void scenario_shutdown_order(spawner_fixture& f) {
  f.start_spawner();
  auto a = f.start_ok("a"), b = f.start_ok("b"), c = f.start_ok("c");
  auto mark = f.log->size();
  REQUIRE(f.shutdown());
  CHECK(f.downs_since(mark, 3) == ids{c + " stopped", b + " stopped", a + " stopped"});
  CHECK(f.list().empty());
  auto s = f.start("late");
  REQUIRE(!s);
  CHECK(view(s.error()).code == errc::draining);
}

inline void scenario_bad_requests(spawner_fixture& f) {
  f.start_spawner();
  auto check = [&](agent_request req, const char* field) {
    auto x = f.ask<agent_info>(start_atom::value, req);
    REQUIRE(!x);
    CHECK(view(x.error()).code == errc::bad_request);
    CHECK(view(x.error()).message.rfind(field, 0) == 0);
  };
  check(agent_request{}, "name");
  check(agent_request{"has space", 0, 0, 0, restart_type::permanent, false, {}}, "name");
  check(agent_request{std::string(100, 'x'), 0, 0, 0, restart_type::permanent, false, {}}, "name");
  check(agent_request{"m", uint64_t{1} << 40, 0, 0, restart_type::permanent, false, {}}, "memory_mb");
  check(agent_request{"p", 0, 1u << 30, 0, restart_type::permanent, false, {}}, "pids");
  check(agent_request{"c", 0, 0, 20000, restart_type::permanent, false, {}}, "cpu_weight");
  check(agent_request{"b", 0, 0, 0, restart_type::permanent, false, "vmware"},
        "backend: expected one of sandbox, qemu, firecracker, got \"vmware\"");
  check(agent_request{"b", 0, 0, 0, restart_type::permanent, false, "qemu"},
        "backend \"qemu\" is not enabled here (enabled: sandbox)");
  CHECK(f.log->total_spawns() == 0);
  CHECK(view(f.get("a-99").error()).code == errc::not_found);
  CHECK(view(f.call("a-99", tool_call{}).error()).code == errc::not_found);
}

} // namespace agentvisor::testing

// The hot-path rule of include/agentvisor/metrics.hpp: an update allocates
// nothing. This program replaces the global operator new to count the
// allocations made on this thread while a check is armed.

#include "agentvisor/metrics.hpp"

#include <doctest/doctest.h>

#include <cstdlib>
#include <new>

namespace {
thread_local bool armed = false;
thread_local std::size_t allocations = 0;

void* counted(std::size_t n) {
  if (armed)
    ++allocations;
  if (void* p = std::malloc(n == 0 ? 1 : n))
    return p;
  throw std::bad_alloc{};
}
} // namespace

void* operator new(std::size_t n) {
  return counted(n);
}
void* operator new[](std::size_t n) {
  return counted(n);
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete[](void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  std::free(p);
}

namespace am = agentvisor::metrics;

namespace {

/// Allocations `f` makes on this thread.
template <class F>
std::size_t allocations_in(F&& f) {
  allocations = 0;
  armed = true;
  f();
  armed = false;
  return allocations;
}

} // namespace

TEST_CASE("the allocation counter sees an allocation") {
  // Otherwise the checks below could pass for the wrong reason.
  CHECK(allocations_in([] { delete new int(1); }) == 1);
}

TEST_CASE("updating a metric allocates nothing") {
  agentvisor::metrics_config cfg;
  am::metrics m(cfg);
  auto agent = m.add_agent("a-1");
  REQUIRE(static_cast<bool>(agent));
  using namespace std::chrono_literals;
  auto n = allocations_in([&] {
    for (int i = 0; i < 100; ++i) {
      m.agent_state(std::nullopt, agentvisor::vm_state::spawning);
      m.agent_state(agentvisor::vm_state::spawning, agentvisor::vm_state::ready);
      m.spawned(agentvisor::backend_kind::sandbox, am::spawn_result::ok, 15ms);
      m.agent_down(agentvisor::down_reason::oom);
      m.restarted();
      m.oom_kill();
      m.tool_call(am::tool::execute_command, am::call_outcome::ok, 250us);
      m.heartbeat_lag(2ms);
      m.pool_size(1, 2);
      m.pool_handout();
      m.pool_miss();
      m.grant_given();
      m.grant_refused(am::refusal::draining);
      m.queued(3);
      m.memory_in_use(1 << 20);
      m.host_available(1 << 30);
      m.eviction();
      m.fault_injected(am::fault_kind::kill);
      am::metrics::agent_memory(agent, 4096);
      am::metrics::agent_tool_call(agent);
      am::metrics::agent_heartbeat_lag(agent, 1ms);
    }
  });
  CHECK(n == 0);
  m.remove_agent(agent);
}

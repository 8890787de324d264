// The fault plan: deterministic from the seed, the schedule kept, random
// faults at the scenario's rate (exponential gaps), kinds by weight,
// targets uniform, times sorted within the duration.

#include "agentvisor/chaos.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <random>
#include <set>

using namespace agentvisor::chaos;

namespace {

scenario random_scenario(double per_s, double duration_s) {
  scenario s;
  s.name = "random";
  s.duration_s = duration_s;
  s.agent_count = 4;
  s.random_per_s = per_s;
  s.random_kinds = {{fault_kind::kill, 3}, {fault_kind::hang, 1}, {fault_kind::oom, 0}};
  s.fault_duration_ms = 700;
  return s;
}

bool same(const std::vector<planned_fault>& a, const std::vector<planned_fault>& b) {
  if (a.size() != b.size())
    return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].id != b[i].id || a[i].at_s != b[i].at_s || a[i].kind != b[i].kind
        || a[i].agent != b[i].agent || a[i].duration_ms != b[i].duration_ms)
      return false;
  return true;
}

} // namespace

TEST_CASE("the same seed gives the same plan, another seed another") {
  auto s = random_scenario(2, 100);
  auto a = plan(s, 7);
  auto b = plan(s, 7);
  REQUIRE(a.size() > 50);
  CHECK(same(a, b));
  auto c = plan(s, 8);
  CHECK_FALSE(same(a, c));
  // Not only the times: the kind and target sequences differ too.
  std::size_t n = std::min(a.size(), c.size()), kinds_differ = 0, agents_differ = 0;
  for (std::size_t i = 0; i < n; ++i) {
    kinds_differ += a[i].kind != c[i].kind;
    agents_differ += a[i].agent != c[i].agent;
  }
  CHECK(kinds_differ > 0);
  CHECK(agents_differ > 0);
}

TEST_CASE("the draws are the documented ones on std::mt19937_64") {
  // Re-derives the first random fault from the engine, as docs/chaos.md
  // describes it: a gap -ln(1 - u)/rate with u from the top 53 bits, then
  // the kind (weights in kind order), then the target (x mod n, redrawn
  // below 2^64 mod n). Another implementation can reproduce a plan this way.
  auto s = random_scenario(2, 100);
  uint64_t seed = 12345;
  std::mt19937_64 g(seed);
  auto unit = [&] { return static_cast<double>(g() >> 11) * 0x1.0p-53; };
  double gap = -std::log(1.0 - unit()) / 2;
  double x = unit() * 4; // weights kill 3, hang 1 (oom 0 never)
  fault_kind kind = x < 3 ? fault_kind::kill : fault_kind::hang;
  uint64_t threshold = (0 - uint64_t{4}) % 4, r;
  do
    r = g();
  while (r < threshold);
  auto p = plan(s, seed);
  REQUIRE(!p.empty());
  CHECK(p[0].at_s == doctest::Approx(gap).epsilon(1e-6));
  CHECK(p[0].kind == kind);
  CHECK(p[0].agent == r % 4);
}

TEST_CASE("random faults come at the rate, sorted, within the duration, by weight and uniformly") {
  auto s = random_scenario(10, 1000); // about 10,000 faults
  auto p = plan(s, 1);
  // Poisson: sd = sqrt(10000) = 100; 5 % is 5 sd.
  CHECK(p.size() > 9500);
  CHECK(p.size() < 10500);
  std::map<fault_kind, std::size_t> kinds;
  std::map<uint32_t, std::size_t> agents;
  double prev = 0, sum = 0, sum_sq = 0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    CHECK(p[i].id == i + 1);
    CHECK(p[i].at_s >= prev);
    CHECK(p[i].at_s < s.duration_s);
    double gap = p[i].at_s - prev;
    sum += gap;
    sum_sq += gap * gap;
    prev = p[i].at_s;
    kinds[p[i].kind]++;
    agents[p[i].agent]++;
    CHECK(p[i].duration_ms == (has_duration(p[i].kind) ? 700u : 0u));
  }
  auto n = static_cast<double>(p.size());
  // Weights 3 : 1 : 0.
  CHECK(kinds.count(fault_kind::oom) == 0);
  CHECK(static_cast<double>(kinds[fault_kind::kill]) / n == doctest::Approx(0.75).epsilon(0.04));
  // Uniform over 4 agents.
  REQUIRE(agents.size() == 4);
  for (const auto& [a, count] : agents)
    CHECK(static_cast<double>(count) / n == doctest::Approx(0.25).epsilon(0.08));
  // Exponential gaps: mean 1/rate and a standard deviation equal to the
  // mean (fixed gaps would have none).
  double mean = sum / n;
  double sd = std::sqrt(sum_sq / n - mean * mean);
  CHECK(mean == doctest::Approx(0.1).epsilon(0.05));
  CHECK(sd / mean == doctest::Approx(1.0).epsilon(0.1));
}

TEST_CASE("random_count caps the random faults") {
  auto s = random_scenario(10, 1000);
  s.random_count = 123;
  CHECK(plan(s, 3).size() == 123);
}

TEST_CASE("the schedule is kept: times, kinds, targets, default durations") {
  scenario s;
  s.duration_s = 60;
  s.agent_count = 3;
  s.fault_duration_ms = 1500;
  s.schedule = {
    {30, fault_kind::partition, 1, 0},
    {10, fault_kind::kill, 2, 0},
    {20, fault_kind::cpu_hog, -1, 400},
    {40, fault_kind::governor_pressure, 2, 0},
    {50, fault_kind::hang, 4, 0}, // modulo the agent count
  };
  auto p = plan(s, 99);
  REQUIRE(p.size() == 5);
  CHECK(p[0].at_s == 10);
  CHECK(p[0].kind == fault_kind::kill);
  CHECK(p[0].agent == 2);
  CHECK(p[0].duration_ms == 0);
  CHECK(p[1].kind == fault_kind::cpu_hog);
  CHECK(p[1].agent < 3);
  CHECK(p[1].duration_ms == 400);
  CHECK(p[2].kind == fault_kind::partition);
  CHECK(p[2].duration_ms == 1500);
  CHECK(p[3].kind == fault_kind::governor_pressure);
  CHECK(p[3].agent == 0); // no target
  CHECK(p[4].agent == 1);
  for (std::size_t i = 0; i < p.size(); ++i)
    CHECK(p[i].id == i + 1);
  // Random targets of the schedule are drawn from the seed too.
  std::set<uint32_t> targets;
  for (uint64_t seed = 0; seed < 50; ++seed)
    targets.insert(plan(s, seed)[1].agent);
  CHECK(targets.size() == 3);
}

TEST_CASE("adding random faults does not move the scheduled ones") {
  scenario s = random_scenario(0, 60);
  s.random_kinds.clear();
  s.schedule = {{5, fault_kind::kill, -1, 0}, {6, fault_kind::oom, -1, 0}};
  auto before = plan(s, 5);
  s.random_per_s = 1;
  s.random_kinds = {{fault_kind::crash, 1}};
  auto after = plan(s, 5);
  REQUIRE(before.size() == 2);
  for (const auto& b : before) {
    bool found = false;
    for (const auto& a : after)
      found = found || (a.at_s == b.at_s && a.kind == b.kind && a.agent == b.agent);
    CHECK(found);
  }
}

TEST_CASE("the soak scenario plans 10,000 random faults, whatever the seed") {
  auto s = load_scenario(std::string{SCENARIO_DIR} + "/soak.json");
  REQUIRE_MESSAGE(s.has_value(), s.err().message);
  for (uint64_t seed : {1u, 2u, 3u}) {
    auto p = plan(*s, seed);
    CHECK(p.size() == 10000);
    CHECK(p.back().at_s < s->duration_s);
  }
}

TEST_CASE("the smoke scenario's plan is its schedule") {
  auto s = load_scenario(std::string{SCENARIO_DIR} + "/smoke.json");
  REQUIRE_MESSAGE(s.has_value(), s.err().message);
  auto a = plan(*s, 1);
  CHECK(a.size() == s->schedule.size());
  CHECK(same(a, plan(*s, 2))); // no random draws: every target is given
}

// The fault plan: a scenario's schedule plus random faults drawn from a
// seed. Every draw is our own arithmetic on std::mt19937_64 (whose output
// the standard fixes bit for bit), never a std::*_distribution (whose
// algorithms each standard library chooses), so a seed names the same plan
// everywhere. docs/chaos.md ("The plan") describes the draws.

#include "agentvisor/chaos.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

namespace agentvisor::chaos {
namespace {

// The most random faults one plan holds, whatever the scenario says
// (parse_scenario refuses more; a hand-made scenario must not exhaust memory).
constexpr uint64_t max_random_faults = 10'000'000;

class draws {
public:
  explicit draws(uint64_t seed) : gen_(seed) {}

  /// Uniform in [0, 1): the top 53 bits, exactly representable.
  double unit() { return static_cast<double>(gen_() >> 11) * 0x1.0p-53; }

  /// Uniform in [0, n), n > 0, without modulo bias: values below 2^64 mod n
  /// are redrawn (at most half the range, so two draws on average at worst).
  uint64_t below(uint64_t n) {
    uint64_t threshold = (0 - n) % n; // 2^64 mod n
    for (;;) {
      uint64_t r = gen_();
      if (r >= threshold)
        return r % n;
    }
  }

  /// Exponential with rate `per_s` (inverse CDF): the gap between events of
  /// a Poisson process. 1 - unit() is in (0, 1], so the log is finite.
  double exponential(double per_s) { return -std::log(1.0 - unit()) / per_s; }

private:
  std::mt19937_64 gen_;
};

// Times are rounded to the microsecond: a last-bit difference between two
// libm's std::log cannot then reorder or change the plan as printed.
double to_us(double t) {
  return std::round(t * 1e6) / 1e6;
}

// A kind drawn by weight: the weights in the map's (enum) order laid end to
// end, and the one under a uniform point. Zero weights are never drawn.
fault_kind draw_kind(draws& d, const std::map<fault_kind, double>& kinds,
                     double total) {
  double x = d.unit() * total;
  fault_kind last = kinds.begin()->first;
  for (const auto& [k, w] : kinds) {
    if (w <= 0)
      continue;
    last = k;
    if (x < w)
      return k;
    x -= w;
  }
  return last; // rounding left x just past the end: the last positive kind
}

} // namespace

std::vector<planned_fault> plan(const scenario& s, uint64_t seed) {
  std::vector<planned_fault> out;
  draws d{seed};
  uint32_t agents = std::max<uint32_t>(s.agent_count, 1);

  // Scheduled faults first, in file order: their random targets are the
  // first draws, so adding random faults never moves a scheduled one.
  for (const auto& f : s.schedule) {
    planned_fault p;
    p.at_s = to_us(f.at_s);
    p.kind = f.kind;
    p.agent = f.agent < 0 ? static_cast<uint32_t>(d.below(agents))
                          : static_cast<uint32_t>(f.agent) % agents;
    p.duration_ms = has_duration(f.kind)
                      ? (f.duration_ms != 0 ? f.duration_ms : s.fault_duration_ms)
                      : 0;
    if (p.kind == fault_kind::governor_pressure)
      p.agent = 0;
    out.push_back(p);
  }

  double total = 0;
  for (const auto& [k, w] : s.random_kinds)
    total += w > 0 ? w : 0;
  if (s.random_per_s > 0 && total > 0 && s.duration_s > 0) {
    uint64_t cap = s.random_count != 0 ? std::min(s.random_count, max_random_faults)
                                       : max_random_faults;
    // Random faults arrive as a Poisson process at random_per_s: exponential
    // gaps, each followed by its kind and its target, in that order.
    double t = 0;
    for (uint64_t n = 0; n < cap; ++n) {
      t += d.exponential(s.random_per_s);
      if (t >= s.duration_s)
        break;
      planned_fault p;
      p.at_s = to_us(t);
      p.kind = draw_kind(d, s.random_kinds, total);
      p.agent = static_cast<uint32_t>(d.below(agents));
      if (p.kind == fault_kind::governor_pressure)
        p.agent = 0;
      p.duration_ms = has_duration(p.kind) ? s.fault_duration_ms : 0;
      out.push_back(p);
    }
  }

  // Stable: at equal times the scheduled fault comes first, then the file
  // order, then the draw order.
  std::stable_sort(out.begin(), out.end(),
                   [](const auto& a, const auto& b) { return a.at_s < b.at_s; });
  for (std::size_t i = 0; i < out.size(); ++i)
    out[i].id = i + 1;
  return out;
}

} // namespace agentvisor::chaos

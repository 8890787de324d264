// The invariants of a chaos run, checked on a finished run_log. Each says
// what held with numbers, or lists the first few violations: the evidence
// goes into report.json and report.html as it is. docs/chaos.md
// ("Invariants") is the contract.

#include "agentvisor/chaos.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <string>
#include <vector>

namespace agentvisor::chaos {
namespace {

// Violations quoted in an evidence string; the rest are counted.
constexpr std::size_t max_quoted = 3;
// Slack for timestamps the runner rounds to the millisecond and for the
// floating-point sums of its clock readings; far below any timeout.
constexpr double slack_s = 0.001;

std::string fixed(double x, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, x);
  return buf;
}

std::string secs(double s) {
  return fixed(s, 3) + " s";
}

std::string ms(double s) {
  return fixed(s * 1000, 0) + " ms";
}

// Collects violations: the first few in words, all of them counted.
struct violations {
  std::size_t count = 0;
  std::string quoted;

  void add(const std::string& what) {
    if (count++ < max_quoted) {
      if (!quoted.empty())
        quoted += "; ";
      quoted += what;
    }
  }

  std::string tail() const {
    std::string out = quoted;
    if (count > max_quoted)
      out += "; and " + std::to_string(count - max_quoted) + " more";
    return out;
  }
};

// "#12 kill on a-3 (agent 2) at 4.200 s".
std::string fault_name(const fault_record& r) {
  std::string out = "#" + std::to_string(r.fault.id) + " ";
  out += to_string(r.fault.kind);
  if (!r.agent_id.empty())
    out += " on " + r.agent_id;
  out += " at " + secs(r.injected_s);
  return out;
}

// The reason's name: runners may store describe() text such as
// "oom: OOM kill at limit 200 MiB"; the name is what comes before ':'.
std::string_view reason_name(std::string_view reason) {
  auto colon = reason.find(':');
  auto name = reason.substr(0, colon);
  while (!name.empty() && name.back() == ' ')
    name.remove_suffix(1);
  return name;
}

bool reason_expected(const fault_record& r) {
  if (!r.down_reason)
    return false;
  auto name = reason_name(*r.down_reason);
  return std::find(r.expected_reasons.begin(), r.expected_reasons.end(), name)
         != r.expected_reasons.end();
}

std::string reasons_text(const std::vector<std::string>& reasons) {
  std::string out;
  for (const auto& r : reasons) {
    if (!out.empty())
      out += " or ";
    out += r;
  }
  return out;
}

// The faults by target, and the pressure faults: a soak has 10,000 faults,
// and each looks only at those of its agent.
struct fault_index {
  std::map<std::string, std::vector<const fault_record*>, std::less<>> by_agent;
  std::vector<const fault_record*> pressure;

  explicit fault_index(const run_log& log) {
    for (const auto& o : log.faults) {
      if (o.skipped)
        continue;
      if (o.fault.kind == fault_kind::governor_pressure)
        pressure.push_back(&o);
      else
        by_agent[o.agent_id].push_back(&o);
    }
  }
};

// Whether another fault explains r's down at `t` with `reason`, so that r
// was pre-empted rather than missed:
//  - a later fault on the same agent injected before `t` (a kill during a
//    partition's silence takes the agent down first, for its own reason);
//  - an earlier fault on the same agent whose record holds this same down
//    with a reason it expected (a hang not yet found when an oom lands:
//    the down the oom sees is the hang's), or an earlier spawn_failure
//    whose trigger, a kill, is this `crashed` down;
//  - host memory pressure (no target: it evicts whom the governor picks,
//    as long as it lasts) under way at an `evicted` down: injected before
//    it, and lasting until it or at most `window_s` (the detection bound)
//    before it.
bool explained_by_other(const fault_index& idx, const fault_record& r, double t,
                        std::string_view reason, double window_s) {
  if (reason == "evicted")
    for (const auto* o : idx.pressure)
      if (o != &r && o->injected_s <= t
          && t <= o->injected_s + o->fault.duration_ms / 1000.0 + window_s)
        return true;
  auto same = idx.by_agent.find(r.agent_id);
  if (same == idx.by_agent.end())
    return false;
  for (const auto* op : same->second) {
    const auto& o = *op;
    if (&o == &r || o.injected_s > t)
      continue;
    bool later = o.injected_s > r.injected_s
                 || (o.injected_s == r.injected_s && o.fault.id > r.fault.id);
    if (later)
      return true;
    if (o.detected_s && *o.detected_s == t && reason_expected(o))
      return true;
    // A spawn_failure's trigger is a SIGKILL: its "crashed" down comes
    // before the spawn_failed one its record waits for.
    if (o.fault.kind == fault_kind::spawn_failure && reason == "crashed"
        && (!o.detected_s || *o.detected_s >= t))
      return true;
  }
  return false;
}

invariant_result faults_observed(const scenario& s, const run_log& log) {
  invariant_result out{"faults_observed", false, {}, true};
  double detect_s = s.detect_within_ms / 1000.0;
  std::size_t downs = 0, survivals = 0, skipped = 0;
  violations v;
  fault_index idx(log);
  for (const auto& r : log.faults) {
    if (r.skipped) {
      ++skipped;
      continue;
    }
    if (!r.expected_reasons.empty()) {
      ++downs;
      auto expect = "expected " + reasons_text(r.expected_reasons);
      if (r.agent_id.empty())
        v.add(fault_name(r) + ": no target agent, " + expect);
      else if (!r.down_reason || !r.detected_s)
        v.add(fault_name(r) + ": never went down, " + expect);
      else if (!reason_expected(r)
               && !explained_by_other(idx, r, *r.detected_s, reason_name(*r.down_reason),
                                      detect_s))
        v.add(fault_name(r) + ": went down \"" + *r.down_reason + "\", " + expect);
      else if (*r.detected_s - r.injected_s > detect_s + slack_s)
        v.add(fault_name(r) + ": down " + ms(*r.detected_s - r.injected_s)
              + " after injection, limit " + std::to_string(s.detect_within_ms)
              + " ms");
      continue;
    }
    ++survivals;
    // An agent expected to survive must not go down while the fault lasts
    // nor within the detection bound after it.
    if (r.agent_id.empty() || !r.down_reason || !r.detected_s)
      continue;
    double window_end = r.injected_s + r.fault.duration_ms / 1000.0 + detect_s;
    double t = *r.detected_s;
    if (t <= window_end
        && !explained_by_other(idx, r, t, reason_name(*r.down_reason), detect_s))
      v.add(fault_name(r) + ": expected to survive, went down \"" + *r.down_reason
            + "\" " + ms(t - r.injected_s) + " after injection");
  }
  out.passed = v.count == 0;
  auto counts = std::to_string(downs) + " fault(s) expecting a down, "
                + std::to_string(survivals) + " expecting survival, "
                + std::to_string(skipped) + " skipped";
  if (out.passed)
    out.evidence = "all " + std::to_string(downs + survivals)
                   + " injected faults observed as expected (" + counts
                   + "; downs within " + std::to_string(s.detect_within_ms)
                   + " ms with an expected reason)";
  else
    out.evidence = std::to_string(v.count) + " of " + std::to_string(downs + survivals)
                   + " injected faults not observed as expected (" + counts
                   + "): " + v.tail();
  return out;
}

invariant_result calls_accounted(const run_log& log) {
  const auto& c = log.calls;
  invariant_result out{"calls_accounted", false, {}, true};
  auto n = [](uint64_t x) { return std::to_string(x); };
  violations v;
  // Unsigned sums of counters far below 2^63: no overflow.
  if (c.sent != c.ok + c.failed + c.unanswered)
    v.add("sent " + n(c.sent) + " != ok " + n(c.ok) + " + failed " + n(c.failed)
          + " + unanswered " + n(c.unanswered) + " ("
          + n(c.ok + c.failed + c.unanswered) + ")");
  if (c.unanswered != 0)
    v.add(n(c.unanswered) + " call(s) never answered");
  if (c.supervisor_received != c.supervisor_answered)
    v.add("the supervisor received " + n(c.supervisor_received) + " call(s) but answered "
          + n(c.supervisor_answered));
  out.passed = v.count == 0;
  auto summary = n(c.sent) + " sent: " + n(c.ok) + " ok, " + n(c.failed) + " failed, "
                 + n(c.retried) + " retried, " + n(c.unanswered)
                 + " unanswered; supervisor received " + n(c.supervisor_received)
                 + ", answered " + n(c.supervisor_answered);
  out.evidence = out.passed ? "every call answered: " + summary
                            : v.tail() + " (" + summary + ")";
  return out;
}

invariant_result restart_intensity(const run_log& log) {
  invariant_result out{"restart_intensity", false, {}, true};
  if (log.period_ms == 0) {
    out.evidence = "the run log holds no supervision.period_ms: cannot check";
    return out;
  }
  std::vector<double> times;
  times.reserve(log.restarts.size());
  for (const auto& r : log.restarts)
    times.push_back(r.down_s);
  std::sort(times.begin(), times.end());
  // The busiest window of period_ms: for each restart, those that follow it
  // by less than the period (two pointers over the sorted times).
  double period_s = log.period_ms / 1000.0;
  std::size_t most = 0, most_at = 0;
  for (std::size_t i = 0, j = 0; i < times.size(); ++i) {
    if (j < i)
      j = i;
    while (j < times.size() && times[j] - times[i] < period_s)
      ++j;
    if (j - i > most) {
      most = j - i;
      most_at = i;
    }
  }
  auto limit = " (limit " + std::to_string(log.max_restarts) + " per "
               + std::to_string(log.period_ms) + " ms; "
               + std::to_string(times.size()) + " restart(s) in all)";
  bool exceeded = most > log.max_restarts;
  auto busiest = std::to_string(most) + " restart(s) within "
                 + std::to_string(log.period_ms) + " ms"
                 + (most > 0 ? " from " + secs(times[most_at]) : std::string{});
  if (!exceeded) {
    out.passed = true;
    out.evidence = "at most " + busiest + limit
                   + (log.escalated ? "; the supervisor escalated" : "");
  } else if (log.escalated) {
    // Over the limit and the supervisor gave up: what OTP intensity means.
    out.passed = true;
    out.evidence = busiest + " exceeded the limit and the supervisor escalated" + limit;
  } else {
    out.evidence = busiest + " and the supervisor did not escalate" + limit;
  }
  return out;
}

invariant_result backoff(const run_log& log) {
  invariant_result out{"backoff", false, {}, true};
  violations v;
  double least_margin_ms = std::numeric_limits<double>::infinity();
  for (const auto& r : log.restarts) {
    // min(max, min * 2^k), in doubles: 2^k overflows no integer this way,
    // and the cap makes any large k harmless.
    double bound_ms = std::min<double>(
      log.max_backoff_ms,
      log.min_backoff_ms * std::ldexp(1.0, static_cast<int>(std::min<uint32_t>(r.failures, 1000))));
    double waited_ms = (r.ready_s - r.down_s) * 1000;
    least_margin_ms = std::min(least_margin_ms, waited_ms - bound_ms);
    if (waited_ms + slack_s * 1000 < bound_ms)
      v.add(r.agent_id + " down at " + secs(r.down_s) + ": ready after "
            + fixed(waited_ms, 1) + " ms, backoff at least " + fixed(bound_ms, 0)
            + " ms (" + std::to_string(r.failures) + " failure(s) before)");
  }
  auto n = std::to_string(log.restarts.size());
  auto settings = "min_backoff_ms " + std::to_string(log.min_backoff_ms)
                  + ", max_backoff_ms " + std::to_string(log.max_backoff_ms);
  out.passed = v.count == 0;
  if (out.passed)
    out.evidence = log.restarts.empty()
                     ? "no restarts (" + settings + ")"
                     : "all " + n + " restart(s) waited at least min(max_backoff, min_backoff * 2^failures) ("
                         + settings + "; least margin " + fixed(least_margin_ms, 1) + " ms)";
  else
    out.evidence = std::to_string(v.count) + " of " + n + " restart(s) came before their backoff ("
                   + settings + "): " + v.tail();
  return out;
}

invariant_result recovered(const scenario& s, const run_log& log) {
  invariant_result out{"recovered", false, {}, true};
  double limit_s = s.recover_within_ms / 1000.0;
  violations v;
  std::size_t n = 0;
  double slowest = 0;
  for (const auto& r : log.faults) {
    if (r.skipped || r.expected_reasons.empty())
      continue;
    ++n;
    if (!r.recovered_s) {
      v.add(fault_name(r) + ": never serving again");
      continue;
    }
    double took = *r.recovered_s - r.injected_s;
    slowest = std::max(slowest, took);
    if (took > limit_s + slack_s)
      v.add(fault_name(r) + ": serving again after " + ms(took));
  }
  out.passed = v.count == 0;
  auto limit = "limit " + std::to_string(s.recover_within_ms) + " ms";
  if (out.passed)
    out.evidence = "all " + std::to_string(n) + " fault(s) expecting a down recovered (slowest "
                   + ms(slowest) + ", " + limit + ")";
  else
    out.evidence = std::to_string(v.count) + " of " + std::to_string(n)
                   + " fault(s) expecting a down did not recover in time (" + limit
                   + "): " + v.tail();
  return out;
}

invariant_result no_leftovers(const run_log& log) {
  invariant_result out{"no_leftovers", log.leftovers.empty(), {}, true};
  if (out.passed) {
    out.evidence = "no process, cgroup, fd or workspace of the run left";
    return out;
  }
  violations v;
  for (const auto& l : log.leftovers)
    v.add(l);
  out.evidence = std::to_string(log.leftovers.size()) + " left after the run: " + v.tail();
  return out;
}

invariant_result supervisor_alive(const run_log& log) {
  invariant_result out{"supervisor_alive", log.healthy_at_end, {}, true};
  out.evidence = log.healthy_at_end
                   ? "GET /healthz answered 200 at the end"
                   : std::string{"GET /healthz did not answer 200 at the end"}
                       + (log.escalated ? " (the supervisor escalated)" : "");
  return out;
}

} // namespace

std::vector<invariant_result> check(const scenario& s, const run_log& log) {
  std::vector<invariant_result> out{
    faults_observed(s, log), calls_accounted(log), restart_intensity(log),
    backoff(log),            recovered(s, log),    no_leftovers(log),
    supervisor_alive(log),
  };
  for (auto& i : out) {
    if (log.events_lost > 0 && (i.name == "faults_observed" || i.name == "recovered")) {
      i.passed = false;
      i.evidence = std::to_string(log.events_lost)
                   + " agent event(s) lost by the supervisor's event ring: a missed down "
                     "cannot be told from one that never happened; "
                   + i.evidence;
    }
    auto nc = log.not_checked.find(i.name);
    if (nc == log.not_checked.end())
      continue;
    if (i.passed) {
      i.passed = false;
      i.checked = false;
      i.evidence = "not checked (remote): " + nc->second;
    } else {
      i.evidence += "; and not checked (remote): " + nc->second;
    }
  }
  return out;
}

std::vector<invariant_result> check_so_far(const scenario& s, const run_log& log,
                                          double now_s) {
  run_log settled;
  double detect_s = s.detect_within_ms / 1000.0;
  for (const auto& r : log.faults)
    if (r.injected_s > 0 && r.injected_s + detect_s + slack_s < now_s)
      settled.faults.push_back(r);
  return {faults_observed(s, settled), restart_intensity(log), backoff(log)};
}

bool all_passed(const std::vector<invariant_result>& inv) {
  return !inv.empty() && std::any_of(inv.begin(), inv.end(), [](const auto& i) { return i.checked; })
         && std::all_of(inv.begin(), inv.end(),
                        [](const auto& i) { return i.passed || !i.checked; });
}

} // namespace agentvisor::chaos

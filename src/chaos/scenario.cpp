// Chaos scenario files: JSON (simdjson On-Demand) into chaos::scenario, with
// the config parser's error wording (json_read.hpp). docs/chaos.md documents
// every key and bound; keep the two in step.

#include "agentvisor/chaos.hpp"
#include "agentvisor/config.hpp"
#include "agentvisor/json_read.hpp"
#include "agentvisor/small_file.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <string>
#include <utility>

namespace agentvisor::chaos {
namespace {

namespace od = simdjson::ondemand;
using json_read::for_each_element;
using json_read::for_each_member;
using json_read::parse_state;
using json_read::quote;
using json_read::string_problem;
using json_read::value_reader;

constexpr std::array<std::string_view, fault_kind_count> kind_names{
  "kill",      "crash",     "hang",          "oom",
  "partition", "spawn_failure", "slow_spawn", "cpu_hog",
  "disk_fill", "fork_bomb", "governor_pressure"};
static_assert(static_cast<std::size_t>(fault_kind::governor_pressure) + 1
              == kind_names.size());

constexpr std::array<std::string_view, 5> tool_names{
  "read_file", "write_file", "search", "list_directory", "execute_command"};

// --- Bounds (documented in docs/chaos.md). ---

constexpr double week_s = 7 * 86400.0;
constexpr uint64_t hour_ms = 3'600'000;
constexpr uint64_t day_ms = 86'400'000;
constexpr uint64_t max_agents = 10'000;
constexpr uint64_t max_memory_mb = uint64_t{1} << 20; // 1 TiB, the spawner's cap
constexpr uint64_t pid_max_limit = 4'194'304;
constexpr double max_calls_per_s = 100'000;
constexpr double max_weight = 1e6;
constexpr double max_random_per_s = 1000;
// Beyond this a plan is a mistake: it would not fit in memory comfortably
// nor run in a week. Also bounds rate * duration when random_count is 0.
constexpr uint64_t max_faults = 10'000'000;
constexpr std::size_t max_name_bytes = 200;
constexpr std::size_t max_description_bytes = 4000;
// A scenario file larger than this is a mistake (or /dev/zero).
constexpr std::size_t max_file_bytes = 64 << 20;

std::optional<string_problem> check_name(std::string_view s) {
  if (s.empty() || s.size() > max_name_bytes)
    return string_problem{"1 to 200 bytes of text", {}};
  // It goes into logs, report titles and file names: no control characters.
  if (std::any_of(s.begin(), s.end(),
                  [](char c) { return static_cast<unsigned char>(c) < 0x20; }))
    return string_problem{"1 to 200 bytes of text", "contains a control character"};
  return std::nullopt;
}

std::optional<string_problem> check_description(std::string_view s) {
  if (s.size() > max_description_bytes)
    return string_problem{"at most 4000 bytes of text", {}};
  return std::nullopt;
}

// "PATH: missing (required)" for each required key not seen.
void require(parse_state& st, const std::string& prefix, bool seen,
             std::string_view key) {
  if (!seen)
    st.fail(json_read::join_path(prefix, key) + ": missing (required)");
}

// A fault kind by name: `unknown fault kind "explode" (one of kill, ...)`.
bool read_kind(value_reader& r, fault_kind& out) {
  auto type = r.kind();
  if (!type)
    return false;
  std::string name;
  if (*type != od::json_type::string) {
    r.expected("a fault kind (one of " + fault_kind_list() + ")", *type);
    return false;
  }
  if (!r.string(name))
    return false;
  auto k = fault_kind_from(name);
  if (!k) {
    r.fail("unknown fault kind " + quote(name) + " (one of " + fault_kind_list()
           + ")");
    return false;
  }
  out = *k;
  return true;
}

template <class T>
bool read_uint(value_reader& r, T& out, json_read::uint_range range) {
  uint64_t x = 0;
  if (!r.uint(x, range, std::numeric_limits<T>::max()))
    return false;
  out = static_cast<T>(x);
  return true;
}

// Keys seen in one object, for required keys and cross-checks.
struct agents_seen {
  bool count = false;
};

struct schedule_entry_seen {
  bool at_s = false;
  bool kind = false;
  bool duration_ms = false;
};

struct faults_seen {
  bool schedule = false;
  bool random_kinds = false;
  bool random_count = false;
  bool default_duration_ms = false;
  std::vector<bool> duration_given; // per schedule entry
};

struct root_seen {
  bool name = false;
  bool duration_s = false;
  bool agents = false;
  bool faults = false;
  faults_seen faults_keys;
};

void parse_agents(parse_state& st, od::object& obj, const std::string& prefix,
                  scenario& s) {
  agents_seen seen;
  for_each_member(st, obj, prefix, [&](std::string_view key,
                                       const std::string& path, od::value& v) {
    value_reader r{st, path, v};
    if (key == "count") {
      seen.count = true;
      read_uint(r, s.agent_count, {1, max_agents});
    } else if (key == "memory_mb") {
      read_uint(r, s.memory_mb, {16, max_memory_mb});
    } else if (key == "pids") {
      read_uint(r, s.pids, {8, pid_max_limit});
    } else if (key == "workspace_mb") {
      read_uint(r, s.workspace_mb, {1, max_memory_mb});
    } else {
      return false;
    }
    return true;
  });
  if (!st.failed())
    require(st, prefix, seen.count, "count");
}

void parse_workload(parse_state& st, od::object& obj, const std::string& prefix,
                    scenario& s) {
  for_each_member(st, obj, prefix, [&](std::string_view key,
                                       const std::string& path, od::value& v) {
    value_reader r{st, path, v};
    if (key == "calls_per_s") {
      r.number(s.calls_per_s, {0, max_calls_per_s, true});
    } else if (key == "tools") {
      od::object tools;
      if (!r.object(tools))
        return true;
      // A file that names its tools gets exactly those, not the defaults too.
      s.tools.clear();
      for_each_member(st, tools, path, [&](std::string_view tool,
                                           const std::string& tool_path,
                                           od::value& w) {
        value_reader tr{st, tool_path, w};
        if (std::find(tool_names.begin(), tool_names.end(), tool)
            == tool_names.end()) {
          tr.fail("unknown tool " + quote(tool)
                  + " (one of read_file, write_file, search, list_directory, "
                    "execute_command)");
          return true;
        }
        double weight = 0;
        if (tr.number(weight, {0, max_weight}))
          s.tools[std::string{tool}] = weight;
        return true;
      });
    } else if (key == "retryable") {
      r.boolean(s.retryable);
    } else if (key == "call_timeout_ms") {
      read_uint(r, s.call_timeout_ms, {1, hour_ms});
    } else {
      return false;
    }
    return true;
  });
}

void parse_schedule_entry(parse_state& st, od::object& obj,
                          const std::string& prefix, scheduled_fault& f,
                          schedule_entry_seen& seen) {
  for_each_member(st, obj, prefix, [&](std::string_view key,
                                       const std::string& path, od::value& v) {
    value_reader r{st, path, v};
    if (key == "at_s") {
      seen.at_s = true;
      r.number(f.at_s, {0, week_s});
    } else if (key == "kind") {
      seen.kind = true;
      read_kind(r, f.kind);
    } else if (key == "agent") {
      int64_t x = 0;
      if (r.integer(x, -1, static_cast<int64_t>(max_agents) - 1))
        f.agent = static_cast<int32_t>(x);
    } else if (key == "duration_ms") {
      seen.duration_ms = true;
      read_uint(r, f.duration_ms, {1, hour_ms});
    } else {
      return false;
    }
    return true;
  });
  if (st.failed())
    return;
  require(st, prefix, seen.at_s, "at_s");
  require(st, prefix, seen.kind, "kind");
}

void parse_faults(parse_state& st, od::object& obj, const std::string& prefix,
                  scenario& s, faults_seen& seen) {
  for_each_member(st, obj, prefix, [&](std::string_view key,
                                       const std::string& path, od::value& v) {
    value_reader r{st, path, v};
    if (key == "schedule") {
      seen.schedule = true;
      od::array arr;
      if (!r.array(arr))
        return true;
      s.schedule.clear();
      seen.duration_given.clear();
      for_each_element(st, arr, path, [&](std::size_t i,
                                          const std::string& item_path,
                                          od::value& item) {
        if (i >= max_faults) {
          st.fail(item_path + ": more than 10000000 scheduled faults");
          return;
        }
        value_reader ir{st, item_path, item};
        od::object entry;
        if (!ir.object(entry))
          return;
        scheduled_fault f;
        schedule_entry_seen entry_seen;
        parse_schedule_entry(st, entry, item_path, f, entry_seen);
        s.schedule.push_back(f);
        seen.duration_given.push_back(entry_seen.duration_ms);
      });
    } else if (key == "random_per_s") {
      r.number(s.random_per_s, {0, max_random_per_s});
    } else if (key == "random_count") {
      seen.random_count = true;
      read_uint(r, s.random_count, {0, max_faults});
    } else if (key == "random_kinds") {
      seen.random_kinds = true;
      od::object kinds;
      if (!r.object(kinds))
        return true;
      s.random_kinds.clear();
      for_each_member(st, kinds, path, [&](std::string_view name,
                                           const std::string& kind_path,
                                           od::value& w) {
        value_reader kr{st, kind_path, w};
        auto k = fault_kind_from(name);
        if (!k) {
          kr.fail("unknown fault kind " + quote(name) + " (one of "
                  + fault_kind_list() + ")");
          return true;
        }
        double weight = 0;
        if (kr.number(weight, {0, max_weight}))
          s.random_kinds[*k] = weight;
        return true;
      });
    } else if (key == "default_duration_ms") {
      seen.default_duration_ms = true;
      read_uint(r, s.fault_duration_ms, {1, hour_ms});
    } else {
      return false;
    }
    return true;
  });
}

void parse_invariants(parse_state& st, od::object& obj,
                      const std::string& prefix, scenario& s) {
  for_each_member(st, obj, prefix, [&](std::string_view key,
                                       const std::string& path, od::value& v) {
    value_reader r{st, path, v};
    if (key == "detect_within_ms") {
      read_uint(r, s.detect_within_ms, {1, hour_ms});
    } else if (key == "recover_within_ms") {
      read_uint(r, s.recover_within_ms, {1, day_ms});
    } else {
      return false;
    }
    return true;
  });
}

void parse_root(parse_state& st, od::object& root, scenario& s,
                root_seen& seen) {
  for_each_member(st, root, {}, [&](std::string_view key,
                                    const std::string& path, od::value& v) {
    value_reader r{st, path, v};
    od::object obj;
    if (key == "name") {
      seen.name = true;
      r.string(s.name, check_name);
    } else if (key == "description") {
      r.string(s.description, check_description);
    } else if (key == "duration_s") {
      seen.duration_s = true;
      r.number(s.duration_s, {0, week_s, true});
    } else if (key == "backend") {
      std::size_t i = 0;
      static constexpr std::array<std::string_view, 3> backends{
        "sandbox", "qemu", "firecracker"};
      if (r.enumeration(i, backends))
        s.backend = std::string{backends[i]};
    } else if (key == "agents") {
      seen.agents = true;
      if (r.object(obj))
        parse_agents(st, obj, path, s);
    } else if (key == "supervisor") {
      std::string_view text;
      if (r.object_text(text))
        s.supervisor_json = std::string{text};
    } else if (key == "workload") {
      if (r.object(obj))
        parse_workload(st, obj, path, s);
    } else if (key == "faults") {
      seen.faults = true;
      if (r.object(obj))
        parse_faults(st, obj, path, s, seen.faults_keys);
    } else if (key == "invariants") {
      if (r.object(obj))
        parse_invariants(st, obj, path, s);
    } else {
      return false;
    }
    return true;
  });
  if (st.failed())
    return;
  require(st, {}, seen.name, "name");
  require(st, {}, seen.duration_s, "duration_s");
  require(st, {}, seen.agents, "agents");
  require(st, {}, seen.faults, "faults");
}

std::string num(double x) {
  return json_read::double_text(x);
}

// Whether a partition of `d` ms may or may not end in a hang: the silence it
// causes lies between d and d + heartbeat_ms.
bool partition_ambiguous(uint32_t d, const agent_defaults& a) {
  uint64_t lo = a.hang_timeout_ms > a.heartbeat_ms
                  ? a.hang_timeout_ms - a.heartbeat_ms
                  : 0;
  uint64_t hi = uint64_t{a.hang_timeout_ms} + a.heartbeat_ms;
  return d >= lo && d < hi;
}

std::string partition_problem(uint32_t d, const agent_defaults& a) {
  auto n = [](uint64_t x) { return std::to_string(x); };
  uint64_t lo = a.hang_timeout_ms > a.heartbeat_ms
                  ? a.hang_timeout_ms - a.heartbeat_ms
                  : 0;
  return "a partition of " + n(d) + " ms may or may not end in a hang (hang_timeout_ms "
         + n(a.hang_timeout_ms) + ", heartbeat_ms " + n(a.heartbeat_ms)
         + "): use less than " + n(lo) + " ms to survive or at least "
         + n(uint64_t{a.hang_timeout_ms} + a.heartbeat_ms) + " ms to hang";
}

// Relations between keys, once every key has its final value. The first
// problem, or empty.
std::string cross_check(scenario& s, const root_seen& seen) {
  auto n = [](uint64_t x) { return std::to_string(x); };
  const auto& fs = seen.faults_keys;
  if (s.workspace_mb >= s.memory_mb)
    return "agents.workspace_mb: expected less than agents.memory_mb ("
           + n(s.memory_mb) + "; the workspace's pages count towards it), got "
           + n(s.workspace_mb);
  if (s.tools.empty())
    return "workload.tools: expected at least one tool";
  if (std::none_of(s.tools.begin(), s.tools.end(),
                   [](const auto& t) { return t.second > 0; }))
    return "workload.tools: expected at least one weight > 0, got all 0";

  // The supervisor overrides must be a valid config on their own (on the
  // defaults); the runner merges them the same way.
  auto cfg = parse_config(s.supervisor_json);
  if (!cfg) {
    const auto& msg = cfg.err().message;
    bool has_path = msg.rfind("malformed JSON", 0) != 0
                    && msg.rfind("expected a JSON object", 0) != 0;
    return (has_path ? "supervisor." : "supervisor: ") + msg;
  }
  const auto& agents = cfg->agents;

  for (std::size_t i = 0; i < s.schedule.size(); ++i) {
    auto& f = s.schedule[i];
    auto path = json_read::index_path("faults.schedule", i);
    if (f.at_s >= s.duration_s)
      return path + ".at_s: expected less than duration_s (" + num(s.duration_s)
             + "), got " + num(f.at_s);
    if (f.agent >= 0 && static_cast<uint32_t>(f.agent) >= s.agent_count)
      return path + ".agent: expected -1 (random) or an agent index below "
                    "agents.count ("
             + n(s.agent_count) + "), got " + std::to_string(f.agent);
    bool given = i < fs.duration_given.size() && fs.duration_given[i];
    if (given && !has_duration(f.kind))
      return path + ".duration_ms: " + std::string{to_string(f.kind)}
             + " takes no duration (only partition, slow_spawn, cpu_hog and "
               "governor_pressure do)";
    uint32_t d = has_duration(f.kind) ? (given ? f.duration_ms : s.fault_duration_ms) : 0;
    if (f.kind == fault_kind::partition && partition_ambiguous(d, agents))
      return given ? path + ".duration_ms: " + partition_problem(d, agents)
                   : path + ": " + partition_problem(d, agents)
                       + " (faults.default_duration_ms; give duration_ms)";
  }

  if (s.random_per_s > 0) {
    if (!fs.random_kinds)
      return "faults.random_kinds: missing (required when faults.random_per_s > 0)";
    if (std::none_of(s.random_kinds.begin(), s.random_kinds.end(),
                     [](const auto& k) { return k.second > 0; }))
      return "faults.random_kinds: expected at least one weight > 0";
    double expected = s.random_per_s * s.duration_s;
    if (s.random_count == 0 && expected > static_cast<double>(max_faults))
      return "faults.random_per_s: " + num(s.random_per_s) + " per second over "
             + num(s.duration_s) + " s would plan about " + num(std::round(expected))
             + " faults; at most 10000000 (set faults.random_count)";
    auto p = s.random_kinds.find(fault_kind::partition);
    if (p != s.random_kinds.end() && p->second > 0
        && partition_ambiguous(s.fault_duration_ms, agents))
      return "faults.default_duration_ms: " + partition_problem(s.fault_duration_ms, agents);
  } else {
    if (fs.random_kinds)
      return "faults.random_kinds: given, but faults.random_per_s is 0";
    if (fs.random_count)
      return "faults.random_count: given, but faults.random_per_s is 0";
    if (s.schedule.empty())
      return "faults: expected a non-empty schedule or random_per_s > 0, got neither";
  }

  // Hangs are found by the watchdog after hang_timeout_ms: a shorter
  // detection bound would fail every hang.
  bool hangs = std::any_of(s.schedule.begin(), s.schedule.end(), [](const auto& f) {
    return f.kind == fault_kind::hang || f.kind == fault_kind::partition;
  });
  for (auto k : {fault_kind::hang, fault_kind::partition}) {
    auto i = s.random_kinds.find(k);
    hangs = hangs || (s.random_per_s > 0 && i != s.random_kinds.end() && i->second > 0);
  }
  if (hangs && s.detect_within_ms <= agents.hang_timeout_ms)
    return "invariants.detect_within_ms: expected more than the supervisor's "
           "agents.hang_timeout_ms ("
           + n(agents.hang_timeout_ms) + ") with hang or partition faults, got "
           + n(s.detect_within_ms);
  if (s.recover_within_ms < s.detect_within_ms)
    return "invariants.recover_within_ms: expected at least "
           "invariants.detect_within_ms ("
           + n(s.detect_within_ms) + "), got " + n(s.recover_within_ms);
  return {};
}

} // namespace

std::string_view to_string(fault_kind k) noexcept {
  auto i = static_cast<std::size_t>(k);
  return i < kind_names.size() ? kind_names[i] : std::string_view{"unknown"};
}

std::optional<fault_kind> fault_kind_from(std::string_view name) noexcept {
  for (std::size_t i = 0; i < kind_names.size(); ++i)
    if (kind_names[i] == name)
      return static_cast<fault_kind>(i);
  return std::nullopt;
}

std::string fault_kind_list() {
  std::string out;
  for (auto name : kind_names) {
    if (!out.empty())
      out += ", ";
    out += name;
  }
  return out;
}

bool has_duration(fault_kind k) noexcept {
  return k == fault_kind::partition || k == fault_kind::slow_spawn
         || k == fault_kind::cpu_hog || k == fault_kind::governor_pressure;
}

std::vector<std::string> expected_reasons(fault_kind k, uint32_t duration_ms,
                                          uint32_t heartbeat_ms,
                                          uint32_t hang_timeout_ms) {
  switch (k) {
    case fault_kind::kill: return {"crashed"};
    case fault_kind::crash: return {"exited", "crashed"}; // exit(n) or abort()
    case fault_kind::hang: return {"hung"};
    case fault_kind::oom: return {"oom"};
    case fault_kind::partition:
      if (uint64_t{duration_ms} >= uint64_t{hang_timeout_ms} + heartbeat_ms)
        return {"hung"};
      return {};
    case fault_kind::spawn_failure: return {"spawn_failed"};
    // The trigger is a SIGKILL: the delay shows in the recovery time.
    case fault_kind::slow_spawn: return {"crashed"};
    case fault_kind::cpu_hog:
    case fault_kind::disk_fill:
    case fault_kind::fork_bomb:
    case fault_kind::governor_pressure: return {};
  }
  return {};
}

result<scenario> parse_scenario(std::string_view json, std::string_view origin) {
  auto failure = [&](std::string msg) {
    if (!origin.empty())
      msg = std::string{origin} + ": " + msg;
    return error{std::move(msg), 0};
  };
  scenario s;
  root_seen seen;
  auto msg = json_read::parse_root_object(
    json, " (a scenario needs at least name, duration_s, agents and faults)",
    [&](parse_state& st, od::object& root) { parse_root(st, root, s, seen); });
  if (!msg.empty())
    return failure(std::move(msg));
  if (auto why = cross_check(s, seen); !why.empty())
    return failure(std::move(why));
  return s;
}

result<scenario> load_scenario(const std::string& path) {
  auto text = read_small_file(path, max_file_bytes, "scenario file");
  if (!text)
    return std::move(text).err();
  return parse_scenario(*text, path);
}

} // namespace agentvisor::chaos

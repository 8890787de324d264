// agentvisor's configuration: JSON (simdjson On-Demand) into typed structs.
//
// One `describe` function per struct lists its keys with their bounds; the
// parser and the JSON writer both walk it, so the accepted keys and the
// printed keys cannot drift apart. docs/configuration.md mirrors the bounds.

#include "agentvisor/config.hpp"
#include "agentvisor/json_read.hpp"

#include <simdjson.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstddef>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace agentvisor {
namespace {

namespace od = simdjson::ondemand;
// The shared pieces of our JSON readers (also used by chaos scenarios).
using json_read::all_digits;
using json_read::append_double;
using json_read::append_quoted;
using json_read::parse_state;
using json_read::quote;
using json_read::sanitize;
using json_read::shorten;
using json_read::string_check;
using json_read::string_problem;
using json_read::uint_range;
using json_read::value_reader;

// --- Enum names: the JSON spelling and to_string are the same table. ---

constexpr std::array<std::string_view, 3> backend_names{
  "sandbox", "qemu", "firecracker"};
constexpr std::array<std::string_view, 3> accel_names{"auto", "kvm", "tcg"};
constexpr std::array<std::string_view, 3> machine_names{"auto", "microvm", "q35"};
constexpr std::array<std::string_view, 4> strategy_names{
  "one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one"};
constexpr std::array<std::string_view, 3> restart_names{
  "permanent", "transient", "temporary"};
constexpr std::array<std::string_view, 6> level_names{
  "trace", "debug", "info", "warn", "error", "off"};
constexpr std::array<std::string_view, 2> format_names{"plain", "json"};

// A new enumerator without a name would silently map to "unknown".
static_assert(static_cast<size_t>(backend_kind::firecracker) + 1
              == backend_names.size());
static_assert(static_cast<size_t>(qemu_accel::tcg) + 1 == accel_names.size());
static_assert(static_cast<size_t>(qemu_machine::q35) + 1 == machine_names.size());
static_assert(static_cast<size_t>(restart_strategy::simple_one_for_one) + 1
              == strategy_names.size());
static_assert(static_cast<size_t>(restart_type::temporary) + 1
              == restart_names.size());
static_assert(static_cast<size_t>(log_level::off) + 1 == level_names.size());
static_assert(static_cast<size_t>(log_format::json) + 1
              == format_names.size());

template <class E>
struct enum_names;
template <>
struct enum_names<backend_kind> {
  static constexpr std::span<const std::string_view> value = backend_names;
};
template <>
struct enum_names<qemu_accel> {
  static constexpr std::span<const std::string_view> value = accel_names;
};
template <>
struct enum_names<qemu_machine> {
  static constexpr std::span<const std::string_view> value = machine_names;
};
template <>
struct enum_names<restart_strategy> {
  static constexpr std::span<const std::string_view> value = strategy_names;
};
template <>
struct enum_names<restart_type> {
  static constexpr std::span<const std::string_view> value = restart_names;
};
template <>
struct enum_names<log_level> {
  static constexpr std::span<const std::string_view> value = level_names;
};
template <>
struct enum_names<log_format> {
  static constexpr std::span<const std::string_view> value = format_names;
};

template <class E>
std::string_view enum_name(E x) {
  auto names = enum_names<E>::value;
  auto i = static_cast<size_t>(x);
  // Out-of-range values can only come from a cast; never index past the end.
  return i < names.size() ? names[i] : std::string_view{"unknown"};
}

// --- Bounds (documented in docs/configuration.md). ---

// 2^30 MiB = 1 PiB: far beyond any machine, yet memory_mb << 20 cannot
// overflow a uint64 when converted to bytes.
constexpr uint64_t max_memory_mb = uint64_t{1} << 30;
// PID_MAX_LIMIT on 64-bit Linux; pids.max above it means nothing.
constexpr uint64_t pid_max_limit = 4194304;
constexpr uint64_t max_cpus = 8192; // the largest NR_CPUS distributions use
constexpr uint64_t hour_ms = 3'600'000;
constexpr uint64_t day_ms = 86'400'000;
constexpr size_t max_path_bytes = 4095; // PATH_MAX minus the NUL
constexpr size_t max_instance_chars = 64;
constexpr size_t max_host_chars = 253; // the longest DNS name
// A config file larger than this is a mistake (or /dev/zero).
constexpr size_t max_file_bytes = 16 << 20;

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

// --- String checks. ---

std::optional<string_problem> check_instance(std::string_view s) {
  auto ok_char = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c)
           || c == '_' || c == '-';
  };
  // It becomes a cgroup directory name: no '/', no "..", nothing odd.
  if (s.empty() || s.size() > max_instance_chars
      || !std::all_of(s.begin(), s.end(), ok_char))
    return string_problem{"1 to 64 characters from [A-Za-z0-9_-]", {}};
  return std::nullopt;
}

std::optional<string_problem> path_problem(std::string_view s,
                                           std::string expected) {
  if (s.empty() || s.front() != '/')
    return string_problem{std::move(expected), {}};
  if (s.find('\0') != std::string_view::npos)
    return string_problem{std::move(expected), "contains a NUL byte"};
  if (s.size() > max_path_bytes)
    return string_problem{std::move(expected), "longer than 4095 bytes"};
  return std::nullopt;
}

std::optional<string_problem> check_absolute_path(std::string_view s) {
  return path_problem(s, "an absolute path");
}

std::optional<string_problem> check_optional_path(std::string_view s) {
  if (s.empty())
    return std::nullopt;
  return path_problem(s, "an empty string or an absolute path");
}

// A program: a name looked up on PATH (no '/'), or an absolute path.
std::optional<string_problem> check_program(std::string_view s) {
  std::string expected = "a program name or an absolute path";
  if (s.empty())
    return string_problem{std::move(expected), {}};
  if (s.find('/') != std::string_view::npos)
    return path_problem(s, std::move(expected));
  if (s.find('\0') != std::string_view::npos)
    return string_problem{std::move(expected), "contains a NUL byte"};
  if (s.size() > 255) // NAME_MAX
    return string_problem{std::move(expected), "a name longer than 255 bytes"};
  return std::nullopt;
}

std::optional<string_problem> check_optional_program(std::string_view s) {
  if (s.empty())
    return std::nullopt;
  if (auto p = check_program(s)) {
    p->expected = "an empty string, a program name or an absolute path";
    return p;
  }
  return std::nullopt;
}

// One offending byte for "invalid ..." messages: 'x' or, if unprintable,
// its hex value.
std::string char_text(char c) {
  auto u = static_cast<unsigned char>(c);
  if (u >= 0x21 && u < 0x7f)
    return std::string{"character '"} + c + "'";
  static constexpr char hex[] = "0123456789abcdef";
  return std::string{"byte 0x"} + hex[u >> 4] + hex[u & 0xf];
}

// Splits HOST:PORT; returns why it is not one (empty on success).
std::string split_host_port(std::string_view text, host_port& out) {
  if (text.empty())
    return "expected HOST:PORT";
  std::string_view host;
  std::string_view port;
  if (text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos)
      return "missing \"]\" after the IPv6 address";
    host = text.substr(1, close - 1);
    auto rest = text.substr(close + 1);
    if (rest.empty() || rest.front() != ':')
      return "expected \":PORT\" after \"]\"";
    port = rest.substr(1);
    if (host.empty())
      return "empty host";
    // Hex groups, ':' and an embedded IPv4 tail; then an optional %zone.
    auto zone = host.find('%');
    auto addr = host.substr(0, zone);
    for (char c : addr) {
      bool ok = is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
                || c == ':' || c == '.';
      if (!ok)
        return "invalid " + char_text(c) + " in IPv6 address";
    }
    if (addr.find(':') == std::string_view::npos)
      return "brackets must hold an IPv6 address";
    if (zone != std::string_view::npos) {
      auto name = host.substr(zone + 1);
      if (name.empty())
        return "empty IPv6 zone after '%'";
      for (char c : name) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
                  || is_digit(c) || c == '_' || c == '-' || c == '.';
        if (!ok)
          return "invalid " + char_text(c) + " in IPv6 zone";
      }
    }
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos)
      return "missing \":PORT\"";
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.empty())
      return "empty host";
    if (host.find(':') != std::string_view::npos)
      return "an IPv6 address must be in brackets, e.g. [::1]:7878";
    if (host.size() > max_host_chars)
      return "host longer than 253 characters";
    for (char c : host) {
      bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
                || is_digit(c) || c == '.' || c == '-' || c == '_';
      if (!ok)
        return "invalid " + char_text(c) + " in host";
    }
  }
  if (port.empty())
    return "missing port after \":\"";
  if (!all_digits(port))
    return "port " + quote(port) + " is not a number";
  // Port 0 would mean "any free port": useless for an API clients must find.
  unsigned value = 0;
  if (port.size() <= 5)
    std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.size() > 5 || value == 0 || value > 65535)
    return "port " + sanitize(shorten(port)) + " is not in 1..65535";
  out.host = std::string{host};
  out.port = static_cast<uint16_t>(value);
  return {};
}

std::optional<string_problem> check_listen(std::string_view s) {
  host_port ignored;
  auto why = split_host_port(s, ignored);
  if (why.empty())
    return std::nullopt;
  return string_problem{"HOST:PORT", std::move(why)};
}

// --- The key tables. ---

template <class V>
void describe(host_config& c, V& v) {
  v.uint("memory_mb", c.memory_mb, {64, max_memory_mb, true});
  v.uint("cpus", c.cpus, {1, max_cpus, true});
  v.uint("max_agents", c.max_agents, {1, 100'000});
  v.uint("pids", c.pids, {64, pid_max_limit, true});
  v.uint("reserve_mb", c.reserve_mb, {0, max_memory_mb});
  v.number("pressure_high_water", c.pressure_high_water, 0.1, 1.0);
  v.uint("min_available_mb", c.min_available_mb, {0, max_memory_mb});
  v.uint("pressure_check_ms", c.pressure_check_ms, {10, hour_ms});
  v.uint("max_queued", c.max_queued, {0, 100'000});
  v.uint("evict_timeout_ms", c.evict_timeout_ms, {100, hour_ms});
}

template <class V>
void describe(agent_defaults& c, V& v) {
  v.uint("memory_mb", c.memory_mb, {16, max_memory_mb});
  v.uint("pids", c.pids, {8, pid_max_limit});
  v.uint("cpu_weight", c.cpu_weight, {1, 10'000});
  v.uint("workspace_mb", c.workspace_mb, {1, max_memory_mb});
  v.uint("heartbeat_ms", c.heartbeat_ms, {10, hour_ms});
  v.uint("hang_timeout_ms", c.hang_timeout_ms, {1, day_ms});
  v.uint("max_calls_in_flight", c.max_calls_in_flight, {1, 65'536});
  v.uint("ready_timeout_ms", c.ready_timeout_ms, {100, hour_ms});
  v.boolean("allow_faults", c.allow_faults);
}

template <class V>
void describe(pool_config& c, V& v) {
  v.uint("warm", c.warm, {0, 100'000});
}

template <class V>
void describe(supervision_config& c, V& v) {
  v.enumeration("strategy", c.strategy);
  v.enumeration("restart", c.restart);
  v.uint("max_restarts", c.max_restarts,
         {0, std::numeric_limits<uint32_t>::max()});
  v.uint("period_ms", c.period_ms, {1, day_ms});
  v.uint("min_backoff_ms", c.min_backoff_ms, {0, hour_ms});
  v.uint("max_backoff_ms", c.max_backoff_ms, {0, hour_ms});
  v.number("random_factor", c.random_factor, 0.0, 1.0);
  v.uint("shutdown_timeout_ms", c.shutdown_timeout_ms, {0, hour_ms});
}

template <class V>
void describe(api_config& c, V& v) {
  v.string("listen", c.listen, check_listen);
  v.string("token_file", c.token_file, check_optional_path);
  v.uint("max_body_bytes", c.max_body_bytes, {1024, 64 << 20});
}

template <class V>
void describe(metrics_config& c, V& v) {
  v.boolean("enabled", c.enabled);
  v.boolean("require_token", c.require_token);
  v.boolean("per_agent", c.per_agent);
  v.uint("max_agent_series", c.max_agent_series, {1, 1'000'000});
}

template <class V>
void describe(log_config& c, V& v) {
  v.enumeration("level", c.level);
  v.enumeration("format", c.format);
}

// qemu's limit for x86 machines without an IOMMU's interrupt remapping.
constexpr uint64_t max_qemu_vcpus = 255;
// Firecracker's limit (vcpu_count in its API).
constexpr uint64_t max_firecracker_vcpus = 32;

template <class V>
void describe(qemu_config& c, V& v) {
  v.string("binary", c.binary, check_program);
  v.string("kernel", c.kernel, check_optional_path);
  v.string("initrd", c.initrd, check_optional_path);
  v.enumeration("accel", c.accel);
  v.enumeration("machine", c.machine);
  v.uint("vcpus", c.vcpus, {1, max_qemu_vcpus});
  v.uint("boot_timeout_ms", c.boot_timeout_ms, {100, hour_ms});
  v.boolean("snapshots", c.snapshots);
}

template <class V>
void describe(firecracker_config& c, V& v) {
  v.string("binary", c.binary, check_program);
  v.string("jailer", c.jailer, check_optional_program);
  v.string("kernel", c.kernel, check_optional_path);
  v.string("initrd", c.initrd, check_optional_path);
  v.uint("vcpus", c.vcpus, {1, max_firecracker_vcpus});
  v.uint("boot_timeout_ms", c.boot_timeout_ms, {100, hour_ms});
  v.boolean("snapshots", c.snapshots);
}

template <class V>
void describe(config& c, V& v) {
  v.string("instance", c.instance, check_instance);
  v.string("state_dir", c.state_dir, check_absolute_path);
  v.boolean("keep_workspaces", c.keep_workspaces);
  v.string("guest_binary", c.guest_binary, check_optional_path);
  v.enumeration("backend", c.backend);
  v.enumeration_set("backends", c.backends);
  v.object("host", c.host);
  v.object("agents", c.agents);
  v.object("pool", c.pool);
  v.object("supervision", c.supervision);
  v.object("api", c.api);
  v.object("metrics", c.metrics);
  v.object("log", c.log);
  v.object("qemu", c.qemu);
  v.object("firecracker", c.firecracker);
}

// --- Parsing. ---

template <class S>
void parse_members(parse_state& st, json_read::od::object& obj,
                   const std::string& prefix, S& out);

// Visits one struct's keys and parses the value of the one named `key`; the
// value checks themselves are json_read's.
class field_parser {
public:
  field_parser(parse_state& st, std::string_view key, std::string path,
               od::value& val)
    : st_(st), key_(key), reader_(st, std::move(path), val) {
  }

  bool found() const {
    return found_;
  }

  template <class T>
  void uint(std::string_view name, T& out, uint_range r) {
    if (!claim(name))
      return;
    uint64_t x = 0;
    if (reader_.uint(x, r, std::numeric_limits<T>::max()))
      out = static_cast<T>(x);
  }

  void number(std::string_view name, double& out, double lo, double hi) {
    if (claim(name))
      reader_.number(out, {lo, hi});
  }

  void boolean(std::string_view name, bool& out) {
    if (claim(name))
      reader_.boolean(out);
  }

  template <class E>
  void enumeration(std::string_view name, E& out) {
    if (!claim(name))
      return;
    size_t i = 0;
    if (reader_.enumeration(i, enum_names<E>::value))
      out = static_cast<E>(i);
  }

  void string(std::string_view name, std::string& out, string_check check) {
    if (claim(name))
      reader_.string(out, check);
  }

  // A non-empty array of distinct enum names.
  template <class E>
  void enumeration_set(std::string_view name, std::vector<E>& out) {
    if (!claim(name))
      return;
    od::array arr;
    if (!reader_.array(arr))
      return;
    std::vector<E> xs;
    json_read::for_each_element(
      st_, arr, reader_.path(), [&](size_t, const std::string& path, od::value& val) {
        value_reader r{st_, path, val};
        size_t i = 0;
        if (!r.enumeration(i, enum_names<E>::value))
          return;
        auto x = static_cast<E>(i);
        if (std::find(xs.begin(), xs.end(), x) != xs.end())
          r.fail(quote(enum_name(x)) + " is listed twice");
        else
          xs.push_back(x);
      });
    if (st_.failed())
      return;
    if (xs.empty()) {
      std::string names;
      for (auto n : enum_names<E>::value)
        names += (names.empty() ? "" : ", ") + std::string{n};
      reader_.fail("expected at least one of " + names + ", got []");
      return;
    }
    out = std::move(xs);
  }

  template <class S>
  void object(std::string_view name, S& out) {
    if (!claim(name))
      return;
    od::object obj;
    if (reader_.object(obj))
      parse_members(st_, obj, reader_.path(), out);
  }

private:
  bool claim(std::string_view name) {
    if (found_ || name != key_)
      return false;
    found_ = true;
    return true;
  }

  parse_state& st_;
  std::string_view key_;
  value_reader reader_;
  bool found_ = false;
};

template <class S>
void parse_members(parse_state& st, od::object& obj, const std::string& prefix,
                   S& out) {
  json_read::for_each_member(
    st, obj, prefix,
    [&](std::string_view key, const std::string& path, od::value& val) {
      field_parser parser{st, key, path, val};
      describe(out, parser);
      return parser.found();
    });
}

// Relations between keys, checked once every key has its final value.
std::string cross_check(const config& c) {
  auto n = [](uint64_t x) { return std::to_string(x); };
  if (std::find(c.backends.begin(), c.backends.end(), c.backend) == c.backends.end()) {
    std::string listed;
    for (auto b : c.backends)
      listed += (listed.empty() ? "" : ", ") + quote(enum_name(b));
    return "backends: expected to contain backend (" + quote(enum_name(c.backend)) + "), got ["
           + listed + "]";
  }
  const auto& a = c.agents;
  if (a.hang_timeout_ms <= a.heartbeat_ms)
    return "agents.hang_timeout_ms: expected more than agents.heartbeat_ms ("
           + n(a.heartbeat_ms) + "), got " + n(a.hang_timeout_ms);
  const auto& s = c.supervision;
  if (s.max_backoff_ms < s.min_backoff_ms)
    return "supervision.max_backoff_ms: expected at least "
           "supervision.min_backoff_ms ("
           + n(s.min_backoff_ms) + "), got " + n(s.max_backoff_ms);
  if (c.pool.warm > c.host.max_agents)
    return "pool.warm: expected at most host.max_agents ("
           + n(c.host.max_agents) + "), got " + n(c.pool.warm);
  if (c.host.memory_mb != 0 && a.memory_mb > c.host.memory_mb)
    return "agents.memory_mb: expected at most host.memory_mb ("
           + n(c.host.memory_mb) + "), got " + n(a.memory_mb);
  if (c.host.pids != 0 && a.pids > c.host.pids)
    return "agents.pids: expected at most host.pids (" + n(c.host.pids)
           + "), got " + n(a.pids);
  return {};
}

// --- Writing. ---

class json_writer {
public:
  std::string take() && {
    return std::move(out_);
  }

  void open() {
    out_ += '{';
    ++depth_;
    first_ = true;
  }

  void close() {
    --depth_;
    out_ += '\n';
    indent();
    out_ += '}';
    first_ = false;
  }

  template <class T>
  void uint(std::string_view name, T& x, uint_range) {
    key(name);
    out_ += std::to_string(x);
  }

  void number(std::string_view name, double& x, double, double) {
    key(name);
    append_double(out_, x);
  }

  void boolean(std::string_view name, bool& x) {
    key(name);
    out_ += x ? "true" : "false";
  }

  template <class E>
  void enumeration(std::string_view name, E& x) {
    key(name);
    append_quoted(out_, enum_name(x));
  }

  void string(std::string_view name, std::string& x, string_check) {
    key(name);
    append_quoted(out_, x);
  }

  template <class E>
  void enumeration_set(std::string_view name, std::vector<E>& xs) {
    key(name);
    out_ += '[';
    for (size_t i = 0; i < xs.size(); ++i) {
      if (i != 0)
        out_ += ", ";
      append_quoted(out_, enum_name(xs[i]));
    }
    out_ += ']';
  }

  template <class S>
  void object(std::string_view name, S& x) {
    key(name);
    open();
    describe(x, *this);
    close();
  }

private:
  void indent() {
    out_.append(2 * static_cast<size_t>(depth_), ' ');
  }

  void key(std::string_view name) {
    out_ += first_ ? "\n" : ",\n";
    first_ = false;
    indent();
    append_quoted(out_, name);
    out_ += ": ";
  }

  std::string out_;
  int depth_ = 0;
  bool first_ = true;
};

} // namespace

std::string_view to_string(backend_kind x) {
  return enum_name(x);
}

std::string_view to_string(qemu_accel x) {
  return enum_name(x);
}

std::string_view to_string(qemu_machine x) {
  return enum_name(x);
}

std::optional<backend_kind> backend_from_string(std::string_view name) {
  for (size_t i = 0; i < backend_names.size(); ++i)
    if (backend_names[i] == name)
      return static_cast<backend_kind>(i);
  return std::nullopt;
}

std::string_view to_string(restart_strategy x) {
  return enum_name(x);
}

std::string_view to_string(restart_type x) {
  return enum_name(x);
}

std::string_view to_string(log_level x) {
  return enum_name(x);
}

std::string_view to_string(log_format x) {
  return enum_name(x);
}

result<config> parse_config(std::string_view json, std::string_view origin) {
  auto failure = [&](std::string msg) {
    if (!origin.empty())
      msg = std::string{origin} + ": " + msg;
    return error{std::move(msg), 0};
  };
  config cfg;
  // Empty after the parse: the file has no `backends`, which then means
  // just `backend` (whatever the file set it to).
  cfg.backends.clear();
  auto msg = json_read::parse_root_object(
    json, " (write {} for all defaults)",
    [&](parse_state& st, od::object& root) {
      parse_members(st, root, {}, cfg);
    });
  if (!msg.empty())
    return failure(std::move(msg));
  if (cfg.backends.empty())
    cfg.backends.push_back(cfg.backend);
  if (auto why = cross_check(cfg); !why.empty())
    return failure(std::move(why));
  return cfg;
}

result<config> load_config(const std::string& path) {
  auto what = "cannot read config file " + path;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return error::from_errno(std::move(what), errno);
  std::string text;
  char buf[65536];
  int err = 0;
  for (;;) {
    auto n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      err = errno;
      break;
    }
    if (n == 0)
      break;
    text.append(buf, static_cast<size_t>(n));
    // Bounded so that a wrong path such as /dev/zero cannot eat memory.
    if (text.size() > max_file_bytes) {
      err = EFBIG;
      break;
    }
  }
  ::close(fd);
  if (err != 0)
    return error::from_errno(std::move(what), err);
  return parse_config(text, path);
}

std::string default_config_json() {
  return to_json(config{});
}

std::string to_json(const config& cfg) {
  // describe() takes mutable references (it also fills structs); a copy
  // keeps this function honest about not touching `cfg`.
  config copy = cfg;
  json_writer w;
  w.open();
  describe(copy, w);
  w.close();
  auto out = std::move(w).take();
  out += '\n';
  return out;
}

result<host_port> parse_host_port(std::string_view text) {
  host_port out;
  auto why = split_host_port(text, out);
  if (!why.empty())
    return error{"invalid address " + quote(text) + ": " + why, 0};
  return out;
}

} // namespace agentvisor

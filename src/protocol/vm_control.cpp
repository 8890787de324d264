#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <variant>
#pragma GCC diagnostic pop

#include "agentvisor/vm_control.hpp"

#include "agentvisor/json.hpp"

#include "reader.hpp"

#include <charconv>
#include <cstring>

namespace agentvisor::vm {

namespace {

json::writer begin(std::string& out, std::string_view type) {
  json::writer w(out);
  w.begin_object().field("type", type);
  return w;
}

void finish(json::writer& w) {
  w.end_object();
  w.str() += '\n';
}

struct event_encoder {
  std::string& out;
  void operator()(const booted& x) {
    auto w = begin(out, "booted");
    w.field("kernel", x.kernel).field("memory_bytes", x.memory_bytes).field("boot_ms", x.boot_ms);
    finish(w);
  }
  void operator()(const oom& x) {
    auto w = begin(out, "oom");
    w.field("limit_bytes", x.limit_bytes).field("peak_bytes", x.peak_bytes);
    finish(w);
  }
  void operator()(const usage& x) {
    auto w = begin(out, "usage");
    w.field("memory_bytes", x.memory_bytes)
      .field("memory_peak_bytes", x.memory_peak_bytes)
      .field("pids", x.pids)
      .field("cpu_usage_ns", x.cpu_usage_ns)
      .field("oom_kills", x.oom_kills);
    finish(w);
  }
  void operator()(const exited& x) {
    auto w = begin(out, "exited");
    w.field("code", x.code).field("signal", x.signal).field("oom", x.oom)
      .field("peak_bytes", x.peak_bytes);
    finish(w);
  }
  void operator()(const init_failed& x) {
    auto w = begin(out, "init_failed");
    // Cut so the line stays under max_control_line_bytes.
    std::string_view m = x.message;
    w.field("message", m.substr(0, json::escaped_prefix(m, 2048)));
    finish(w);
  }
  void operator()(const parked&) {
    auto w = begin(out, "parked");
    finish(w);
  }
};

struct request_encoder {
  std::string& out;
  void operator()(const start& x) {
    auto w = begin(out, "start");
    w.key("env").begin_array();
    for (const auto& e : x.env) w.value(e);
    w.end_array();
    if (!x.params.empty()) w.field("params", x.params);
    finish(w);
  }
  void operator()(const stop& x) {
    auto w = begin(out, "stop");
    w.field("grace_ms", x.grace_ms);
    finish(w);
  }
  void operator()(const signal& x) {
    auto w = begin(out, "signal");
    w.field("signum", x.signum);
    finish(w);
  }
};

using protocol_detail::reader;

/// Parses `line` into `parser` and returns the object and its "type".
result<std::pair<simdjson::dom::object, std::string_view>>
parse(simdjson::dom::parser& parser, std::string& buf, std::string_view line) {
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  if (line.size() > max_control_line_bytes)
    return error{"control line is longer than " + std::to_string(max_control_line_bytes) + " bytes"};
  buf.assign(line);
  buf.resize(line.size() + simdjson::SIMDJSON_PADDING);
  simdjson::dom::element doc;
  if (auto err = parser.parse(buf.data(), line.size(), false).get(doc))
    return error{std::string("control line is not valid JSON: ") + simdjson::error_message(err)};
  simdjson::dom::object obj;
  if (doc.get_object().get(obj)) return error{"control line is not a JSON object"};
  simdjson::dom::element t;
  std::string_view type;
  if (obj.at_key("type").get(t) || t.get_string().get(type))
    return error{"control line has no string \"type\""};
  return std::pair{obj, type};
}

error unknown(std::string_view type) {
  return error{"unknown control message type \"" + std::string(type) + "\""};
}

} // namespace

void encode(const guest_event& x, std::string& out) {
  std::visit(event_encoder{out}, x);
}

void encode(const host_request& x, std::string& out) {
  std::visit(request_encoder{out}, x);
}

result<guest_event> decode_guest_event(std::string_view line) {
  simdjson::dom::parser parser;
  std::string buf;
  auto parsed = parse(parser, buf, line);
  if (!parsed) return std::move(parsed).err();
  auto [obj, type] = *parsed;
  reader r(obj, type);
  if (type == "booted") {
    booted b;
    AV_TRY(r.str("kernel", b.kernel, true));
    AV_TRY(r.u64("memory_bytes", b.memory_bytes, true));
    AV_TRY(r.u64("boot_ms", b.boot_ms, true));
    return guest_event{std::move(b)};
  }
  if (type == "oom") {
    oom o;
    AV_TRY(r.u64("limit_bytes", o.limit_bytes, true));
    AV_TRY(r.u64("peak_bytes", o.peak_bytes, true));
    return guest_event{o};
  }
  if (type == "usage") {
    usage u;
    AV_TRY(r.u64("memory_bytes", u.memory_bytes, true));
    AV_TRY(r.u64("memory_peak_bytes", u.memory_peak_bytes, true));
    AV_TRY(r.u64("pids", u.pids, true));
    AV_TRY(r.u64("cpu_usage_ns", u.cpu_usage_ns, true));
    AV_TRY(r.u64("oom_kills", u.oom_kills, true));
    return guest_event{u};
  }
  if (type == "exited") {
    exited e;
    AV_TRY(r.i32("code", e.code, true));
    AV_TRY(r.i32("signal", e.signal, true));
    AV_TRY(r.boolean("oom", e.oom, true));
    AV_TRY(r.u64("peak_bytes", e.peak_bytes, false));
    return guest_event{e};
  }
  if (type == "init_failed") {
    init_failed f;
    AV_TRY(r.str("message", f.message, true));
    return guest_event{std::move(f)};
  }
  if (type == "parked") return guest_event{parked{}};
  return unknown(type);
}

result<host_request> decode_host_request(std::string_view line) {
  simdjson::dom::parser parser;
  std::string buf;
  auto parsed = parse(parser, buf, line);
  if (!parsed) return std::move(parsed).err();
  auto [obj, type] = *parsed;
  reader r(obj, type);
  if (type == "start") {
    start s;
    simdjson::dom::element env;
    simdjson::dom::array arr;
    if (obj.at_key("env").get(env) || env.get_array().get(arr))
      return error{"start.env: expected an array of strings"};
    for (auto e : arr) {
      std::string_view v;
      if (e.get_string().get(v)) return error{"start.env: expected an array of strings"};
      if (v.find('=') == std::string_view::npos)
        return error{"start.env: \"" + std::string(v.substr(0, 64)) + "\" is not KEY=VALUE"};
      s.env.emplace_back(v);
    }
    AV_TRY(r.str("params", s.params, false));
    if (!s.params.empty()) {
      // Checked here, so that a bad one is refused where it is read.
      auto p = parse_cmdline(s.params);
      if (!p) return error{"start.params: " + p.err().message};
      if (p->park) return error{"start.params: agentvisor.park in an agent's params"};
    }
    return host_request{std::move(s)};
  }
  if (type == "stop") {
    stop s;
    AV_TRY(r.u32("grace_ms", s.grace_ms, false));
    return host_request{s};
  }
  if (type == "signal") {
    signal s;
    AV_TRY(r.i32("signum", s.signum, true));
    if (s.signum <= 0 || s.signum >= 65) return error{"signal.signum: not a signal number"};
    return host_request{s};
  }
  return unknown(type);
}

// --- kernel command line -------------------------------------------------------

namespace {

template <class T>
std::optional<error> number(std::string_view key, std::string_view v, T& out) {
  auto r = std::from_chars(v.data(), v.data() + v.size(), out);
  if (r.ec != std::errc{} || r.ptr != v.data() + v.size())
    return error{"kernel command line: agentvisor." + std::string(key) +
                 ": expected a number, got \"" + std::string(v) + "\""};
  return std::nullopt;
}

} // namespace

std::string to_cmdline(const boot_params& p) {
  std::string s;
  s += " agentvisor.transport=" + p.transport;
  s += " agentvisor.heartbeat_ms=" + std::to_string(p.heartbeat_ms);
  s += " agentvisor.allow_faults=" + std::string(p.allow_faults ? "1" : "0");
  s += " agentvisor.pids=" + std::to_string(p.pids);
  s += " agentvisor.memory_bytes=" + std::to_string(p.memory_bytes);
  if (!p.workspace_device.empty()) s += " agentvisor.workspace_device=" + p.workspace_device;
  s += " agentvisor.workspace_bytes=" + std::to_string(p.workspace_bytes);
  if (!p.agent_id.empty()) s += " agentvisor.id=" + p.agent_id;
  if (p.park) s += " agentvisor.park=1";
  return s;
}

result<boot_params> parse_cmdline(std::string_view cmdline) {
  boot_params p;
  p.workspace_device.clear();
  while (!cmdline.empty()) {
    auto start = cmdline.find_first_not_of(" \t\n");
    if (start == std::string_view::npos) break;
    cmdline.remove_prefix(start);
    auto end = cmdline.find_first_of(" \t\n");
    auto word = cmdline.substr(0, end);
    cmdline.remove_prefix(end == std::string_view::npos ? cmdline.size() : end);
    constexpr std::string_view prefix = "agentvisor.";
    if (!word.starts_with(prefix)) continue;
    word.remove_prefix(prefix.size());
    auto eq = word.find('=');
    auto key = word.substr(0, eq);
    auto value = eq == std::string_view::npos ? std::string_view{} : word.substr(eq + 1);
    if (key == "transport") {
      if (value != "virtio-serial" && value != "vsock")
        return error{"kernel command line: agentvisor.transport: \"" + std::string(value) +
                     "\" is neither virtio-serial nor vsock"};
      p.transport = value;
    } else if (key == "heartbeat_ms") {
      if (auto e = number(key, value, p.heartbeat_ms)) return *e;
      if (p.heartbeat_ms == 0) return error{"kernel command line: agentvisor.heartbeat_ms: must be >= 1"};
    } else if (key == "allow_faults") {
      p.allow_faults = value == "1";
    } else if (key == "pids") {
      if (auto e = number(key, value, p.pids)) return *e;
    } else if (key == "memory_bytes") {
      if (auto e = number(key, value, p.memory_bytes)) return *e;
    } else if (key == "workspace_device") {
      p.workspace_device = value;
    } else if (key == "workspace_bytes") {
      if (auto e = number(key, value, p.workspace_bytes)) return *e;
    } else if (key == "id") {
      p.agent_id = value;
    } else if (key == "park") {
      p.park = value == "1";
    } else {
      return error{"kernel command line: unknown key agentvisor." + std::string(key)};
    }
  }
  return p;
}

} // namespace agentvisor::vm

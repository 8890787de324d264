// GCC 12 reports -Wmaybe-uninitialized inside libstdc++'s <variant> when a
// decoded message moves into its result: the alternatives not held "may be
// uninitialized" (a false positive that comes and goes with the optimizer and
// sanitizers). The pragma covers the lines of the headers only; our code
// below is checked as usual.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <variant>
#pragma GCC diagnostic pop

#include "agentvisor/guest_protocol.hpp"

#include "agentvisor/json.hpp"

#include "reader.hpp"

#include <simdjson.h>

#include <array>
#include <cstring>
#include <limits>

namespace agentvisor::guest {

namespace {

constexpr std::array<std::string_view, 9> errc_names = {
  "invalid_args", "path_escape", "not_found", "io_error", "too_large",
  "timeout", "unknown_tool", "exec_failed", "faults_disabled",
};

constexpr std::array<std::string_view, 7> fault_names = {
  "exit", "abort", "oom", "cpu_hog", "disk_fill", "fork_bomb", "garbage",
};

constexpr std::array<std::string_view, 4> garbage_names = {
  "malformed", "oversized", "unknown_type", "orphan_result",
};

} // namespace

std::string_view to_string(tool_errc x) noexcept {
  return errc_names[static_cast<std::size_t>(x)];
}

std::optional<tool_errc> tool_errc_from_string(std::string_view name) noexcept {
  for (std::size_t i = 0; i < errc_names.size(); ++i)
    if (errc_names[i] == name) return static_cast<tool_errc>(i);
  return std::nullopt;
}

std::string_view to_string(fault_kind x) noexcept {
  return fault_names[static_cast<std::size_t>(x)];
}

std::optional<fault_kind> fault_kind_from_string(std::string_view name) noexcept {
  for (std::size_t i = 0; i < fault_names.size(); ++i)
    if (fault_names[i] == name) return static_cast<fault_kind>(i);
  return std::nullopt;
}

std::string_view to_string(garbage_kind x) noexcept {
  return garbage_names[static_cast<std::size_t>(x)];
}

std::optional<garbage_kind> garbage_kind_from_string(std::string_view name) noexcept {
  for (std::size_t i = 0; i < garbage_names.size(); ++i)
    if (garbage_names[i] == name) return static_cast<garbage_kind>(i);
  return std::nullopt;
}

// --- encoding -----------------------------------------------------------------

namespace {

/// Starts `{"type":"<type>"` and returns the writer for the rest.
json::writer begin(std::string& out, std::string_view type) {
  json::writer w(out);
  w.begin_object().field("type", type);
  return w;
}

void finish(json::writer& w) {
  w.end_object();
  w.str() += '\n';
}

/// Writes `message` as the value of "message", cut to max_message_bytes.
void message_field(json::writer& w, std::string_view message) {
  w.key("message");
  if (json::escaped_size(message) <= max_message_bytes) {
    w.value(message);
    return;
  }
  constexpr std::string_view ellipsis = "...";
  std::string cut(message.substr(0, json::escaped_prefix(message, max_message_bytes - ellipsis.size())));
  cut += ellipsis;
  w.value(cut);
}

} // namespace

void encode(const hello& x, std::string& out) {
  auto w = begin(out, "hello");
  w.field("version", x.version).field("pid", x.pid).field("guest", x.guest);
  finish(w);
}

void encode(const ready&, std::string& out) {
  out += "{\"type\":\"ready\"}\n";
}

void encode(const heartbeat& x, std::string& out) {
  auto w = begin(out, "heartbeat");
  w.field("seq", x.seq).field("memory_bytes", x.memory_bytes).field("uptime_ms", x.uptime_ms);
  finish(w);
}

void encode_result_ok(uint64_t id, std::string_view result_json, std::string& out) {
  auto w = begin(out, "result");
  w.field("id", id).field("ok", true).key("result").raw(result_json.empty() ? "{}" : result_json);
  finish(w);
}

void encode_result_error(uint64_t id, tool_errc code, std::string_view message,
                         std::string& out) {
  auto w = begin(out, "result");
  w.field("id", id).field("ok", false).key("error").begin_object().field("code", to_string(code));
  message_field(w, message);
  w.end_object();
  finish(w);
}

bool fit_result_line(std::string& out, std::size_t mark, uint64_t id) {
  if (out.size() <= mark) return false;
  std::size_t line = out.size() - mark;
  if (out.back() == '\n') --line;
  if (line <= max_guest_line_bytes) return false;
  out.resize(mark);
  encode_result_error(id, tool_errc::too_large,
                      "the result is " + std::to_string(line) + " bytes as JSON, over the " +
                        std::to_string(max_guest_line_bytes) + "-byte line limit",
                      out);
  return true;
}

void encode(const call_result& x, std::string& out) {
  if (x.ok)
    encode_result_ok(x.id, x.result_json, out);
  else
    encode_result_error(x.id, x.error.code, x.error.message, out);
}

void encode(const protocol_error& x, std::string& out) {
  auto w = begin(out, "protocol_error");
  message_field(w, x.message);
  finish(w);
}

void encode(const bye&, std::string& out) {
  out += "{\"type\":\"bye\"}\n";
}

void encode(const call& x, std::string& out) {
  auto w = begin(out, "call");
  w.field("id", x.id).field("tool", x.tool).key("args").raw(x.args_json.empty() ? "{}" : x.args_json);
  finish(w);
}

void encode(const shutdown&, std::string& out) {
  out += "{\"type\":\"shutdown\"}\n";
}

void encode(const fault& x, std::string& out) {
  auto w = begin(out, "fault");
  if (x.id) w.field("id", *x.id);
  w.field("kind", to_string(x.kind)).field("code", x.code).field("ms", x.ms);
  if (x.kind == fault_kind::garbage) w.field("what", to_string(x.what));
  finish(w);
}

void encode(const guest_message& x, std::string& out) {
  std::visit([&](const auto& m) { encode(m, out); }, x);
}

void encode(const host_message& x, std::string& out) {
  std::visit([&](const auto& m) { encode(m, out); }, x);
}

// --- decoding -----------------------------------------------------------------

namespace {

using simdjson::dom::element;
using simdjson::dom::object;
using protocol_detail::reader;


result<host_message> decode_call(const reader& r) {
  call c;
  AV_TRY(r.u64("id", c.id, true));
  AV_TRY(r.str("tool", c.tool, true));
  AV_TRY(r.obj_text("args", c.args_json, false));
  return host_message{std::move(c)};
}

result<host_message> decode_fault(const reader& r) {
  fault f;
  std::string kind;
  AV_TRY(r.str("kind", kind, true));
  auto k = fault_kind_from_string(kind);
  if (!k) return r.fail("kind", "unknown kind \"" + kind + "\"");
  f.kind = *k;
  if (r.find("id")) {
    uint64_t id = 0;
    AV_TRY(r.u64("id", id, true));
    f.id = id;
  }
  AV_TRY(r.i32("code", f.code, false));
  AV_TRY(r.u32("ms", f.ms, false));
  if (f.kind == fault_kind::garbage) {
    std::string what;
    AV_TRY(r.str("what", what, true));
    auto g = garbage_kind_from_string(what);
    if (!g) return r.fail("what", "unknown kind \"" + what + "\"");
    f.what = *g;
  }
  return host_message{f};
}

result<guest_message> decode_hello(const reader& r) {
  hello h;
  AV_TRY(r.u32("version", h.version, true));
  AV_TRY(r.i64("pid", h.pid, true));
  AV_TRY(r.str("guest", h.guest, true));
  return guest_message{std::move(h)};
}

result<guest_message> decode_heartbeat(const reader& r) {
  heartbeat h;
  AV_TRY(r.u64("seq", h.seq, true));
  AV_TRY(r.u64("memory_bytes", h.memory_bytes, true));
  AV_TRY(r.u64("uptime_ms", h.uptime_ms, true));
  return guest_message{h};
}

result<guest_message> decode_result(const reader& r) {
  call_result res;
  AV_TRY(r.u64("id", res.id, true));
  AV_TRY(r.boolean("ok", res.ok, true));
  if (res.ok) {
    AV_TRY(r.obj_text("result", res.result_json, false));
    return guest_message{std::move(res)};
  }
  auto e = r.find("error");
  if (!e) return r.fail("error", "missing");
  object eo;
  if (e->get_object().get(eo)) return r.fail("error", "expected an object");
  reader er(eo, "result.error");
  std::string code;
  AV_TRY(er.str("code", code, true));
  auto c = tool_errc_from_string(code);
  if (!c) return er.fail("code", "unknown code \"" + code + "\"");
  res.error.code = *c;
  AV_TRY(er.str("message", res.error.message, true));
  return guest_message{std::move(res)};
}

result<guest_message> decode_protocol_error(const reader& r) {
  protocol_error p;
  AV_TRY(r.str("message", p.message, true));
  return guest_message{std::move(p)};
}

#undef AV_TRY

std::string_view strip_newline(std::string_view line) {
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line;
}

} // namespace

struct decoder::impl {
  simdjson::dom::parser parser;
  std::string buf; ///< the line plus SIMDJSON_PADDING bytes

  /// Parses `line` and returns its object and its "type".
  result<std::pair<object, std::string_view>> parse(std::string_view line, std::size_t limit) {
    line = strip_newline(line);
    if (line.size() > limit)
      return error{"line is longer than " + std::to_string(limit) + " bytes"};
    if (buf.size() < line.size() + simdjson::SIMDJSON_PADDING)
      buf.resize(line.size() + simdjson::SIMDJSON_PADDING);
    std::memcpy(buf.data(), line.data(), line.size());
    element doc;
    if (auto err = parser.parse(buf.data(), line.size(), false).get(doc))
      return error{std::string("line is not valid JSON: ") + simdjson::error_message(err)};
    object obj;
    if (doc.get_object().get(obj)) return error{"line is not a JSON object"};
    element t;
    if (obj.at_key("type").get(t)) return error{"message has no \"type\""};
    std::string_view type;
    if (t.get_string().get(type)) return error{"type: expected a string"};
    return std::pair{obj, type};
  }
};

decoder::decoder() : impl_(std::make_unique<impl>()) {}
decoder::~decoder() = default;
decoder::decoder(decoder&&) noexcept = default;
decoder& decoder::operator=(decoder&&) noexcept = default;

namespace {
error unknown_type(std::string_view type) {
  return error{"unknown message type \"" + std::string(type) + "\""};
}
} // namespace

result<host_message> decoder::decode_host(std::string_view line) {
  auto parsed = impl_->parse(line, max_line_bytes);
  if (!parsed) return std::move(parsed).err();
  auto [obj, type] = *parsed;
  if (type == "call") return decode_call(reader(obj, "call"));
  if (type == "shutdown") return host_message{shutdown{}};
  if (type == "fault") return decode_fault(reader(obj, "fault"));
  return unknown_type(type);
}

result<guest_message> decoder::decode_guest(std::string_view line) {
  auto parsed = impl_->parse(line, max_guest_line_bytes);
  if (!parsed) return std::move(parsed).err();
  auto [obj, type] = *parsed;
  if (type == "result") return decode_result(reader(obj, "result"));
  if (type == "heartbeat") return decode_heartbeat(reader(obj, "heartbeat"));
  if (type == "hello") return decode_hello(reader(obj, "hello"));
  if (type == "ready") return guest_message{ready{}};
  if (type == "protocol_error") return decode_protocol_error(reader(obj, "protocol_error"));
  if (type == "bye") return guest_message{bye{}};
  return unknown_type(type);
}

result<host_message> decode_host_message(std::string_view line) {
  decoder d;
  return d.decode_host(line);
}

result<guest_message> decode_guest_message(std::string_view line) {
  decoder d;
  return d.decode_guest(line);
}

} // namespace agentvisor::guest

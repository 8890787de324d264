// The guest protocol codec and the JSON writer, in process.

#include "agentvisor/guest_protocol.hpp"
#include "agentvisor/json.hpp"

#include <doctest/doctest.h>
#include <simdjson.h>

#include <limits>
#include <string>

using namespace agentvisor;
using namespace agentvisor::guest;

namespace {

/// Parses `text` as JSON and returns the string it holds.
std::string json_string_value(const std::string& text) {
  simdjson::dom::parser p;
  std::string_view v;
  auto err = p.parse(text).get_string().get(v);
  REQUIRE_MESSAGE(!err, "not a JSON string: " << text);
  return std::string(v);
}

std::string escaped(std::string_view s) {
  std::string out;
  json::append_string(out, s);
  return out;
}

template <class T>
T round_trip_guest(const T& msg) {
  auto line = encode(msg);
  CHECK(line.back() == '\n');
  CHECK(line.find('\n') == line.size() - 1);
  auto decoded = decode_guest_message(line);
  REQUIRE_MESSAGE(decoded, (decoded ? "" : decoded.err().message));
  REQUIRE(std::holds_alternative<T>(*decoded));
  return std::get<T>(*decoded);
}

template <class T>
T round_trip_host(const T& msg) {
  auto line = encode(msg);
  CHECK(line.back() == '\n');
  CHECK(line.find('\n') == line.size() - 1);
  auto decoded = decode_host_message(line);
  REQUIRE_MESSAGE(decoded, (decoded ? "" : decoded.err().message));
  REQUIRE(std::holds_alternative<T>(*decoded));
  return std::get<T>(*decoded);
}

std::string host_error(std::string_view line) {
  auto r = decode_host_message(line);
  REQUIRE_MESSAGE(!r, "decoded unexpectedly: " << line);
  return r.err().message;
}

std::string guest_error(std::string_view line) {
  auto r = decode_guest_message(line);
  REQUIRE_MESSAGE(!r, "decoded unexpectedly: " << line);
  return r.err().message;
}

} // namespace

// --- JSON writer ------------------------------------------------------------------

TEST_CASE("the JSON writer escapes quotes, backslashes and named control characters") {
  CHECK(escaped("plain") == R"("plain")");
  CHECK(escaped("a\"b\\c") == R"("a\"b\\c")");
  CHECK(escaped("l1\nl2\r\t\b\f") == R"("l1\nl2\r\t\b\f")");
}

TEST_CASE("the JSON writer escapes other control characters as \\u00XX, NUL included") {
  CHECK(escaped(std::string_view("\x01\x1f", 2)) == R"("\u0001\u001f")");
  CHECK(escaped(std::string_view("a\0b", 3)) == R"("a\u0000b")");
  CHECK(escaped("\x7f") == "\"\x7f\""); // DEL needs no escape in JSON
}

TEST_CASE("the JSON writer keeps valid UTF-8 as is") {
  std::string s = "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \xEF\xBF\xBF";
  CHECK(escaped(s) == "\"" + s + "\"");
  CHECK(json_string_value(escaped(s)) == s);
}

TEST_CASE("the JSON writer replaces invalid UTF-8 with U+FFFD, one per maximal invalid subpart") {
  const std::string r = "\xEF\xBF\xBD";
  CHECK(escaped("a\x80z") == "\"a" + r + "z\"");                 // stray continuation
  CHECK(escaped("\xC0\xAF") == "\"" + r + r + "\"");             // overlong 2-byte lead
  CHECK(escaped("\xE0\x80\xAF") == "\"" + r + r + r + "\"");     // overlong 3-byte
  CHECK(escaped("\xED\xA0\x80") == "\"" + r + r + r + "\"");     // surrogate U+D800
  CHECK(escaped("\xF4\x90\x80\x80") == "\"" + r + r + r + r + "\""); // above U+10FFFF
  CHECK(escaped("\xE2\x82") == "\"" + r + "\"");                 // truncated at the end
  CHECK(escaped("\xE2\x82x") == "\"" + r + "x\"");               // truncated mid-string
  CHECK(escaped("\xF0\x9F\x98") == "\"" + r + "\"");
  CHECK(escaped("\xFF\xFE") == "\"" + r + r + "\"");
  // Whatever comes in, what goes out parses.
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  std::string out = escaped(all);
  simdjson::dom::parser p;
  CHECK_FALSE(p.parse(out).error());
}

TEST_CASE("escaped_size predicts what append_string appends") {
  for (std::string_view s : {std::string_view(""), std::string_view("abc"),
                             std::string_view("a\"\\\n\x01"), std::string_view("\xC3\xA9\xFF")})
    CHECK(json::escaped_size(s) == escaped(s).size());
}

TEST_CASE("escaped_prefix is the longest prefix whose escaped form fits, never cutting a character") {
  CHECK(json::escaped_prefix("hello", 7) == 5);  // "hello" with quotes is 7
  CHECK(json::escaped_prefix("hello", 6) == 4);
  CHECK(json::escaped_prefix("hello", 1) == 0);
  CHECK(json::escaped_prefix("", 2) == 0);
  CHECK(json::escaped_prefix("a\"b", 5) == 2);   // the quote needs two bytes
  CHECK(json::escaped_prefix("a\"b", 6) == 3);
  CHECK(json::escaped_prefix("\n\x01", 4) == 1);  // \n is 2, \u0001 is 6
  CHECK(json::escaped_prefix("\n\x01", 10) == 2);
  CHECK(json::escaped_prefix("\xE2\x82\xAC!", 4) == 0); // the euro sign is 3 bytes: all or nothing
  CHECK(json::escaped_prefix("\xE2\x82\xAC!", 5) == 3);
  CHECK(json::escaped_prefix("\xFF\xFEz", 5) == 1);      // one invalid byte becomes U+FFFD (3)
  CHECK(json::escaped_prefix("\xE2\x82z", 5) == 2);      // a truncated sequence is one U+FFFD
  // Agrees with escaped_size on arbitrary text.
  std::string mixed;
  for (int i = 0; i < 3000; ++i) mixed += static_cast<char>((i * 37) % 256);
  for (std::size_t budget : {2u, 50u, 1000u, 5000u, 20000u}) {
    auto k = json::escaped_prefix(mixed, budget);
    CHECK(json::escaped_size(std::string_view(mixed).substr(0, k)) <= budget);
    if (k < mixed.size()) {
      std::size_t next = k + 1;
      while (next < mixed.size() &&
             json::escaped_size(std::string_view(mixed).substr(0, next)) <= budget)
        ++next; // a longer prefix that fits would have to end mid-character
      CHECK(json::escaped_prefix(std::string_view(mixed).substr(0, next), budget) == k);
    }
  }
}

TEST_CASE("the JSON writer places commas in nested objects and arrays") {
  std::string out = "prefix:";
  json::writer w(out);
  w.begin_object()
    .field("a", 1)
    .key("b").begin_array().value("x").value(true).value(nullptr)
    .begin_object().end_object().begin_array().end_array().end_array()
    .field("c", "y")
    .key("d").begin_object().field("e", false).end_object()
    .end_object();
  CHECK(out == R"(prefix:{"a":1,"b":["x",true,null,{},[]],"c":"y","d":{"e":false}})");
}

TEST_CASE("the JSON writer writes integers exactly and non-finite doubles as null") {
  std::string out;
  json::writer w(out);
  w.begin_array()
    .value(std::numeric_limits<int64_t>::min())
    .value(std::numeric_limits<uint64_t>::max())
    .value(0)
    .value(-7)
    .value(1.5)
    .value(std::numeric_limits<double>::quiet_NaN())
    .value(std::numeric_limits<double>::infinity())
    .end_array();
  CHECK(out == "[-9223372036854775808,18446744073709551615,0,-7,1.5,null,null]");
}

TEST_CASE("the JSON writer encodes base64 with padding") {
  auto b64 = [](std::string_view s) {
    std::string out;
    json::append_base64_string(out, s);
    return out;
  };
  CHECK(b64("") == R"("")");
  CHECK(b64("f") == R"("Zg==")");
  CHECK(b64("fo") == R"("Zm8=")");
  CHECK(b64("foo") == R"("Zm9v")");
  CHECK(b64("foobar") == R"("Zm9vYmFy")");
  CHECK(b64(std::string_view("\0\xff", 2)) == R"("AP8=")");
}

// --- round trips -------------------------------------------------------------------

TEST_CASE("hello round-trips") {
  hello h{1, 1, "agentvisor-guest 0.1.0"};
  CHECK(encode(h) == "{\"type\":\"hello\",\"version\":1,\"pid\":1,\"guest\":\"agentvisor-guest 0.1.0\"}\n");
  CHECK(round_trip_guest(h) == h);
}

TEST_CASE("ready, bye and shutdown round-trip") {
  CHECK(encode(ready{}) == "{\"type\":\"ready\"}\n");
  CHECK(encode(bye{}) == "{\"type\":\"bye\"}\n");
  CHECK(encode(shutdown{}) == "{\"type\":\"shutdown\"}\n");
  round_trip_guest(ready{});
  round_trip_guest(bye{});
  round_trip_host(shutdown{});
}

TEST_CASE("heartbeat round-trips with 64-bit values") {
  heartbeat hb{42, std::numeric_limits<uint64_t>::max(), 123456};
  CHECK(round_trip_guest(hb) == hb);
}

TEST_CASE("a successful result round-trips with its result object") {
  call_result r;
  r.id = 7;
  r.ok = true;
  r.result_json = R"({"content":"a\nb","size":3,"nested":[1,{"x":null}]})";
  CHECK(round_trip_guest(r) == r);
}

TEST_CASE("a failed result round-trips with its code and message") {
  for (auto code : {tool_errc::invalid_args, tool_errc::path_escape, tool_errc::not_found,
                    tool_errc::io_error, tool_errc::too_large, tool_errc::timeout,
                    tool_errc::unknown_tool, tool_errc::exec_failed, tool_errc::faults_disabled}) {
    call_result r;
    r.id = 9;
    r.ok = false;
    r.result_json = "{}";
    r.error = tool_error{code, "path \"../x\": escapes the \"workspace\"\n"};
    CHECK(round_trip_guest(r) == r);
  }
}

TEST_CASE("protocol_error round-trips") {
  protocol_error p{"line is not valid JSON: \x01"};
  CHECK(round_trip_guest(p) == p);
}

TEST_CASE("call round-trips with its args") {
  call c{3, "read_file", R"({"path":"a/b.txt","offset":10,"max_bytes":20})"};
  CHECK(encode(c) == "{\"type\":\"call\",\"id\":3,\"tool\":\"read_file\",\"args\":{\"path\":\"a/b.txt\",\"offset\":10,\"max_bytes\":20}}\n");
  CHECK(round_trip_host(c) == c);
}

TEST_CASE("a call without args decodes with empty args") {
  auto r = decode_host_message(R"({"type":"call","id":1,"tool":"list_directory"})");
  REQUIRE(r);
  CHECK(std::get<call>(*r).args_json == "{}");
}

TEST_CASE("fault round-trips for every kind, with and without an id") {
  for (auto k : {fault_kind::exit, fault_kind::abort, fault_kind::oom, fault_kind::cpu_hog,
                 fault_kind::disk_fill, fault_kind::fork_bomb, fault_kind::garbage}) {
    fault f;
    f.kind = k;
    f.code = 7;
    f.ms = 250;
    CHECK(round_trip_host(f) == f);
    f.id = 11;
    CHECK(round_trip_host(f) == f);
  }
}

TEST_CASE("a garbage fault round-trips with each kind of bad line, and only garbage carries what") {
  for (auto g : {garbage_kind::malformed, garbage_kind::oversized, garbage_kind::unknown_type,
                 garbage_kind::orphan_result}) {
    fault f;
    f.kind = fault_kind::garbage;
    f.what = g;
    CHECK(encode(f).find("\"what\":\"" + std::string(to_string(g)) + "\"") != std::string::npos);
    CHECK(round_trip_host(f) == f);
  }
  fault other;
  other.kind = fault_kind::cpu_hog;
  CHECK(encode(other).find("what") == std::string::npos);
  auto r = decode_host_message(R"({"type":"fault","kind":"garbage","what":"orphan_result","id":4})");
  REQUIRE(r);
  CHECK(std::get<fault>(*r).what == garbage_kind::orphan_result);
  CHECK(std::get<fault>(*r).id == 4u);
}

TEST_CASE("a fault with only a kind gets code 0 and ms 1000") {
  auto r = decode_host_message(R"({"type":"fault","kind":"exit"})");
  REQUIRE(r);
  auto f = std::get<fault>(*r);
  CHECK(f.code == 0);
  CHECK(f.ms == 1000);
  CHECK_FALSE(f.id.has_value());
}

TEST_CASE("the variant encoders write the alternative they hold") {
  guest_message g = heartbeat{1, 2, 3};
  host_message h = shutdown{};
  CHECK(encode(g) == encode(heartbeat{1, 2, 3}));
  CHECK(encode(h) == encode(shutdown{}));
}

TEST_CASE("decoding ignores unknown fields and accepts a trailing newline or CRLF") {
  auto r = decode_host_message("{\"type\":\"call\",\"id\":1,\"tool\":\"t\",\"future\":[1,2],\"args\":{}}\r\n");
  REQUIRE(r);
  CHECK(std::get<call>(*r).tool == "t");
  auto g = decode_guest_message("{\"type\":\"ready\",\"extra\":{\"a\":1}}\n");
  REQUIRE(g);
  CHECK(std::holds_alternative<ready>(*g));
}

TEST_CASE("one decoder decodes many lines in a row") {
  decoder d;
  for (uint64_t i = 0; i < 100; ++i) {
    auto r = d.decode_host(encode(call{i, "search", R"({"pattern":"x"})"}));
    REQUIRE(r);
    CHECK(std::get<call>(*r).id == i);
  }
}

// --- decode errors ---------------------------------------------------------------

TEST_CASE("decode errors say what is wrong with the line") {
  CHECK(host_error("not json").starts_with("line is not valid JSON: "));
  CHECK(host_error("").starts_with("line is not valid JSON: "));
  CHECK(host_error("{\"type\":\"call\"} {}").starts_with("line is not valid JSON: "));
  CHECK(host_error("[1,2]") == "line is not a JSON object");
  CHECK(host_error("{\"id\":1}") == "message has no \"type\"");
  CHECK(host_error("{\"type\":5}") == "type: expected a string");
  CHECK(host_error("{\"type\":\"foo\"}") == "unknown message type \"foo\"");
  CHECK(guest_error("{\"type\":\"foo\"}") == "unknown message type \"foo\"");
}

TEST_CASE("each message direction refuses the other direction's types") {
  CHECK(host_error("{\"type\":\"hello\",\"version\":1,\"pid\":1,\"guest\":\"g\"}") ==
        "unknown message type \"hello\"");
  CHECK(guest_error("{\"type\":\"shutdown\"}") == "unknown message type \"shutdown\"");
}

TEST_CASE("call decode errors name the field") {
  CHECK(host_error(R"({"type":"call","id":-1,"tool":"t"})") == "call.id: expected an unsigned integer");
  CHECK(host_error(R"({"type":"call","id":"1","tool":"t"})") == "call.id: expected an unsigned integer");
  CHECK(host_error(R"({"type":"call","id":1.5,"tool":"t"})") == "call.id: expected an unsigned integer");
  CHECK(host_error(R"({"type":"call","tool":"t"})") == "call.id: missing");
  CHECK(host_error(R"({"type":"call","id":1})") == "call.tool: missing");
  CHECK(host_error(R"({"type":"call","id":1,"tool":3})") == "call.tool: expected a string");
  CHECK(host_error(R"({"type":"call","id":1,"tool":"t","args":[]})") == "call.args: expected an object");
}

TEST_CASE("fault decode errors name the field") {
  CHECK(host_error(R"({"type":"fault"})") == "fault.kind: missing");
  CHECK(host_error(R"({"type":"fault","kind":"meteor"})") == "fault.kind: unknown kind \"meteor\"");
  CHECK(host_error(R"({"type":"fault","kind":"exit","code":"7"})") == "fault.code: expected an integer");
  CHECK(host_error(R"({"type":"fault","kind":"exit","code":4294967296})") ==
        "fault.code: out of range for a 32-bit integer");
  CHECK(host_error(R"({"type":"fault","kind":"cpu_hog","ms":-5})") == "fault.ms: expected an unsigned integer");
  CHECK(host_error(R"({"type":"fault","kind":"cpu_hog","id":true})") == "fault.id: expected an unsigned integer");
  CHECK(host_error(R"({"type":"fault","kind":"garbage"})") == "fault.what: missing");
  CHECK(host_error(R"({"type":"fault","kind":"garbage","what":"noise"})") ==
        "fault.what: unknown kind \"noise\"");
  CHECK(host_error(R"({"type":"fault","kind":"garbage","what":1})") == "fault.what: expected a string");
}

TEST_CASE("guest message decode errors name the field") {
  CHECK(guest_error(R"({"type":"hello","pid":1,"guest":"g"})") == "hello.version: missing");
  CHECK(guest_error(R"({"type":"hello","version":99999999999,"pid":1,"guest":"g"})") ==
        "hello.version: out of range (at most 4294967295)");
  CHECK(guest_error(R"({"type":"hello","version":1,"pid":"x","guest":"g"})") == "hello.pid: expected an integer");
  CHECK(guest_error(R"({"type":"hello","version":1,"pid":1})") == "hello.guest: missing");
  CHECK(guest_error(R"({"type":"heartbeat","seq":1,"memory_bytes":2})") == "heartbeat.uptime_ms: missing");
  CHECK(guest_error(R"({"type":"heartbeat","seq":-1,"memory_bytes":2,"uptime_ms":3})") ==
        "heartbeat.seq: expected an unsigned integer");
  CHECK(guest_error(R"({"type":"result","id":1})") == "result.ok: missing");
  CHECK(guest_error(R"({"type":"result","id":1,"ok":"yes"})") == "result.ok: expected a boolean");
  CHECK(guest_error(R"({"type":"result","id":1,"ok":true,"result":3})") == "result.result: expected an object");
  CHECK(guest_error(R"({"type":"result","id":1,"ok":false})") == "result.error: missing");
  CHECK(guest_error(R"({"type":"result","id":1,"ok":false,"error":"x"})") == "result.error: expected an object");
  CHECK(guest_error(R"({"type":"result","id":1,"ok":false,"error":{"message":"m"}})") ==
        "result.error.code: missing");
  CHECK(guest_error(R"({"type":"result","id":1,"ok":false,"error":{"code":"boom","message":"m"}})") ==
        "result.error.code: unknown code \"boom\"");
  CHECK(guest_error(R"({"type":"result","id":1,"ok":false,"error":{"code":"io_error"}})") ==
        "result.error.message: missing");
  CHECK(guest_error(R"({"type":"protocol_error"})") == "protocol_error.message: missing");
}

TEST_CASE("a host line over max_line_bytes is a protocol error, one of exactly that size is not") {
  // {"type":"call","id":1,"tool":"write_file","args":{"content":"xxx..."}}
  const std::string head = R"({"type":"call","id":1,"tool":"write_file","args":{"content":")";
  const std::string tail = R"("}})";
  std::string line = head + std::string(max_line_bytes - head.size() - tail.size(), 'x') + tail;
  REQUIRE(line.size() == max_line_bytes);
  auto ok = decode_host_message(line + "\n");
  CHECK(ok);
  line.insert(head.size(), "x");
  auto r = decode_host_message(line);
  REQUIRE_FALSE(r);
  CHECK(r.err().message == "line is longer than 1048576 bytes");
}

TEST_CASE("a guest line over max_guest_line_bytes (1 MiB) is a protocol error, one of exactly that size is not") {
  CHECK(max_guest_line_bytes == std::size_t{1} << 20);
  const std::string head = R"({"type":"result","id":1,"ok":true,"result":{"content":")";
  const std::string tail = R"("}})";
  const std::size_t ys = max_guest_line_bytes - head.size() - tail.size();
  std::string line = head + std::string(ys, 'y') + tail;
  REQUIRE(line.size() == max_guest_line_bytes);
  auto ok = decode_guest_message(line + "\n");
  REQUIRE_MESSAGE(ok, (ok ? "" : ok.err().message));
  CHECK(std::get<call_result>(*ok).result_json == "{\"content\":\"" + std::string(ys, 'y') + "\"}");
  line.insert(head.size(), "y");
  auto r = decode_guest_message(line);
  REQUIRE_FALSE(r);
  CHECK(r.err().message == "line is longer than 1048576 bytes");
}

TEST_CASE("fit_result_line keeps a result line of exactly the limit and replaces a longer one with too_large") {
  const std::string prefix = "{\"type\":\"heartbeat\",\"seq\":1,\"memory_bytes\":1,\"uptime_ms\":1}\n";
  auto result_of = [](std::size_t content) {
    std::string out;
    encode_result_ok(9, "{\"c\":\"" + std::string(content, 'q') + "\"}", out);
    return out;
  };
  // Find the content size that makes the line exactly max_guest_line_bytes.
  const std::size_t overhead = result_of(0).size() - 1;
  std::string out = prefix;
  std::string exact = result_of(max_guest_line_bytes - overhead);
  REQUIRE(exact.size() == max_guest_line_bytes + 1);
  out += exact;
  CHECK_FALSE(fit_result_line(out, prefix.size(), 9));
  CHECK(out.size() == prefix.size() + exact.size());

  out = prefix + result_of(max_guest_line_bytes - overhead + 1);
  CHECK(fit_result_line(out, prefix.size(), 9));
  CHECK(out.starts_with(prefix)); // what came before is untouched
  auto r = decode_guest_message(std::string_view(out).substr(prefix.size()));
  REQUIRE(r);
  auto& res = std::get<call_result>(*r);
  CHECK(res.id == 9);
  CHECK_FALSE(res.ok);
  CHECK(res.error.code == tool_errc::too_large);
  CHECK(res.error.message == "the result is 1048577 bytes as JSON, over the 1048576-byte line limit");
}

TEST_CASE("error and protocol_error messages are cut to max_message_bytes at a character boundary") {
  std::string huge = "unknown tool \"" + std::string(100000, 'x') + "\u20ac\"";
  std::string out;
  encode_result_error(3, tool_errc::unknown_tool, huge, out);
  CHECK(out.size() < max_message_bytes + 100);
  auto r = decode_guest_message(out);
  REQUIRE(r);
  auto msg = std::get<call_result>(*r).error.message;
  CHECK(msg.starts_with("unknown tool \"xxx"));
  CHECK(msg.ends_with("..."));
  CHECK(escaped(msg).size() <= max_message_bytes);

  // Control characters escape to six bytes each: the cut counts escaped bytes.
  std::string ctl(10000, '\x01');
  auto p = round_trip_guest(protocol_error{ctl});
  CHECK(p.message.ends_with("..."));
  CHECK(escaped(p.message).size() <= max_message_bytes);
  CHECK(escaped(p.message).size() > max_message_bytes - 6);

  // Short messages are untouched.
  protocol_error small{"call.id: missing"};
  CHECK(round_trip_guest(small) == small);
}

TEST_CASE("tool error codes and fault kinds convert to and from their names") {
  CHECK(to_string(tool_errc::path_escape) == "path_escape");
  CHECK(tool_errc_from_string("faults_disabled") == tool_errc::faults_disabled);
  CHECK_FALSE(tool_errc_from_string("nope").has_value());
  CHECK(to_string(fault_kind::fork_bomb) == "fork_bomb");
  CHECK(fault_kind_from_string("disk_fill") == fault_kind::disk_fill);
  CHECK(fault_kind_from_string("garbage") == fault_kind::garbage);
  CHECK_FALSE(fault_kind_from_string("meteor").has_value());
  CHECK(to_string(garbage_kind::unknown_type) == "unknown_type");
  CHECK(garbage_kind_from_string("oversized") == garbage_kind::oversized);
  CHECK_FALSE(garbage_kind_from_string("noise").has_value());
}

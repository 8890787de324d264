// guest_session, in process: the host's judge of a guest's lines.

#include "agentvisor/guest_session.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace agentvisor;
using namespace agentvisor::guest;

namespace {

/// The line for `msg` as the I/O thread delivers it: without its '\n'.
template <class T>
std::string wire(const T& msg) {
  auto l = encode(msg);
  l.pop_back();
  return l;
}

hello our_hello() {
  return hello{protocol_version, 1, "agentvisor-guest test"};
}

/// A session that has seen hello and ready.
guest_session ready_session() {
  guest_session s;
  REQUIRE(s.on_line(wire(our_hello())));
  REQUIRE(s.on_line(wire(ready{})));
  REQUIRE(s.phase() == session_phase::ready);
  return s;
}

/// The event `line` gives; fails the test on a protocol error.
session_event event(guest_session& s, std::string_view line) {
  auto r = s.on_line(line);
  REQUIRE_MESSAGE(r, "unexpected protocol error: " << (r ? "" : r.err().message));
  return *r;
}

/// The protocol error `line` gives; fails the test on an event.
std::string violation(guest_session& s, std::string_view line) {
  auto r = s.on_line(line);
  REQUIRE_MESSAGE(!r, "no protocol error for: " << line);
  CHECK(s.failed());
  CHECK(s.phase() == session_phase::failed);
  return r.err().message;
}

call_result ok_result(uint64_t id) {
  call_result r;
  r.id = id;
  r.result_json = R"({"entries":[],"truncated":false})";
  return r;
}

} // namespace

// --- the conversation ----------------------------------------------------------------

TEST_CASE("a session turns hello, ready, heartbeat and bye into events and follows the phases") {
  guest_session s;
  CHECK(s.phase() == session_phase::awaiting_hello);
  CHECK_FALSE(s.peer());
  auto h = event(s, wire(our_hello()));
  CHECK(std::get<hello>(h) == our_hello());
  CHECK(s.phase() == session_phase::awaiting_ready);
  REQUIRE(s.peer());
  CHECK(s.peer()->guest == "agentvisor-guest test");
  // The guest may beat before it is ready.
  CHECK(std::get<heartbeat>(event(s, wire(heartbeat{1, 2, 3}))) == heartbeat{1, 2, 3});
  CHECK(std::holds_alternative<ready>(event(s, wire(ready{}))));
  CHECK(s.phase() == session_phase::ready);
  CHECK(std::get<heartbeat>(event(s, wire(heartbeat{2, 2, 4}))).seq == 2);
  CHECK(std::holds_alternative<bye>(event(s, wire(bye{}))));
  CHECK(s.phase() == session_phase::said_bye);
  auto closed = s.on_closed("");
  REQUIRE(closed);
  CHECK(std::get<channel_closed>(*closed) == channel_closed{""});
  CHECK(s.phase() == session_phase::closed);
  CHECK_FALSE(s.failed());
  CHECK(to_string(session_phase::said_bye) == "said_bye");
}

TEST_CASE("calls get ids 1, 2, 3 and wait as pending until their result arrives, in any order") {
  auto s = ready_session();
  auto a = s.call("list_directory", R"({"path":"."})");
  auto b = s.call("read_file", R"({"path":"x"})");
  auto c = s.call("search");
  REQUIRE(a);
  REQUIRE(b);
  REQUIRE(c);
  CHECK(a->id == 1);
  CHECK(b->id == 2);
  CHECK(c->id == 3);
  CHECK(a->line == encode(call{1, "list_directory", R"({"path":"."})"}));
  CHECK(c->line == encode(call{3, "search", "{}"}));
  CHECK(s.pending_count() == 3);
  CHECK(s.pending_what(2) == "read_file");
  CHECK_FALSE(s.pending_what(9));

  auto r2 = std::get<call_result>(event(s, wire(ok_result(2))));
  CHECK(r2.id == 2);
  CHECK(r2.result_json == R"({"entries":[],"truncated":false})");
  CHECK_FALSE(s.is_pending(2));
  call_result failed;
  failed.id = 1;
  failed.ok = false;
  failed.error = tool_error{tool_errc::not_found, "path \"x\": No such file or directory"};
  CHECK(std::get<call_result>(event(s, wire(failed))) == failed);
  CHECK(s.pending_count() == 1);
  CHECK(s.is_pending(3));
}

TEST_CASE("the guest's protocol_error about a line the host sent is an event, not a failure") {
  auto s = ready_session();
  auto e = event(s, wire(protocol_error{"call.id: missing"}));
  CHECK(std::get<protocol_error>(e).message == "call.id: missing");
  CHECK(s.phase() == session_phase::ready);
}

// --- bad input from the guest ----------------------------------------------------------

TEST_CASE("a malformed line is a protocol error that says the line is not valid JSON") {
  auto s = ready_session();
  CHECK(violation(s, "this is not JSON {\"type\":\"heartbeat\"").starts_with("line is not valid JSON: "));
}

TEST_CASE("a line that is JSON but no message object is a protocol error that says so") {
  guest_session a = ready_session();
  CHECK(violation(a, "[1,2,3]") == "line is not a JSON object");
  guest_session b = ready_session();
  CHECK(violation(b, R"({"seq":1})") == "message has no \"type\"");
}

TEST_CASE("an unknown message type is a protocol error naming the type") {
  auto s = ready_session();
  CHECK(violation(s, R"({"type":"teleport"})") == "unknown message type \"teleport\"");
}

TEST_CASE("a known message with a bad member is a protocol error naming the member") {
  auto s = ready_session();
  CHECK(violation(s, R"({"type":"heartbeat","seq":"one","memory_bytes":1,"uptime_ms":1})") ==
        "heartbeat.seq: expected an unsigned integer");
}

TEST_CASE("a result whose id matches no pending call is a protocol error naming the id") {
  auto s = ready_session();
  REQUIRE(s.call("list_directory"));
  CHECK(violation(s, wire(ok_result(42))) == "result for id 42, which no call is waiting for");
}

TEST_CASE("a second result for the same call is a protocol error: its wait already ended") {
  auto s = ready_session();
  auto c = s.call("list_directory");
  REQUIRE(c);
  event(s, wire(ok_result(c->id)));
  CHECK(violation(s, wire(ok_result(c->id))) == "result for id 1, which no call is waiting for");
}

TEST_CASE("a result for the garbage fault's reserved id is an orphan") {
  auto s = ready_session();
  CHECK(violation(s, wire(ok_result(garbage_result_id))) ==
        "result for id 18446744073709551615, which no call is waiting for");
}

TEST_CASE("a hello with another protocol version is refused: the guest speaks 2, we speak 1") {
  guest_session s;
  auto h = our_hello();
  h.version = protocol_version + 1;
  CHECK(violation(s, wire(h)) == "guest speaks protocol 2, we speak 1");
  CHECK_FALSE(s.peer());
  guest_session old;
  h.version = 0;
  CHECK(violation(old, wire(h)) == "guest speaks protocol 0, we speak 1");
}

TEST_CASE("a second hello is a protocol error, before and after ready") {
  guest_session early;
  event(early, wire(our_hello()));
  CHECK(violation(early, wire(our_hello())) == "a second hello (the guest said hello before)");
  auto late = ready_session();
  CHECK(violation(late, wire(our_hello())) == "a second hello (the guest said hello before)");
}

TEST_CASE("ready before hello is a protocol error") {
  guest_session s;
  CHECK(violation(s, wire(ready{})) == "ready before hello");
}

TEST_CASE("every line before hello that is not hello is a protocol error naming its type") {
  for (auto line : {wire(heartbeat{1, 1, 1}), wire(ok_result(1)), wire(bye{}),
                    wire(protocol_error{"x"})}) {
    guest_session s;
    auto m = violation(s, line);
    CHECK(m.ends_with(" before hello"));
  }
  guest_session s;
  CHECK(violation(s, wire(heartbeat{1, 1, 1})) == "heartbeat before hello");
  guest_session r;
  CHECK(violation(r, wire(ok_result(1))) == "result before hello");
}

TEST_CASE("a second ready is a protocol error") {
  auto s = ready_session();
  CHECK(violation(s, wire(ready{})) == "a second ready (the guest said ready before)");
}

TEST_CASE("a line after bye is a protocol error") {
  auto s = ready_session();
  event(s, wire(bye{}));
  CHECK(violation(s, wire(heartbeat{5, 1, 1})) == "heartbeat after bye");
  auto t = ready_session();
  event(t, wire(bye{}));
  CHECK(violation(t, wire(our_hello())) == "hello after bye");
}

TEST_CASE("a line over max_guest_line_bytes handed to on_line is a protocol error") {
  auto s = ready_session();
  std::string line = R"({"type":"heartbeat","seq":1,"memory_bytes":1,"uptime_ms":1,"pad":")";
  line += std::string(max_guest_line_bytes, 'x');
  line += "\"}";
  CHECK(violation(s, line) == "line is longer than 1048576 bytes");
}

TEST_CASE("after a protocol error the session stays failed and answers every later line with the first error") {
  auto s = ready_session();
  auto first = violation(s, R"({"type":"teleport"})");
  CHECK(s.failure() == first);
  auto again = s.on_line(wire(heartbeat{1, 1, 1}));
  REQUIRE_FALSE(again);
  CHECK(again.err().message == first);
  auto closed = s.on_closed("");
  REQUIRE_FALSE(closed);
  CHECK(closed.err().message == first);
  CHECK(s.failed());
}

// --- the end of the channel ------------------------------------------------------------

TEST_CASE("on_closed makes the I/O thread's line-over close a protocol error") {
  auto s = ready_session();
  auto r = s.on_closed("line over 1048576 bytes");
  REQUIRE_FALSE(r);
  CHECK(r.err().message == "the guest sent a line over 1048576 bytes");
  CHECK(s.failed());
}

TEST_CASE("on_closed makes a clean EOF a channel_closed event with no reason, even before hello") {
  guest_session s;
  auto r = s.on_closed("");
  REQUIRE(r);
  CHECK(std::get<channel_closed>(*r).reason.empty());
  CHECK(s.phase() == session_phase::closed);
  CHECK_FALSE(s.failed());
}

TEST_CASE("on_closed with a broken stream is channel_closed carrying the reason, not a protocol error") {
  auto s = ready_session();
  auto r = s.on_closed("read: connection reset by peer (ECONNRESET)");
  REQUIRE(r);
  CHECK(std::get<channel_closed>(*r).reason == "read: connection reset by peer (ECONNRESET)");
  CHECK(s.phase() == session_phase::closed);
}

TEST_CASE("a line after the channel closed is a protocol error") {
  auto s = ready_session();
  REQUIRE(s.on_closed(""));
  CHECK(violation(s, wire(heartbeat{1, 1, 1})) == "a line after the channel closed");
}

// --- calls in flight ---------------------------------------------------------------------

TEST_CASE("fail_all_pending returns every pending id in order and forgets them, so none is lost") {
  auto s = ready_session();
  for (int i = 0; i < 5; ++i) REQUIRE(s.call("list_directory"));
  fault hog;
  hog.kind = fault_kind::cpu_hog;
  auto f = s.fault(hog);
  CHECK(f.id == 6);
  event(s, wire(ok_result(2)));
  event(s, wire(ok_result(4)));
  auto ids = s.fail_all_pending();
  CHECK(ids == std::vector<uint64_t>{1, 3, 5, 6});
  CHECK(s.pending_count() == 0);
  CHECK(s.fail_all_pending().empty());
  // A late result for a failed call is an orphan now.
  CHECK(violation(s, wire(ok_result(3))) == "result for id 3, which no call is waiting for");
}

TEST_CASE("fail_all_pending works after the session failed or closed") {
  auto s = ready_session();
  REQUIRE(s.call("list_directory"));
  REQUIRE(s.call("list_directory"));
  violation(s, "garbage");
  CHECK(s.fail_all_pending() == std::vector<uint64_t>{1, 2});
}

// --- what the session sends ----------------------------------------------------------------

TEST_CASE("call refuses a call whose line would be over 1 MiB, and it is not pending") {
  auto s = ready_session();
  std::string args = R"({"path":"big","content":")" + std::string(max_line_bytes, 'z') + "\"}";
  auto r = s.call("write_file", args);
  REQUIRE_FALSE(r);
  CHECK(r.err().message == "call \"write_file\" cannot be sent: line is longer than 1048576 bytes");
  CHECK(s.pending_count() == 0);
  auto next = s.call("list_directory");
  REQUIRE(next);
  CHECK(next->id == 1);
}

TEST_CASE("call refuses args that are not one JSON object") {
  auto s = ready_session();
  auto arr = s.call("search", "[1,2]");
  REQUIRE_FALSE(arr);
  CHECK(arr.err().message == "call \"search\" cannot be sent: call.args: expected an object");
  auto two = s.call("search", R"({"a":1}{"type":"shutdown"})");
  REQUIRE_FALSE(two);
  CHECK(two.err().message.starts_with("call \"search\" cannot be sent: line is not valid JSON: "));
  auto broken = s.call("search", R"({"pattern":)");
  REQUIRE_FALSE(broken);
  CHECK(s.pending_count() == 0);
}

TEST_CASE("call keeps args with raw newlines on one line, so they cannot split it") {
  auto s = ready_session();
  auto r = s.call("search", "{\n  \"pattern\": \"x\",\n  \"regex\": false\n}");
  REQUIRE(r);
  CHECK(r->line.find('\n') == r->line.size() - 1);
  CHECK(r->line == encode(call{1, "search", R"({"pattern":"x","regex":false})"}));
  auto back = decode_host_message(r->line);
  REQUIRE(back);
  CHECK(std::get<call>(*back).args_json == R"({"pattern":"x","regex":false})");
}

TEST_CASE("faults that report get an id and wait as pending; exit, abort and oom carry none") {
  auto s = ready_session();
  for (auto k : {fault_kind::cpu_hog, fault_kind::disk_fill, fault_kind::fork_bomb,
                 fault_kind::garbage}) {
    fault f;
    f.kind = k;
    f.id = 999; // ignored: the session numbers
    auto out = s.fault(f);
    CHECK(out.id != 0);
    CHECK(out.id != 999);
    CHECK(s.is_pending(out.id));
    CHECK(s.pending_what(out.id) == "fault " + std::string(to_string(k)));
    auto back = decode_host_message(out.line);
    REQUIRE(back);
    CHECK(std::get<fault>(*back).id == out.id);
  }
  for (auto k : {fault_kind::exit, fault_kind::abort, fault_kind::oom}) {
    fault f;
    f.kind = k;
    f.id = 5;
    auto out = s.fault(f);
    CHECK(out.id == 0);
    auto back = decode_host_message(out.line);
    REQUIRE(back);
    CHECK_FALSE(std::get<fault>(*back).id.has_value());
  }
  CHECK(s.pending_count() == 4);
  fault g;
  g.kind = fault_kind::garbage;
  g.what = garbage_kind::orphan_result;
  auto out = s.fault(g);
  CHECK(out.line.find(R"("what":"orphan_result")") != std::string::npos);
}

TEST_CASE("shutdown is the shutdown line") {
  guest_session s;
  CHECK(s.shutdown() == "{\"type\":\"shutdown\"}\n");
}

TEST_CASE("a session can be moved with its pending calls") {
  auto s = ready_session();
  REQUIRE(s.call("list_directory"));
  guest_session t = std::move(s);
  CHECK(t.is_pending(1));
  CHECK(t.phase() == session_phase::ready);
  CHECK(std::holds_alternative<call_result>(event(t, wire(ok_result(1)))));
}

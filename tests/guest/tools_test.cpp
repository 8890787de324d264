// Whole-binary tests: start the built agentvisor-guest with one end of a
// socketpair as its fd 3 and speak the protocol to it, as the supervisor does.
// Every receive is guarded by a timeout, so a broken guest fails a test
// instead of hanging it.

#include "agentvisor/guest_protocol.hpp"
#include "agentvisor/json.hpp"

#include <doctest/doctest.h>
#include <simdjson.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <grp.h>
#include <sys/wait.h>
#include <sched.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#ifndef GUEST_PATH
#error "GUEST_PATH must name the agentvisor-guest binary"
#endif

using namespace agentvisor;
using namespace agentvisor::guest;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

constexpr int recv_timeout_ms = 10'000;

/// A temporary workspace, removed with everything in it.
struct temp_dir {
  fs::path path;
  temp_dir() {
    std::string tmpl = (fs::temp_directory_path() / "agentvisor-guest-test-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  void write(const std::string& rel, std::string_view content) const {
    fs::create_directories((path / rel).parent_path());
    std::ofstream f(path / rel, std::ios::binary);
    f.write(content.data(), static_cast<std::streamsize>(content.size()));
  }
  std::string read(const std::string& rel) const {
    std::ifstream f(path / rel, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
};

/// A parsed JSON object (a tool's result) kept alive with its parser.
struct json_doc {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  explicit json_doc(const std::string& text) {
    auto err = parser.parse(text).get(root);
    REQUIRE_MESSAGE(!err, "result is not JSON: " << text);
  }
  simdjson::dom::element operator[](std::string_view key) const {
    simdjson::dom::element e;
    auto err = root.at_key(key).get(e);
    REQUIRE_MESSAGE(!err, "no \"" << key << "\" in result");
    return e;
  }
  std::string str(std::string_view key) const {
    std::string_view v;
    REQUIRE_FALSE((*this)[key].get_string().get(v));
    return std::string(v);
  }
  int64_t num(std::string_view key) const {
    int64_t v = 0;
    REQUIRE_FALSE((*this)[key].get_int64().get(v));
    return v;
  }
  bool boolean(std::string_view key) const {
    bool v = false;
    REQUIRE_FALSE((*this)[key].get_bool().get(v));
    return v;
  }
  bool is_null(std::string_view key) const { return (*this)[key].is_null(); }
};

/// `{"k":"v",...}` from pairs of already-JSON values.
std::string obj(std::initializer_list<std::pair<std::string_view, std::string>> members) {
  std::string out;
  json::writer w(out);
  w.begin_object();
  for (auto& [k, v] : members) w.key(k).raw(v);
  w.end_object();
  return out;
}

std::string jstr(std::string_view s) {
  std::string out;
  json::append_string(out, s);
  return out;
}

/// The result object of a successful result line (as call_raw returns it).
std::string ok_body(const std::string& line) {
  auto res = decode_guest_message(line);
  REQUIRE_MESSAGE(res, "bad line: " << (res ? "" : res.err().message));
  const auto& r = std::get<call_result>(*res);
  REQUIRE_MESSAGE(r.ok, "the call failed: " << to_string(r.error.code) << ": " << r.error.message);
  return r.result_json;
}

/// The running guest and our end of its channel.
class guest_proc {
public:
  /// `pre_exec` runs in the child before exec (limits, namespaces); if it
  /// returns false the child exits 77 and the test can skip.
  explicit guest_proc(const fs::path& workspace, std::vector<std::string> extra = {},
                      std::function<bool()> pre_exec = {}, uint32_t heartbeat_ms = 50) {
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    std::vector<std::string> args = {GUEST_PATH, "--workspace", workspace.string(),
                                     "--channel-fd", "3", "--heartbeat-ms",
                                     std::to_string(heartbeat_ms)};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      if (pre_exec && !pre_exec()) ::_exit(77);
      if (sv[1] == 3)
        ::fcntl(3, F_SETFD, 0);
      else
        ::dup2(sv[1], 3);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(sv[1]);
    fd_ = sv[0];
  }

  ~guest_proc() {
    if (fd_ >= 0) ::close(fd_);
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }

  guest_proc(const guest_proc&) = delete;
  guest_proc& operator=(const guest_proc&) = delete;

  pid_t pid() const { return pid_; }

  void send_raw(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      REQUIRE_MESSAGE(n > 0, "send: " << std::strerror(errno));
      data.remove_prefix(static_cast<std::size_t>(n));
    }
  }

  template <class T>
  void send(const T& msg) {
    send_raw(encode(msg));
  }

  /// The next line, or nothing on EOF. Fails the test after the timeout.
  std::optional<std::string> recv_line(int timeout_ms = recv_timeout_ms) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (true) {
      auto nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buf_.substr(0, nl + 1);
        buf_.erase(0, nl + 1);
        return line;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now()).count();
      REQUIRE_MESSAGE(left > 0, "no line from the guest within " << timeout_ms << " ms");
      pollfd p{fd_, POLLIN, 0};
      int r = ::poll(&p, 1, static_cast<int>(left));
      if (r < 0 && errno == EINTR) continue;
      REQUIRE_MESSAGE(r > 0, "no line from the guest within " << timeout_ms << " ms");
      char chunk[65536];
      ssize_t n = ::read(fd_, chunk, sizeof chunk);
      if (n == 0) return std::nullopt;
      REQUIRE_MESSAGE(n > 0, "read: " << std::strerror(errno));
      buf_.append(chunk, static_cast<std::size_t>(n));
    }
  }

  /// The next line that is not a heartbeat, as it came (newline included).
  std::string recv_raw() {
    while (true) {
      auto line = recv_line();
      REQUIRE_MESSAGE(line.has_value(), "the guest closed the channel");
      auto msg = decoder_.decode_guest(*line);
      if (msg && std::holds_alternative<heartbeat>(*msg)) {
        ++heartbeats_;
        continue;
      }
      return std::move(*line);
    }
  }

  /// Sends a call and returns its result line as it came (newline included).
  std::string call_raw(std::string tool, std::string args) {
    uint64_t id = next_id_++;
    send(call{id, std::move(tool), std::move(args)});
    auto line = recv_raw();
    auto r = decoder_.decode_guest(line);
    REQUIRE_MESSAGE(r, "bad line from the guest: " << (r ? "" : r.err().message));
    REQUIRE(std::holds_alternative<call_result>(*r));
    REQUIRE(std::get<call_result>(*r).id == id);
    return line;
  }

  /// The next message; heartbeats are counted and skipped unless asked for.
  guest_message recv(bool keep_heartbeats = false) {
    while (true) {
      auto line = recv_line();
      REQUIRE_MESSAGE(line.has_value(), "the guest closed the channel");
      auto msg = decoder_.decode_guest(*line);
      REQUIRE_MESSAGE(msg, "bad line from the guest: " << (msg ? "" : msg.err().message) << ": " << *line);
      if (std::holds_alternative<heartbeat>(*msg)) {
        ++heartbeats_;
        if (!keep_heartbeats) continue;
      }
      return std::move(*msg);
    }
  }

  template <class T>
  T expect() {
    auto msg = recv();
    REQUIRE_MESSAGE(std::holds_alternative<T>(msg), "unexpected message: " << encode(msg));
    return std::get<T>(std::move(msg));
  }

  /// hello, then ready.
  hello handshake() {
    auto h = expect<hello>();
    expect<ready>();
    return h;
  }

  /// Sends a call and returns its result.
  call_result call_tool(std::string tool, std::string args) {
    uint64_t id = next_id_++;
    send(call{id, std::move(tool), std::move(args)});
    auto r = expect<call_result>();
    REQUIRE(r.id == id);
    return r;
  }

  /// A call that must succeed; its result object.
  std::string ok(std::string tool, std::string args) {
    auto r = call_tool(tool, args);
    REQUIRE_MESSAGE(r.ok, tool << " failed: " << to_string(r.error.code) << ": " << r.error.message);
    return r.result_json;
  }

  /// A call that must fail; its error.
  tool_error fails(std::string tool, std::string args) {
    auto r = call_tool(tool, args);
    REQUIRE_MESSAGE(!r.ok, tool << " succeeded: " << r.result_json);
    return r.error;
  }

  /// The guest's exit status (waitpid form); fails the test after a timeout.
  int wait_exit(int timeout_ms = recv_timeout_ms) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (true) {
      int st = 0;
      pid_t r = ::waitpid(pid_, &st, WNOHANG);
      if (r == pid_) {
        exited_ = true;
        return st;
      }
      REQUIRE_MESSAGE(std::chrono::steady_clock::now() < deadline,
                      "the guest did not exit within " << timeout_ms << " ms");
      std::this_thread::sleep_for(5ms);
    }
  }

  void close_channel() {
    ::close(fd_);
    fd_ = -1;
  }

  uint64_t next_id() const { return next_id_; }
  int heartbeats() const { return heartbeats_; }

private:
  pid_t pid_ = -1;
  int fd_ = -1;
  bool exited_ = false;
  std::string buf_;
  decoder decoder_;
  uint64_t next_id_ = 1;
  int heartbeats_ = 0;
};

/// A started guest that has said hello and ready, on a fresh workspace.
struct fixture {
  temp_dir ws;
  guest_proc g;
  explicit fixture(std::vector<std::string> extra = {}, std::function<bool()> pre_exec = {})
    : g(ws.path, std::move(extra), std::move(pre_exec)) {
    g.handshake();
  }
};

bool process_gone(pid_t pid) {
  // Gone, or a zombie waiting for whoever adopted it.
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  if (!f) return true;
  std::string line;
  std::getline(f, line);
  auto close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z';
}

} // namespace

// --- start-up ------------------------------------------------------------------------

TEST_CASE("the guest says hello with protocol version 1, then ready") {
  temp_dir ws;
  guest_proc g(ws.path);
  auto h = g.expect<hello>();
  CHECK(h.version == protocol_version);
  CHECK(h.pid == g.pid());
  CHECK(h.guest.starts_with("agentvisor-guest "));
  g.expect<ready>();
}

TEST_CASE("a guest whose workspace does not exist says hello and exits 2 without ready") {
  temp_dir ws;
  guest_proc g(ws.path / "missing");
  g.expect<hello>();
  auto line = g.recv_line();
  CHECK_FALSE(line.has_value()); // EOF: no ready
  int st = g.wait_exit();
  REQUIRE(WIFEXITED(st));
  CHECK(WEXITSTATUS(st) == 2);
}

// --- read_file -----------------------------------------------------------------------

TEST_CASE("read_file returns a small text file with its size") {
  fixture f;
  f.ws.write("notes/a.txt", "hello \"world\"\n\tline 2\n");
  json_doc r(f.g.ok("read_file", obj({{"path", jstr("notes/a.txt")}})));
  CHECK(r.str("content") == "hello \"world\"\n\tline 2\n");
  CHECK(r.str("encoding") == "utf8");
  CHECK(r.num("size") == 22);
  CHECK(r.num("bytes") == 22);
  CHECK_FALSE(r.boolean("truncated"));
}

TEST_CASE("read_file returns bytes that are not UTF-8 as base64") {
  fixture f;
  f.ws.write("bin", std::string_view("\xff\xfe\x00\x01", 4));
  json_doc r(f.g.ok("read_file", obj({{"path", jstr("bin")}})));
  CHECK(r.str("encoding") == "base64");
  CHECK(r.str("content") == "//4AAQ==");
  CHECK(r.num("size") == 4);
}

TEST_CASE("read_file honours offset and max_bytes and says when it truncated") {
  fixture f;
  f.ws.write("digits", "0123456789");
  json_doc r(f.g.ok("read_file", obj({{"path", jstr("digits")}, {"offset", "3"}, {"max_bytes", "4"}})));
  CHECK(r.str("content") == "3456");
  CHECK(r.num("size") == 10);
  CHECK(r.boolean("truncated"));
  json_doc end(f.g.ok("read_file", obj({{"path", jstr("digits")}, {"offset", "8"}, {"max_bytes", "4"}})));
  CHECK(end.str("content") == "89");
  CHECK_FALSE(end.boolean("truncated"));
  json_doc past(f.g.ok("read_file", obj({{"path", jstr("digits")}, {"offset", "100"}})));
  CHECK(past.str("content") == "");
}

TEST_CASE("read_file returns at most 512 KiB a call, by default and when asked for more") {
  fixture f;
  f.ws.write("big.txt", std::string(3u << 20, 't'));
  for (auto args : {obj({{"path", jstr("big.txt")}}),
                    obj({{"path", jstr("big.txt")}, {"max_bytes", std::to_string(8u << 20)}})}) {
    json_doc r(f.g.ok("read_file", args));
    CHECK(r.num("bytes") == (512 << 10));
    CHECK(r.str("content").size() == (512u << 10));
    CHECK(r.num("size") == (3 << 20));
    CHECK(r.boolean("truncated"));
  }
}

TEST_CASE("read_file of 512 KiB of binary bytes sends base64 on one line under 1 MiB") {
  fixture f;
  std::string bytes;
  for (std::size_t i = 0; i < (1u << 20); ++i) bytes += static_cast<char>((i * 131 + 7) % 256);
  f.ws.write("blob", bytes);
  auto line = f.g.call_raw("read_file", obj({{"path", jstr("blob")}, {"max_bytes", std::to_string(1u << 20)}}));
  CHECK(line.size() - 1 <= max_guest_line_bytes);
  json_doc r(ok_body(line));
  CHECK(r.str("encoding") == "base64");
  CHECK(r.num("bytes") == (512 << 10));
  CHECK(r.boolean("truncated"));
}

TEST_CASE("read_file cut inside a multi-byte character stays text and says how many bytes it sent") {
  fixture f;
  f.ws.write("euro", "ab\xE2\x82\xAC" "cd"); // a b € c d
  json_doc r(f.g.ok("read_file", obj({{"path", jstr("euro")}, {"max_bytes", "4"}})));
  CHECK(r.str("encoding") == "utf8");
  CHECK(r.str("content") == "ab");
  CHECK(r.num("bytes") == 2);
  CHECK(r.boolean("truncated"));
}

TEST_CASE("read_file errors: missing file, directory, missing argument") {
  fixture f;
  fs::create_directory(f.ws.path / "dir");
  auto e = f.g.fails("read_file", obj({{"path", jstr("nope.txt")}}));
  CHECK(e.code == tool_errc::not_found);
  CHECK(e.message.find("nope.txt") != std::string::npos);
  CHECK(e.message.find("No such file or directory") != std::string::npos);
  CHECK(f.g.fails("read_file", obj({{"path", jstr("dir")}})).code == tool_errc::invalid_args);
  auto m = f.g.fails("read_file", "{}");
  CHECK(m.code == tool_errc::invalid_args);
  CHECK(m.message == "argument \"path\": missing");
  auto t = f.g.fails("read_file", obj({{"path", "7"}}));
  CHECK(t.message == "argument \"path\": expected a string");
  auto o = f.g.fails("read_file", obj({{"path", jstr("x")}, {"offset", "-1"}}));
  CHECK(o.message == "argument \"offset\": expected an unsigned integer");
}

TEST_CASE("read_file accepts an absolute path inside the workspace") {
  fixture f;
  f.ws.write("in.txt", "inside");
  json_doc r(f.g.ok("read_file", obj({{"path", jstr((f.ws.path / "in.txt").string())}})));
  CHECK(r.str("content") == "inside");
}

// --- write_file ----------------------------------------------------------------------

TEST_CASE("write_file creates the file and its parent directories") {
  fixture f;
  json_doc r(f.g.ok("write_file", obj({{"path", jstr("deep/er/new.txt")}, {"content", jstr("hi\n")}})));
  CHECK(r.num("bytes_written") == 3);
  CHECK(f.ws.read("deep/er/new.txt") == "hi\n");
}

TEST_CASE("write_file truncates by default and appends when asked") {
  fixture f;
  f.ws.write("log", "old content");
  f.g.ok("write_file", obj({{"path", jstr("log")}, {"content", jstr("one\n")}}));
  f.g.ok("write_file", obj({{"path", jstr("log")}, {"content", jstr("two\n")}, {"append", "true"}}));
  CHECK(f.ws.read("log") == "one\ntwo\n");
}

TEST_CASE("write_file decodes base64 content and refuses bad base64 or encodings") {
  fixture f;
  f.g.ok("write_file", obj({{"path", jstr("b")}, {"content", jstr("AP8=")}, {"encoding", jstr("base64")}}));
  CHECK(f.ws.read("b") == std::string("\0\xff", 2));
  auto e = f.g.fails("write_file", obj({{"path", jstr("b")}, {"content", jstr("**")}, {"encoding", jstr("base64")}}));
  CHECK(e.code == tool_errc::invalid_args);
  CHECK(e.message == "argument \"content\": not valid base64");
  auto enc = f.g.fails("write_file", obj({{"path", jstr("b")}, {"content", jstr("x")}, {"encoding", jstr("rot13")}}));
  CHECK(enc.message.starts_with("argument \"encoding\""));
}

// --- list_directory ------------------------------------------------------------------

TEST_CASE("list_directory lists entries sorted by name with type and size") {
  fixture f;
  f.ws.write("b.txt", "12345");
  f.ws.write("a/x", "");
  fs::create_symlink("b.txt", f.ws.path / "c-link");
  ::mkfifo((f.ws.path / "d-fifo").c_str(), 0644);
  json_doc r(f.g.ok("list_directory", obj({{"path", jstr(".")}})));
  simdjson::dom::array entries;
  REQUIRE_FALSE(r["entries"].get_array().get(entries));
  std::vector<std::string> names;
  std::vector<std::string> types;
  for (auto e : entries) {
    names.emplace_back(std::string_view(e["name"]));
    types.emplace_back(std::string_view(e["type"]));
    if (names.back() == "b.txt") CHECK(int64_t(e["size"]) == 5);
  }
  CHECK(names == std::vector<std::string>{"a", "b.txt", "c-link", "d-fifo"});
  CHECK(types == std::vector<std::string>{"dir", "file", "symlink", "other"});
  CHECK_FALSE(r.boolean("truncated"));
}

TEST_CASE("list_directory without a path lists the root, and a file is not_found") {
  fixture f;
  f.ws.write("only", "");
  json_doc r(f.g.ok("list_directory", "{}"));
  CHECK(simdjson::dom::array(r["entries"]).size() == 1);
  CHECK(f.g.fails("list_directory", obj({{"path", jstr("only")}})).code == tool_errc::not_found);
}

// --- search --------------------------------------------------------------------------

TEST_CASE("search finds a substring with path and line number, recursing directories") {
  fixture f;
  f.ws.write("src/main.c", "int main() {\n  return foo();\n}\n");
  f.ws.write("src/lib/foo.c", "int foo() { return 1; }\n");
  f.ws.write("README", "nothing here\n");
  json_doc r(f.g.ok("search", obj({{"pattern", jstr("foo")}, {"path", jstr(".")}})));
  simdjson::dom::array matches;
  REQUIRE_FALSE(r["matches"].get_array().get(matches));
  REQUIRE(matches.size() == 2);
  auto m0 = matches.at(0).value();
  auto m1 = matches.at(1).value();
  CHECK(std::string_view(m0["path"]) == "src/lib/foo.c");
  CHECK(int64_t(m0["line"]) == 1);
  CHECK(std::string_view(m1["path"]) == "src/main.c");
  CHECK(int64_t(m1["line"]) == 2);
  CHECK(std::string_view(m1["text"]) == "  return foo();");
  CHECK_FALSE(r.boolean("truncated"));
}

TEST_CASE("search in a subdirectory reports paths from the workspace root") {
  fixture f;
  f.ws.write("a/b/c.txt", "x\nneedle\n");
  json_doc r(f.g.ok("search", obj({{"pattern", jstr("needle")}, {"path", jstr("a/b/")}})));
  auto m = simdjson::dom::array(r["matches"]).at(0).value();
  CHECK(std::string_view(m["path"]) == "a/b/c.txt");
  CHECK(int64_t(m["line"]) == 2);
  json_doc one(f.g.ok("search", obj({{"pattern", jstr("needle")}, {"path", jstr("a/b/c.txt")}})));
  CHECK(simdjson::dom::array(one["matches"]).size() == 1);
}

TEST_CASE("search with regex=true uses ECMAScript regexes and refuses a bad one") {
  fixture f;
  f.ws.write("t.txt", "apple 12\nbanana\ncherry 345\n");
  json_doc r(f.g.ok("search", obj({{"pattern", jstr("[a-z]+ \\d{3}$")}, {"path", jstr(".")}, {"regex", "true"}})));
  auto matches = simdjson::dom::array(r["matches"]);
  REQUIRE(matches.size() == 1);
  CHECK(int64_t(matches.at(0).value()["line"]) == 3);
  // The same pattern as a plain substring matches nothing.
  json_doc plain(f.g.ok("search", obj({{"pattern", jstr("[a-z]+")}, {"path", jstr(".")}})));
  CHECK(simdjson::dom::array(plain["matches"]).size() == 0);
  auto e = f.g.fails("search", obj({{"pattern", jstr("([unclosed")}, {"path", jstr(".")}, {"regex", "true"}}));
  CHECK(e.code == tool_errc::invalid_args);
  CHECK(e.message.starts_with("argument \"pattern\": not a valid regex"));
}

TEST_CASE("search skips binary files and never follows symlinks") {
  fixture f;
  f.ws.write("text", "secret\n");
  f.ws.write("binary", std::string("secret\0\x01", 8));
  fs::create_symlink(f.ws.path / "text", f.ws.path / "link-to-text");
  fs::create_symlink("/etc", f.ws.path / "etc");
  json_doc r(f.g.ok("search", obj({{"pattern", jstr("secret")}})));
  auto matches = simdjson::dom::array(r["matches"]);
  REQUIRE(matches.size() == 1);
  CHECK(std::string_view(matches.at(0).value()["path"]) == "text");
  json_doc root(f.g.ok("search", obj({{"pattern", jstr("root")}})));
  CHECK(simdjson::dom::array(root["matches"]).size() == 0);
}

TEST_CASE("search strips CR from CRLF lines and cuts long lines to 1 KiB at a character boundary") {
  fixture f;
  std::string longline = "needle" + std::string(1017, 'x') + "\xE2\x82\xAC" + "tail\n";
  f.ws.write("crlf.txt", "first\r\nneedle end\r\n" + longline);
  json_doc r(f.g.ok("search", obj({{"pattern", jstr("end$")}, {"regex", "true"}})));
  auto matches = simdjson::dom::array(r["matches"]);
  REQUIRE(matches.size() == 1);
  CHECK(std::string_view(matches.at(0).value()["text"]) == "needle end");
  json_doc l(f.g.ok("search", obj({{"pattern", jstr("needle")}})));
  auto lm = simdjson::dom::array(l["matches"]);
  REQUIRE(lm.size() == 2);
  CHECK(std::string_view(lm.at(1).value()["text"]) == "needle" + std::string(1017, 'x'));
}

TEST_CASE("search stops at max_results and says it truncated") {
  fixture f;
  std::string many;
  for (int i = 0; i < 50; ++i) many += "hit\n";
  f.ws.write("many", many);
  json_doc r(f.g.ok("search", obj({{"pattern", jstr("hit")}, {"max_results", "10"}})));
  CHECK(simdjson::dom::array(r["matches"]).size() == 10);
  CHECK(r.boolean("truncated"));
  CHECK(f.g.fails("search", obj({{"pattern", jstr("")}})).code == tool_errc::invalid_args);
}

// --- confinement ---------------------------------------------------------------------

TEST_CASE("search stops adding matches before its result passes 768 KiB and says it truncated") {
  fixture f;
  std::string text;
  for (int i = 0; i < 3000; ++i) text += std::string(1000, 'a') + " needle\n";
  f.ws.write("many.txt", text);
  auto line = f.g.call_raw("search", obj({{"pattern", jstr("needle")}, {"max_results", "10000"}}));
  CHECK(line.size() - 1 <= max_guest_line_bytes);
  const auto body = ok_body(line);
  CHECK(body.size() <= (768u << 10) + 32);
  json_doc r(body);
  CHECK(r.boolean("truncated"));
  simdjson::dom::array matches;
  REQUIRE_FALSE(r["matches"].get_array().get(matches));
  CHECK(matches.size() > 500);
  CHECK(matches.size() < 3000);
}

TEST_CASE("list_directory stops adding entries before its result passes 768 KiB and says it truncated") {
  fixture f;
  // Names of control characters escape to six bytes per byte.
  for (int i = 0; i < 1000; ++i) {
    auto name = std::string(200, '\x01') + std::to_string(i);
    std::ofstream((f.ws.path / name).string()) << "x";
  }
  auto line = f.g.call_raw("list_directory", "{}");
  CHECK(line.size() - 1 <= max_guest_line_bytes);
  const auto body = ok_body(line);
  CHECK(body.size() <= (768u << 10) + 32);
  json_doc r(body);
  CHECK(r.boolean("truncated"));
  simdjson::dom::array entries;
  REQUIRE_FALSE(r["entries"].get_array().get(entries));
  CHECK(entries.size() > 100);
  CHECK(entries.size() < 1000);
}

TEST_CASE("an error that quotes a huge tool name is cut to 4 KiB, and the guest carries on") {
  fixture f;
  auto line = f.g.call_raw(std::string(500000, 'T'), "{}");
  CHECK(line.size() < max_message_bytes + 200);
  auto res = decode_guest_message(line);
  REQUIRE(res);
  const auto& r = std::get<call_result>(*res);
  CHECK(r.error.code == tool_errc::unknown_tool);
  CHECK(r.error.message.starts_with("unknown tool \"TTT"));
  CHECK(r.error.message.ends_with("..."));
  f.g.ok("list_directory", "{}");
}

TEST_CASE("paths that leave the workspace are refused with path_escape") {
  fixture f;
  fs::create_symlink("/etc", f.ws.path / "etc");
  fs::create_symlink("..", f.ws.path / "up");
  fs::create_symlink("/etc/passwd", f.ws.path / "passwd");
  fs::create_directory(f.ws.path / "sub");

  auto escape = [&](std::string tool, std::string args) {
    CAPTURE(tool);
    CAPTURE(args);
    auto e = f.g.fails(tool, args);
    CHECK(to_string(e.code) == "path_escape");
  };
  escape("read_file", obj({{"path", jstr("../x")}}));
  escape("read_file", obj({{"path", jstr("sub/../../x")}}));
  escape("read_file", obj({{"path", jstr("/etc/passwd")}}));
  escape("read_file", obj({{"path", jstr("etc/passwd")}}));
  escape("read_file", obj({{"path", jstr("passwd")}}));
  escape("list_directory", obj({{"path", jstr("up")}}));
  escape("list_directory", obj({{"path", jstr("etc")}}));
  escape("search", obj({{"pattern", jstr("root")}, {"path", jstr("etc")}}));
  escape("write_file", obj({{"path", jstr("../evil")}, {"content", jstr("x")}}));
  escape("write_file", obj({{"path", jstr("up/evil")}, {"content", jstr("x")}}));
  escape("write_file", obj({{"path", jstr("/tmp/evil-agentvisor")}, {"content", jstr("x")}}));
  escape("write_file", obj({{"path", jstr("etc/evil/x")}, {"content", jstr("x")}}));
  escape("execute_command", obj({{"argv", R"(["true"])"}, {"cwd", jstr("..")}}));
  CHECK_FALSE(fs::exists(f.ws.path.parent_path() / "evil"));
  CHECK_FALSE(fs::exists("/tmp/evil-agentvisor"));
  // A workspace-prefix lookalike is outside too.
  escape("read_file", obj({{"path", jstr(f.ws.path.string() + "-other/x")}}));
}

TEST_CASE("symlinks that stay inside the workspace are followed") {
  fixture f;
  f.ws.write("real/file.txt", "ok");
  fs::create_symlink("real", f.ws.path / "alias");
  fs::create_symlink("../real/file.txt", f.ws.path / "real/../alias-file");
  json_doc r(f.g.ok("read_file", obj({{"path", jstr("alias/file.txt")}})));
  CHECK(r.str("content") == "ok");
  json_doc r2(f.g.ok("read_file", obj({{"path", jstr("real/../alias/./file.txt")}})));
  CHECK(r2.str("content") == "ok");
}

// --- execute_command -----------------------------------------------------------------

TEST_CASE("execute_command reports exit code, stdout and stderr") {
  fixture f;
  json_doc r(f.g.ok("execute_command",
                    obj({{"argv", R"(["sh","-c","echo out; echo err >&2; exit 3"])"}})));
  CHECK(r.num("exit_code") == 3);
  CHECK(r.is_null("signal"));
  CHECK(r.str("stdout") == "out\n");
  CHECK(r.str("stderr") == "err\n");
  CHECK_FALSE(r.boolean("timed_out"));
  CHECK_FALSE(r.boolean("truncated"));
}

TEST_CASE("execute_command reports the signal that killed the command") {
  fixture f;
  json_doc r(f.g.ok("execute_command", obj({{"argv", R"(["sh","-c","kill -TERM $$"])"}})));
  CHECK(r.is_null("exit_code"));
  CHECK(r.num("signal") == SIGTERM);
}

TEST_CASE("execute_command kills a command that outlives timeout_ms, with its process group") {
  fixture f;
  auto t0 = std::chrono::steady_clock::now();
  json_doc r(f.g.ok("execute_command",
                    obj({{"argv", R"(["sh","-c","sleep 10 & echo $! > bg.pid; sleep 10"])"},
                         {"timeout_ms", "100"}})));
  auto took = std::chrono::steady_clock::now() - t0;
  CHECK(r.boolean("timed_out"));
  CHECK(r.num("signal") == SIGKILL);
  CHECK(took < 5s);
  auto bg = std::stoi(f.ws.read("bg.pid"));
  for (int i = 0; i < 200 && !process_gone(bg); ++i) std::this_thread::sleep_for(10ms);
  CHECK(process_gone(bg));
}

TEST_CASE("execute_command keeps 256 KiB per stream and says it truncated the rest") {
  fixture f;
  json_doc r(f.g.ok("execute_command",
                    obj({{"argv", R"(["sh","-c","head -c 3000000 /dev/zero | tr '\\0' a; head -c 3000000 /dev/zero | tr '\\0' b >&2"])"}})));
  CHECK(r.num("exit_code") == 0);
  CHECK(r.boolean("truncated"));
  CHECK(r.str("stdout") == std::string(256u << 10, 'a'));
  CHECK(r.str("stderr") == std::string(256u << 10, 'b'));
}

TEST_CASE("execute_command cuts output dense in control characters so its result fits one 1 MiB line") {
  fixture f;
  // NUL bytes escape to \u0000 (6 bytes): 256 KiB of them would be 1.5 MiB.
  auto line = f.g.call_raw("execute_command",
                           obj({{"argv", R"(["sh","-c","head -c 300000 /dev/zero; head -c 300000 /dev/zero >&2"])"}}));
  CHECK(line.size() - 1 <= max_guest_line_bytes);
  json_doc r(ok_body(line));
  CHECK(r.boolean("truncated"));
  // As many whole characters as fit 384 KiB of JSON string: (393216 - 2) / 6.
  CHECK(r.str("stdout") == std::string(65535, '\0'));
  CHECK(r.str("stderr") == std::string(65535, '\0'));
}

TEST_CASE("execute_command runs in cwd and feeds stdin") {
  fixture f;
  fs::create_directory(f.ws.path / "work");
  json_doc r(f.g.ok("execute_command", obj({{"argv", R"(["sh","-c","pwd; cat"])"},
                                            {"cwd", jstr("work")}, {"stdin", jstr("from stdin")}})));
  CHECK(r.str("stdout") == (f.ws.path / "work").string() + "\nfrom stdin");
  json_doc root(f.g.ok("execute_command", obj({{"argv", R"(["pwd"])"}})));
  CHECK(root.str("stdout") == f.ws.path.string() + "\n");
}

TEST_CASE("execute_command refuses bad argv and reports programs that cannot start") {
  fixture f;
  auto e = f.g.fails("execute_command", obj({{"argv", R"(["/no/such/program"])"}}));
  CHECK(e.code == tool_errc::exec_failed);
  CHECK(e.message.find("/no/such/program") != std::string::npos);
  CHECK(f.g.fails("execute_command", obj({{"argv", "[]"}})).code == tool_errc::invalid_args);
  CHECK(f.g.fails("execute_command", obj({{"argv", R"(["ls",1])"}})).code == tool_errc::invalid_args);
  CHECK(f.g.fails("execute_command", "{}").message == "argument \"argv\": missing");
  CHECK(f.g.fails("execute_command", obj({{"argv", R"(["true"])"}, {"timeout_ms", "0"}})).code ==
        tool_errc::invalid_args);
}

TEST_CASE("the guest answers calls and sends heartbeats while a long command runs") {
  fixture f;
  f.ws.write("x", "quick");
  uint64_t slow = f.g.next_id();
  f.g.send(call{slow, "execute_command", obj({{"argv", R"(["sleep","0.6"])"}})});
  // Other calls are answered while the command runs.
  json_doc r(f.g.ok("read_file", obj({{"path", jstr("x")}})));
  CHECK(r.str("content") == "quick");
  int before = f.g.heartbeats();
  auto res = f.g.expect<call_result>();
  CHECK(res.id == slow);
  CHECK(res.ok);
  CHECK(f.g.heartbeats() - before >= 5); // 600 ms at one per 50 ms
}

TEST_CASE("heartbeats count up and carry memory_bytes from --memory-file") {
  temp_dir ws;
  ws.write("mem", "123456789\n");
  guest_proc g(ws.path, {"--memory-file", (ws.path / "mem").string()});
  g.handshake();
  uint64_t last_seq = 0;
  for (int i = 0; i < 3; ++i) {
    auto msg = g.recv(true);
    REQUIRE(std::holds_alternative<heartbeat>(msg));
    auto hb = std::get<heartbeat>(msg);
    CHECK(hb.seq == last_seq + 1);
    CHECK(hb.memory_bytes == 123456789u);
    last_seq = hb.seq;
  }
}

TEST_CASE("without --memory-file heartbeats sum resident memory from /proc") {
  temp_dir ws;
  guest_proc g(ws.path);
  g.handshake();
  auto msg = g.recv(true);
  REQUIRE(std::holds_alternative<heartbeat>(msg));
  CHECK(std::get<heartbeat>(msg).memory_bytes > 0);
}

// --- protocol errors -----------------------------------------------------------------

TEST_CASE("a malformed line gets protocol_error and the guest still answers the next call") {
  fixture f;
  f.g.send_raw("this is not json\n");
  CHECK(f.g.expect<protocol_error>().message.starts_with("line is not valid JSON: "));
  f.g.send_raw("{\"type\":\"call\",\"id\":\"seven\",\"tool\":\"read_file\"}\n");
  CHECK(f.g.expect<protocol_error>().message == "call.id: expected an unsigned integer");
  f.g.send_raw("{\"type\":\"teleport\"}\n");
  CHECK(f.g.expect<protocol_error>().message == "unknown message type \"teleport\"");
  f.g.ok("list_directory", "{}");
}

TEST_CASE("a line over 1 MiB gets protocol_error, is skipped, and the guest carries on") {
  fixture f;
  std::string huge = "{\"type\":\"call\",\"id\":1,\"tool\":\"write_file\",\"args\":{\"path\":\"big\",\"content\":\"";
  huge += std::string(max_line_bytes + 10, 'z');
  huge += "\"}}\n";
  f.g.send_raw(huge);
  auto p = f.g.expect<protocol_error>();
  CHECK(p.message.find("longer than 1048576 bytes") != std::string::npos);
  f.g.ok("list_directory", "{}");
  CHECK_FALSE(fs::exists(f.ws.path / "big"));
}

TEST_CASE("an unknown tool is reported as unknown_tool") {
  fixture f;
  auto e = f.g.fails("teleport", "{}");
  CHECK(e.code == tool_errc::unknown_tool);
  CHECK(e.message == "unknown tool \"teleport\"");
}

TEST_CASE("calls split across writes and batched in one write are all answered") {
  fixture f;
  std::string two = encode(call{100, "list_directory", "{}"}) + encode(call{101, "list_directory", "{}"});
  f.g.send_raw(two.substr(0, 10));
  std::this_thread::sleep_for(20ms);
  f.g.send_raw(two.substr(10));
  CHECK(f.g.expect<call_result>().id == 100);
  CHECK(f.g.expect<call_result>().id == 101);
}

// --- shutdown and EOF ----------------------------------------------------------------

TEST_CASE("shutdown kills running commands, says bye and exits 0") {
  fixture f;
  f.g.send(call{50, "execute_command", obj({{"argv", R"(["sh","-c","echo $$ > sh.pid; exec sleep 30"])"}})});
  for (int i = 0; i < 500 && !fs::exists(f.ws.path / "sh.pid"); ++i) std::this_thread::sleep_for(5ms);
  std::this_thread::sleep_for(20ms);
  f.g.send(guest::shutdown{});
  f.g.expect<bye>();
  int st = f.g.wait_exit();
  REQUIRE(WIFEXITED(st));
  CHECK(WEXITSTATUS(st) == 0);
  auto pid = std::stoi(f.ws.read("sh.pid"));
  for (int i = 0; i < 200 && !process_gone(pid); ++i) std::this_thread::sleep_for(10ms);
  CHECK(process_gone(pid));
}

TEST_CASE("EOF on the channel makes the guest exit 0") {
  fixture f;
  f.g.close_channel();
  int st = f.g.wait_exit();
  REQUIRE(WIFEXITED(st));
  CHECK(WEXITSTATUS(st) == 0);
}

TEST_CASE("SIGTERM is a shutdown: bye and exit 0") {
  fixture f;
  ::kill(f.g.pid(), SIGTERM);
  f.g.expect<bye>();
  int st = f.g.wait_exit();
  REQUIRE(WIFEXITED(st));
  CHECK(WEXITSTATUS(st) == 0);
}

// --- faults --------------------------------------------------------------------------

TEST_CASE("faults are refused without --allow-faults") {
  fixture f;
  fault with_id;
  with_id.kind = fault_kind::exit;
  with_id.code = 7;
  with_id.id = 77;
  f.g.send(with_id);
  auto r = f.g.expect<call_result>();
  CHECK(r.id == 77);
  CHECK_FALSE(r.ok);
  CHECK(r.error.code == tool_errc::faults_disabled);
  fault no_id;
  no_id.kind = fault_kind::abort;
  f.g.send(no_id);
  CHECK(f.g.expect<protocol_error>().message.find("faults are disabled") != std::string::npos);
  fault garbage;
  garbage.kind = fault_kind::garbage;
  garbage.what = garbage_kind::malformed;
  garbage.id = 78;
  f.g.send(garbage);
  auto g = f.g.expect<call_result>(); // a good line, not the garbage
  CHECK(g.id == 78);
  CHECK(g.error.code == tool_errc::faults_disabled);
  f.g.ok("list_directory", "{}"); // still alive
}

TEST_CASE("garbage faults make the guest write each kind of bad line, report it, and carry on") {
  fixture f({"--allow-faults"});
  uint64_t id = 1000;
  for (auto what : {garbage_kind::malformed, garbage_kind::oversized, garbage_kind::unknown_type,
                    garbage_kind::orphan_result}) {
    CAPTURE(to_string(what));
    fault x;
    x.kind = fault_kind::garbage;
    x.what = what;
    x.id = ++id;
    f.g.send(x);
    auto bad = f.g.recv_raw();
    REQUIRE(bad.back() == '\n');
    const std::size_t bytes = bad.size() - 1;
    auto decoded = decode_guest_message(bad);
    switch (what) {
      case garbage_kind::malformed:
        REQUIRE_FALSE(decoded);
        CHECK(decoded.err().message.starts_with("line is not valid JSON: "));
        break;
      case garbage_kind::oversized:
        CHECK(bytes == max_guest_line_bytes + 1);
        REQUIRE_FALSE(decoded);
        CHECK(decoded.err().message == "line is longer than 1048576 bytes");
        // But for its size it is a heartbeat: only the length is wrong.
        CHECK(bad.starts_with("{\"type\":\"heartbeat\","));
        break;
      case garbage_kind::unknown_type:
        REQUIRE_FALSE(decoded);
        CHECK(decoded.err().message == "unknown message type \"teleport\"");
        break;
      case garbage_kind::orphan_result:
        REQUIRE(decoded);
        CHECK(std::get<call_result>(*decoded).id == garbage_result_id);
        break;
    }
    auto report = f.g.expect<call_result>();
    CHECK(report.id == id);
    REQUIRE(report.ok);
    json_doc d(report.result_json);
    CHECK(d.str("kind") == "garbage");
    CHECK(d.str("what") == to_string(what));
    CHECK(d.num("bytes") == static_cast<int64_t>(bytes));
  }
  f.g.ok("list_directory", "{}"); // the guest itself is fine
}

TEST_CASE("fault exit with code 7 makes the guest exit with status 7 when faults are allowed") {
  fixture f({"--allow-faults"});
  fault x;
  x.kind = fault_kind::exit;
  x.code = 7;
  f.g.send(x);
  int st = f.g.wait_exit();
  REQUIRE(WIFEXITED(st));
  CHECK(WEXITSTATUS(st) == 7);
}

TEST_CASE("a cpu_hog fault spins a child for ms and reports when it ends") {
  fixture f({"--allow-faults"});
  fault x;
  x.kind = fault_kind::cpu_hog;
  x.ms = 150;
  x.id = 5;
  f.g.send(x);
  // The loop stays responsive meanwhile.
  f.g.ok("list_directory", "{}");
  auto r = f.g.expect<call_result>();
  CHECK(r.id == 5);
  REQUIRE(r.ok);
  json_doc d(r.result_json);
  CHECK(d.str("kind") == "cpu_hog");
  CHECK(d.num("ms") >= 150);
  CHECK(d.num("exit_code") == 0);
}

TEST_CASE("as PID 1 of its own pid namespace the guest says pid 1 and exits with a fault's code") {
  temp_dir ws;
  // The child unshares a pid namespace and forks: the grandchild, PID 1 in
  // it, becomes the guest; the child only waits and passes the status on.
  guest_proc g(ws.path, {"--allow-faults"}, [] {
    if (::unshare(CLONE_NEWPID) != 0) return false;
    pid_t init = ::fork();
    if (init < 0) return false;
    if (init == 0) return true;
    ::close_range(3, ~0U, 0);
    int st = 0;
    while (::waitpid(init, &st, 0) < 0 && errno == EINTR) {
    }
    ::_exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
  });
  auto first = g.recv_line();
  if (!first) {
    int st = g.wait_exit();
    REQUIRE(WIFEXITED(st));
    REQUIRE(WEXITSTATUS(st) == 77);
    MESSAGE("skipped: cannot create a pid namespace (needs root)");
    return;
  }
  auto h = decode_guest_message(*first);
  REQUIRE(h);
  CHECK(std::get<hello>(*h).pid == 1);
  g.expect<ready>();
  // A command that leaves an orphan behind still gets its result.
  json_doc r(g.ok("execute_command", obj({{"argv", R"(["sh","-c","sleep 0.05 & echo $$"])"}})));
  CHECK(r.num("exit_code") == 0);
  fault x;
  x.kind = fault_kind::exit;
  x.code = 7;
  g.send(x);
  int st = g.wait_exit();
  REQUIRE(WIFEXITED(st));
  CHECK(WEXITSTATUS(st) == 7);
}

TEST_CASE("fault abort kills the guest with SIGABRT when faults are allowed") {
  fixture f({"--allow-faults"}, [] {
    rlimit no_core{0, 0};
    return ::setrlimit(RLIMIT_CORE, &no_core) == 0;
  });
  fault x;
  x.kind = fault_kind::abort;
  f.g.send(x);
  int st = f.g.wait_exit();
  REQUIRE(WIFSIGNALED(st));
  CHECK(WTERMSIG(st) == SIGABRT);
}

TEST_CASE("a disk_fill fault writes until the file system is full and reports the bytes") {
  // A private 2 MiB tmpfs over the workspace, in a mount namespace of the
  // guest's own: nothing outside the test sees it.
  temp_dir ws;
  std::string root = ws.path.string();
  guest_proc g(ws.path, {"--allow-faults"}, [root] {
    return ::unshare(CLONE_NEWNS) == 0 &&
           ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0 &&
           ::mount("tmpfs", root.c_str(), "tmpfs", 0, "size=2m") == 0;
  });
  auto first = g.recv_line();
  if (!first) {
    int st = g.wait_exit();
    REQUIRE(WIFEXITED(st));
    REQUIRE(WEXITSTATUS(st) == 77);
    MESSAGE("skipped: cannot mount a tmpfs in a new mount namespace (needs root)");
    return;
  }
  g.expect<ready>();
  fault x;
  x.kind = fault_kind::disk_fill;
  x.id = 3;
  g.send(x);
  auto r = g.expect<call_result>();
  REQUIRE(r.ok);
  json_doc d(r.result_json);
  CHECK(d.str("kind") == "disk_fill");
  CHECK(d.str("path") == ".agentvisor-disk-fill");
  CHECK(d.num("bytes") > 1'000'000);
  CHECK(d.num("bytes") <= 2 * 1024 * 1024);
  CHECK(d.str("error") == std::strerror(ENOSPC));
  // The guest still works (reads need no space).
  g.ok("list_directory", "{}");
}

TEST_CASE("a fork_bomb fault forks until EAGAIN, reports the count and kills the children") {
  // As nobody with RLIMIT_NPROC 40, so the bomb stops early.
  temp_dir ws;
  REQUIRE(::chown(ws.path.c_str(), 65534, 65534) == 0);
  guest_proc g(ws.path, {"--allow-faults"}, [] {
    rlimit nproc{40, 40};
    return ::setrlimit(RLIMIT_NPROC, &nproc) == 0 && ::setgroups(0, nullptr) == 0 &&
           ::setgid(65534) == 0 && ::setuid(65534) == 0;
  });
  auto first = g.recv_line();
  if (!first) {
    int st = g.wait_exit();
    REQUIRE(WIFEXITED(st));
    REQUIRE(WEXITSTATUS(st) == 77);
    MESSAGE("skipped: cannot switch to uid 65534 (needs root)");
    return;
  }
  g.expect<ready>();
  fault x;
  x.kind = fault_kind::fork_bomb;
  x.id = 4;
  g.send(x);
  auto r = g.expect<call_result>();
  REQUIRE(r.ok);
  json_doc d(r.result_json);
  CHECK(d.str("kind") == "fork_bomb");
  CHECK(d.num("forked") > 0);
  CHECK(d.num("forked") < 40);
  CHECK(d.str("error") == std::strerror(EAGAIN));
  // The report comes once its children are killed and reaped, so the
  // process limit has room again at once.
  json_doc e(g.ok("execute_command", obj({{"argv", R"(["true"])"}})));
  CHECK(e.num("exit_code") == 0);
}

TEST_CASE("commands inherit no descriptor beyond stdin, stdout and stderr") {
  fixture f;
  json_doc r(f.g.ok("execute_command", obj({{"argv", R"(["ls","/proc/self/fd"])"}})));
  // 3 is ls's own handle on the directory it lists.
  CHECK(r.str("stdout") == "0\n1\n2\n3\n");
}

// --- speed ---------------------------------------------------------------------------

TEST_CASE("a read_file round trip on a small file takes well under a millisecond") {
  fixture f;
  f.ws.write("small.txt", "a small file\n");
  std::string line = encode(call{1, "read_file", obj({{"path", jstr("small.txt")}})});
  constexpr int n = 2000;
  for (int i = 0; i < 100; ++i) { // warm up
    f.g.send_raw(line);
    f.g.expect<call_result>();
  }
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) {
    f.g.send_raw(line);
    auto r = f.g.expect<call_result>();
    REQUIRE(r.ok);
  }
  auto per = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0) / n;
  MESSAGE("read_file round trip: " << per.count() << " us on average over " << n << " calls");
  CHECK(per.count() < 1000.0);
}

// Tests of the api actor (actors/api.hpp): a real actor_system, io_thread
// and api actor on 127.0.0.1 port 0, driven by the real curl binary and by a
// raw TCP client (for malformed, oversized, pipelined and slow input). The
// spawner and governor are stand-ins defined here that answer the protocol
// with canned agent_info values and errc errors, so every status is reached
// without starting a machine. Every test ends with the api's down_msg and
// io.stop() reporting 0 open handles.

#include "api.hpp"

#include "agentvisor/io.hpp"
#include "agentvisor/messages.hpp"

#include <caf/all.hpp>

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

using namespace agentvisor;
using namespace std::chrono_literals;

namespace {

constexpr std::string_view test_token = "t0ken-for-tests";

using wake_atom = caf::atom_constant<caf::atom("wake")>;

// --- Stand-ins ---------------------------------------------------------------------

agent_info sample_agent() {
  agent_info a;
  a.id = "a-1";
  a.name = "worker";
  a.state = vm_state::ready;
  a.backend = "sandbox";
  a.memory_bytes = 1 << 20;
  a.memory_limit_bytes = 256 << 20;
  a.pids_limit = 128;
  a.pid = 4242;
  return a;
}

struct standin_spawner_state {
  /// "slow" calls, answered on wake_atom.
  std::vector<caf::typed_response_promise<tool_result>> slow;
  /// "hang" calls, never answered.
  std::vector<caf::typed_response_promise<tool_result>> hung;
  static inline const char* name = "standin_spawner";
};

/// Speaks the spawner protocol with canned answers: agent names and tool
/// names pick the error to return.
caf::behavior standin_spawner(caf::stateful_actor<standin_spawner_state>* self) {
  return {
    // The api observes its spawner from the start (GET /v1/events).
    [](observe_atom, caf::actor&) {},
    [](start_atom, agent_request& r) -> caf::result<agent_info> {
      if (r.name == "huge")
        return make_error(errc::over_budget, "huge needs more memory than the host budget");
      if (r.name == "queued")
        return make_error(errc::budget_timeout, "queued waited 5000 ms for room");
      if (r.name == "broken")
        return make_error(errc::spawn_failed, "broken: the backend could not start it");
      auto a = sample_agent();
      a.name = r.name;
      a.memory_limit_bytes = (r.memory_mb > 0 ? r.memory_mb : 256) << 20;
      a.restart = r.restart_set ? r.restart : restart_type::permanent;
      // As the spawner: a name it does not run is refused, else shown.
      if (r.backend == "firecracker")
        return make_error(errc::bad_request,
                          "backend \"firecracker\" is not enabled here (enabled: qemu, sandbox)");
      if (!r.backend.empty())
        a.backend = r.backend;
      return a;
    },
    [](list_atom) { return std::vector<agent_info>{sample_agent()}; },
    [](get_atom, const std::string& id) -> caf::result<agent_info> {
      if (id != "a-1")
        return make_error(errc::not_found, "no agent " + id);
      return sample_agent();
    },
    [](stop_atom, const std::string& id) -> caf::result<agent_info> {
      if (id != "a-1")
        return make_error(errc::not_found, "no agent " + id);
      auto a = sample_agent();
      a.state = vm_state::stopped;
      a.last_down_reason = "stopped";
      return a;
    },
    [self](call_atom, const std::string& id, tool_call& c) -> caf::result<tool_result> {
      if (id != "a-1")
        return make_error(errc::not_found, "no agent " + id);
      if (c.tool == "fail")
        return tool_result{false, "{}", "path_escape", "path escapes the workspace", 1};
      if (c.tool == "down")
        return make_error(errc::agent_down, "a-1 went down: oom: OOM kill at limit");
      if (c.tool == "drain")
        return make_error(errc::draining, "a-1 is shutting down");
      if (c.tool == "timeout")
        return make_error(errc::timeout, "a-1 did not answer in 30000 ms");
      if (c.tool == "slow" || c.tool == "hang") {
        auto rp = self->make_response_promise<tool_result>();
        if (c.tool == "slow") {
          self->state.slow.push_back(rp);
          self->delayed_send(self, 300ms, wake_atom::value);
        } else {
          self->state.hung.push_back(rp);
        }
        return rp;
      }
      // echo: what arrived, so tests see the query and body as parsed.
      std::string out = "{\"args\":" + c.args_json + ",\"retryable\":"
                        + (c.retryable ? "true" : "false")
                        + ",\"timeout_ms\":" + std::to_string(c.timeout_ms) + "}";
      return tool_result{true, out, "", "", 1};
    },
    [self](wake_atom) {
      for (auto& rp : self->state.slow)
        rp.deliver(tool_result{true, "\"slept\"", "", "", 1});
      self->state.slow.clear();
    },
  };
}

caf::behavior standin_governor(caf::event_based_actor*) {
  return {
    [](get_atom) {
      governor_state g;
      g.total = budget{8ull << 30, 4, 64, 32768};
      g.used = budget{256ull << 20, 1, 1, 128};
      g.queued = 2;
      g.granted_total = 5;
      g.denied_total = 1;
      return g;
    },
  };
}

// --- The system under test ---------------------------------------------------------

struct fixture {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  io::io_thread io;
  caf::actor spawner;
  caf::actor governor;
  caf::actor api;
  uint16_t port = 0;

  explicit fixture(const std::function<void(api_options&)>& tweak = {}) {
    register_messages(cfg);
    sys = std::make_unique<caf::actor_system>(cfg);
    REQUIRE(io.start());
    spawner = sys->spawn(standin_spawner);
    governor = sys->spawn(standin_governor);
    api_options opts;
    opts.listen = {"127.0.0.1", 0};
    opts.token = std::string{test_token};
    opts.max_body_bytes = 4096;
    opts.idle_timeout = 1s;
    opts.request_timeout = 1s;
    opts.call_margin = 200ms;
    if (tweak)
      tweak(opts);
    api = spawn_api(*sys, io, opts, spawner, governor);
    caf::scoped_actor self{*sys};
    self->request(api, caf::duration{10s}, get_atom::value)
      .receive([&](uint16_t p) { port = p; },
               [&](caf::error& e) { FAIL("api did not listen: " << caf::to_string(e)); });
    REQUIRE(port != 0);
  }

  ~fixture() {
    {
      caf::scoped_actor self{*sys};
      self->monitor(api);
      self->send_exit(api, caf::exit_reason::user_shutdown);
      bool down = false;
      self->receive([&](caf::down_msg&) { down = true; }, caf::after(10s) >> [] {});
      CHECK(down);
      self->send_exit(spawner, caf::exit_reason::kill);
      self->send_exit(governor, caf::exit_reason::kill);
    }
    auto report = io.stop();
    CHECK(report.open_handles == 0);
  }

  fixture(const fixture&) = delete;
  fixture& operator=(const fixture&) = delete;
};

// --- curl ----------------------------------------------------------------------------

struct reply {
  int status = 0;
  std::string body;
};

/// Runs `curl ARGS URL` and splits off the status that -w appends.
reply run_curl(const std::string& args, const std::string& write_out = "\\n%{http_code}") {
  auto cmd = "curl -s -S --max-time 10 -o - -w '" + write_out + "' " + args + " 2>&1";
  std::unique_ptr<FILE, int (*)(FILE*)> p(::popen(cmd.c_str(), "r"), ::pclose);
  REQUIRE(p);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p.get())) > 0)
    out.append(buf, n);
  auto nl = out.rfind('\n');
  REQUIRE_MESSAGE(nl != std::string::npos, "curl printed: " << out);
  return reply{std::atoi(out.c_str() + nl + 1), out.substr(0, nl)};
}

/// A scratch file holding `body`, for --data-binary @file (no shell quoting).
struct body_file {
  std::string path;
  explicit body_file(const std::string& body) {
    path = "/tmp/agentvisor-api-test-" + std::to_string(::getpid()) + "-"
           + std::to_string(counter()++);
    std::ofstream(path, std::ios::binary) << body;
  }
  ~body_file() {
    std::filesystem::remove(path);
  }
  static int& counter() {
    static int n = 0;
    return n;
  }
};

reply http(const fixture& f, const std::string& method, const std::string& path,
           std::optional<std::string> body = std::nullopt,
           std::optional<std::string_view> token = test_token) {
  std::string args = "-X " + method;
  if (token)
    args += " -H 'Authorization: Bearer " + std::string{*token} + "'";
  std::optional<body_file> file;
  if (body) {
    file.emplace(*body);
    args += " -H 'Content-Type: application/json' --data-binary @" + file->path;
  }
  args += " 'http://127.0.0.1:" + std::to_string(f.port) + path + "'";
  return run_curl(args);
}

bool contains(const std::string& s, std::string_view part) {
  return s.find(part) != std::string::npos;
}

// --- A raw TCP client -----------------------------------------------------------------

struct raw_client {
  int fd = -1;

  explicit raw_client(uint16_t port) {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    timeval tv{10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  }
  ~raw_client() {
    close();
  }
  raw_client(const raw_client&) = delete;
  raw_client& operator=(const raw_client&) = delete;

  void close() {
    if (fd >= 0)
      ::close(fd);
    fd = -1;
  }

  void send(std::string_view s) {
    while (!s.empty()) {
      auto n = ::send(fd, s.data(), s.size(), MSG_NOSIGNAL);
      REQUIRE(n > 0);
      s.remove_prefix(static_cast<size_t>(n));
    }
  }

  /// Everything until the server closes (or 10 s pass).
  std::string read_to_end() {
    std::string out;
    char buf[4096];
    for (;;) {
      auto n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0)
        return out;
      out.append(buf, static_cast<size_t>(n));
    }
  }

  /// One response: the header section, then Content-Length bytes.
  std::string read_response() {
    std::string out;
    char c;
    while (!out.ends_with("\r\n\r\n")) {
      if (::recv(fd, &c, 1, 0) != 1)
        return out;
      out += c;
    }
    auto at = out.find("Content-Length: ");
    if (at == std::string::npos)
      return out;
    size_t len = std::stoul(out.substr(at + 16));
    std::string body(len, '\0');
    size_t got = 0;
    while (got < len) {
      auto n = ::recv(fd, body.data() + got, len - got, 0);
      if (n <= 0)
        break;
      got += static_cast<size_t>(n);
    }
    body.resize(got);
    return out + body;
  }
};

std::string auth_header() {
  return "Authorization: Bearer " + std::string{test_token} + "\r\n";
}

} // namespace

// --- Tests --------------------------------------------------------------------------

TEST_CASE("healthz answers 200 without a token; metrics is a clear 404 (stand-in spawner)") {
  fixture f;
  auto r = http(f, "GET", "/healthz", std::nullopt, std::nullopt);
  CHECK(r.status == 200);
  CHECK(r.body == R"({"status":"ok"})");
  auto m = http(f, "GET", "/metrics", std::nullopt, std::nullopt);
  CHECK(m.status == 404);
  CHECK(contains(m.body, "metrics"));
  raw_client c{f.port};
  c.send("HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  auto head = c.read_response();
  CHECK(head.starts_with("HTTP/1.1 200 OK\r\n"));
  CHECK(head.ends_with("\r\n\r\n")); // no body
}

TEST_CASE("metrics.require_token: /metrics needs the token; served without it by default "
          "(stand-in spawner)") {
  auto reg = std::make_shared<metrics::metrics>(metrics_config{});
  SUBCASE("by default, no token") {
    fixture f{[&](api_options& o) { o.metrics = reg; }};
    auto m = http(f, "GET", "/metrics", std::nullopt, std::nullopt);
    CHECK(m.status == 200);
    CHECK(contains(m.body, "# TYPE agentvisor_spawns_total counter"));
  }
  SUBCASE("require_token") {
    fixture f{[&](api_options& o) {
      o.metrics = reg;
      o.metrics_require_token = true;
    }};
    CHECK(http(f, "GET", "/metrics", std::nullopt, std::nullopt).status == 401);
    CHECK(http(f, "GET", "/metrics", std::nullopt, "wrong").status == 401);
    auto m = http(f, "GET", "/metrics");
    CHECK(m.status == 200);
    CHECK(contains(m.body, "agentvisor_spawns_total"));
    CHECK(http(f, "POST", "/metrics", "{}").status == 405);
  }
}

TEST_CASE("a missing or wrong token is 401 with WWW-Authenticate (stand-in spawner)") {
  fixture f;
  auto none = http(f, "GET", "/v1/agents", std::nullopt, std::nullopt);
  CHECK(none.status == 401);
  CHECK(contains(none.body, R"("code":"unauthorized")"));
  auto wrong = http(f, "GET", "/v1/agents", std::nullopt, "not-the-token");
  CHECK(wrong.status == 401);
  auto unknown_route = http(f, "GET", "/nothing", std::nullopt, std::nullopt);
  CHECK(unknown_route.status == 401);
  raw_client c{f.port};
  c.send("GET /v1/governor HTTP/1.1\r\nAuthorization: Basic Zm9v\r\n\r\n");
  auto r = c.read_response();
  CHECK(r.starts_with("HTTP/1.1 401 Unauthorized\r\n"));
  CHECK(contains(r, "WWW-Authenticate: Bearer\r\n"));
}

TEST_CASE("POST /v1/agents answers 201 with the agent, or the governor's and "
          "spawner's errors (stand-in spawner)") {
  fixture f;
  auto r = http(f, "POST", "/v1/agents",
                R"({"name":"w1","memory_mb":64,"pids":32,"cpu_weight":200,"restart":"transient"})");
  CHECK(r.status == 201);
  CHECK(contains(r.body, R"("id":"a-1")"));
  CHECK(contains(r.body, R"("name":"w1")"));
  CHECK(contains(r.body, R"("state":"ready")"));
  CHECK(contains(r.body, R"("restart":"transient")"));
  CHECK(contains(r.body, R"("last_down_reason":null)"));
  CHECK(contains(r.body, R"("memory_limit_bytes":67108864)"));
  for (auto key : {"backend", "restarts", "oom_kills", "memory_bytes", "pids_limit", "pid",
                   "calls_in_flight", "calls_queued"})
    CHECK(contains(r.body, "\"" + std::string{key} + "\":"));
  auto huge = http(f, "POST", "/v1/agents", R"({"name":"huge"})");
  CHECK(huge.status == 429);
  CHECK(contains(huge.body, R"("code":"over_budget")"));
  auto queued = http(f, "POST", "/v1/agents", R"({"name":"queued"})");
  CHECK(queued.status == 503);
  CHECK(contains(queued.body, R"("code":"budget_timeout")"));
  auto broken = http(f, "POST", "/v1/agents", R"({"name":"broken"})");
  CHECK(broken.status == 500);
  CHECK(contains(broken.body, R"("code":"spawn_failed")"));
}

TEST_CASE("bad JSON, a wrong type or a missing name is 400 naming the field "
          "(stand-in spawner)") {
  fixture f;
  auto bad = http(f, "POST", "/v1/agents", R"({"name":)");
  CHECK(bad.status == 400);
  CHECK(contains(bad.body, "body: invalid JSON"));
  auto type = http(f, "POST", "/v1/agents", R"({"name":"x","memory_mb":"lots"})");
  CHECK(type.status == 400);
  CHECK(contains(type.body, "memory_mb: expected a positive integer"));
  auto neg = http(f, "POST", "/v1/agents", R"({"name":"x","pids":-1})");
  CHECK(neg.status == 400);
  CHECK(contains(neg.body, "pids: expected a positive integer"));
  auto restart = http(f, "POST", "/v1/agents", R"({"name":"x","restart":"sometimes"})");
  CHECK(restart.status == 400);
  CHECK(contains(restart.body, "restart: expected"));
  auto missing = http(f, "POST", "/v1/agents", R"({"memory_mb":64})");
  CHECK(missing.status == 400);
  CHECK(contains(missing.body, "name: required"));
  auto unknown = http(f, "POST", "/v1/agents", R"({"name":"x","colour":"red"})");
  CHECK(unknown.status == 400);
  CHECK(contains(unknown.body, "colour: unknown field"));
  auto array = http(f, "POST", "/v1/agents", "[1,2]");
  CHECK(array.status == 400);
  CHECK(contains(array.body, "body: expected a JSON object"));
}

TEST_CASE("POST /v1/agents passes a known backend name on, and refuses others with 400 "
          "(stand-in spawner)") {
  fixture f;
  auto q = http(f, "POST", "/v1/agents", R"({"name":"vm","backend":"qemu"})");
  CHECK(q.status == 201);
  CHECK(contains(q.body, R"("backend":"qemu")"));
  for (auto body : {R"({"name":"x","backend":"vmware"})", R"({"name":"x","backend":""})",
                    R"({"name":"x","backend":1})", R"({"name":"x","backend":["qemu"]})"}) {
    auto r = http(f, "POST", "/v1/agents", body);
    CHECK_MESSAGE(r.status == 400, body);
    CHECK_MESSAGE(contains(r.body, R"(backend: expected \"sandbox\", \"qemu\" or \"firecracker\")"),
                  r.body);
  }
  auto off = http(f, "POST", "/v1/agents", R"({"name":"x","backend":"firecracker"})");
  CHECK(off.status == 400);
  CHECK(contains(off.body, R"("code":"bad_request")"));
  CHECK(contains(off.body, R"(backend \"firecracker\" is not enabled here (enabled: qemu, sandbox))"));
}

TEST_CASE("list, get and delete agents; unknown agents and routes are 404, wrong "
          "methods 405 (stand-in spawner)") {
  fixture f;
  auto list = http(f, "GET", "/v1/agents");
  CHECK(list.status == 200);
  CHECK(list.body.starts_with(R"({"agents":[{"id":"a-1")"));
  auto get = http(f, "GET", "/v1/agents/a-1");
  CHECK(get.status == 200);
  CHECK(contains(get.body, R"("pid":4242)"));
  auto missing = http(f, "GET", "/v1/agents/zz-9");
  CHECK(missing.status == 404);
  CHECK(contains(missing.body, R"("code":"not_found")"));
  CHECK(contains(missing.body, "zz-9"));
  auto del = http(f, "DELETE", "/v1/agents/a-1");
  CHECK(del.status == 200);
  CHECK(contains(del.body, R"("state":"stopped")"));
  CHECK(contains(del.body, R"("last_down_reason":"stopped")"));
  CHECK(http(f, "DELETE", "/v1/agents/zz-9").status == 404);
  CHECK(http(f, "GET", "/v1/nothing").status == 404);
  CHECK(http(f, "GET", "/v1/agents/a-1/").status == 404);
  auto put = http(f, "PUT", "/v1/agents", "{}");
  CHECK(put.status == 405);
  raw_client c{f.port};
  c.send("PATCH /v1/agents/a-1 HTTP/1.1\r\n" + auth_header() + "Content-Length: 0\r\n\r\n");
  auto r = c.read_response();
  CHECK(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
  CHECK(contains(r, "Allow: GET, HEAD, DELETE\r\n"));
}

TEST_CASE("tool calls: ok and tool failures are 200; agent down 502, draining 503, "
          "timeouts 504 (stand-in spawner)") {
  fixture f;
  auto echo = http(f, "POST", "/v1/agents/a-1/tools/echo?retryable=true&timeout_ms=250",
                   R"({"path":"notes.txt"})");
  CHECK(echo.status == 200);
  CHECK(echo.body == R"({"ok":true,"result":{"args":{"path":"notes.txt"},"retryable":true,)"
                     R"("timeout_ms":250},"attempts":1})");
  auto no_body = http(f, "POST", "/v1/agents/a-1/tools/echo");
  CHECK(no_body.status == 200);
  CHECK(contains(no_body.body, R"("args":{})"));
  auto fail = http(f, "POST", "/v1/agents/a-1/tools/fail", "{}");
  CHECK(fail.status == 200);
  CHECK(contains(fail.body, R"({"ok":false,"error":{"code":"path_escape")"));
  auto down = http(f, "POST", "/v1/agents/a-1/tools/down", "{}");
  CHECK(down.status == 502);
  CHECK(contains(down.body, R"("code":"agent_down")"));
  CHECK(http(f, "POST", "/v1/agents/a-1/tools/drain", "{}").status == 503);
  CHECK(http(f, "POST", "/v1/agents/a-1/tools/timeout", "{}").status == 504);
  // No answer at all: the api's own request timeout (1 s here).
  auto hang = http(f, "POST", "/v1/agents/a-1/tools/hang", "{}");
  CHECK(hang.status == 504);
  CHECK(contains(hang.body, R"("code":"timeout")"));
  CHECK(http(f, "POST", "/v1/agents/zz-9/tools/echo", "{}").status == 404);
  auto args = http(f, "POST", "/v1/agents/a-1/tools/echo", "[1]");
  CHECK(args.status == 400);
  CHECK(contains(args.body, "body: expected a JSON object"));
  auto query = http(f, "POST", "/v1/agents/a-1/tools/echo?timeout_ms=soon", "{}");
  CHECK(query.status == 400);
  CHECK(contains(query.body, "timeout_ms: expected"));
  CHECK(http(f, "GET", "/v1/agents/a-1/tools/echo").status == 405);
}

TEST_CASE("GET /v1/governor shows the budget, use and counters (stand-in spawner)") {
  fixture f;
  auto g = http(f, "GET", "/v1/governor");
  CHECK(g.status == 200);
  CHECK(g.body.starts_with(R"({"budget":{"memory_bytes":8589934592,"cpus":4,)"));
  CHECK(contains(g.body, R"("used":{"memory_bytes":268435456)"));
  CHECK(contains(g.body, R"("queued":2)"));
  CHECK(contains(g.body, R"("granted_total":5)"));
  CHECK(contains(g.body, R"("denied_total":1)"));
}

TEST_CASE("a body over max_body_bytes is 413 (stand-in spawner)") {
  fixture f;
  auto big = http(f, "POST", "/v1/agents", R"({"name":")" + std::string(5000, 'x') + "\"}");
  CHECK(big.status == 413);
  CHECK(contains(big.body, R"("code":"body_too_large")"));
  // Chunked, so no Content-Length to judge by.
  raw_client c{f.port};
  c.send("POST /v1/agents HTTP/1.1\r\n" + auth_header()
         + "Transfer-Encoding: chunked\r\n\r\n1000\r\n" + std::string(4096, 'x')
         + "\r\n10\r\n" + std::string(16, 'x') + "\r\n0\r\n\r\n");
  auto r = c.read_to_end();
  CHECK(r.starts_with("HTTP/1.1 413 "));
}

TEST_CASE("curl reuses one keep-alive connection for two requests (stand-in spawner)") {
  fixture f;
  auto url = "'http://127.0.0.1:" + std::to_string(f.port);
  auto out = run_curl("-H 'Authorization: Bearer " + std::string{test_token} + "' " + url
                        + "/v1/agents/a-1' " + url + "/v1/governor'",
                      "|%{num_connects}\\n%{http_code}");
  // Each URL's -w output: "|<connects>" then the final "\n<code>".
  CHECK(contains(out.body, R"("id":"a-1")"));
  CHECK(contains(out.body, "|1"));
  CHECK(contains(out.body, R"("budget":)"));
  CHECK(contains(out.body, "|0")); // the second request made no new connection
  CHECK(out.status == 200);
}

TEST_CASE("pipelined requests are answered in order, a slow one first (stand-in spawner)") {
  fixture f;
  raw_client c{f.port};
  c.send("POST /v1/agents/a-1/tools/slow HTTP/1.1\r\n" + auth_header()
         + "Content-Length: 2\r\n\r\n{}"
           "GET /healthz HTTP/1.1\r\n\r\n"
           "GET /v1/agents/a-1 HTTP/1.1\r\n"
         + auth_header()
         + "\r\n"
           "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n");
  auto all = c.read_to_end();
  auto slow = all.find(R"("result":"slept")");
  auto health = all.find(R"({"status":"ok"})");
  auto agent = all.find(R"("id":"a-1")");
  auto last = all.rfind(R"({"status":"ok"})");
  REQUIRE(slow != std::string::npos);
  REQUIRE(health != std::string::npos);
  REQUIRE(agent != std::string::npos);
  CHECK(slow < health);
  CHECK(health < agent);
  CHECK(agent < last);
  CHECK(contains(all, "Connection: close\r\n"));
}

TEST_CASE("malformed, oversized-header and unknown-method input is refused and "
          "closed (stand-in spawner)") {
  fixture f;
  {
    raw_client c{f.port};
    c.send("GET /healthz HTTP/1.1\r\nContent-Length: nope\r\n\r\n");
    auto r = c.read_to_end();
    CHECK(r.starts_with("HTTP/1.1 400 Bad Request\r\n"));
    CHECK(contains(r, "HPE_"));
  }
  {
    raw_client c{f.port};
    c.send("GET /healthz HTTP/1.1\r\nX-Big: " + std::string(20000, 'a') + "\r\n\r\n");
    auto r = c.read_to_end();
    CHECK(r.starts_with("HTTP/1.1 431 "));
  }
  {
    raw_client c{f.port};
    c.send("FROB /healthz HTTP/1.1\r\n\r\n");
    auto r = c.read_to_end();
    CHECK(r.starts_with("HTTP/1.1 501 Not Implemented\r\n"));
  }
  // A good request before the garbage is still answered, first.
  raw_client c{f.port};
  c.send("GET /healthz HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n");
  auto r = c.read_to_end();
  CHECK(r.starts_with("HTTP/1.1 200 OK\r\n"));
  CHECK(contains(r, "HTTP/1.1 400 Bad Request\r\n"));
  CHECK(http(f, "GET", "/healthz").status == 200);
}

TEST_CASE("a slowloris request gets 408 and an idle connection is closed (stand-in spawner)") {
  fixture f; // idle_timeout 1 s
  raw_client slow{f.port};
  raw_client idle{f.port};
  idle.send("GET /healthz HTTP/1.1\r\n\r\n");
  CHECK(idle.read_response().starts_with("HTTP/1.1 200 OK\r\n"));
  auto start = std::chrono::steady_clock::now();
  // Dribbles one header byte at a time: activity, but the request never ends.
  slow.send("GET /healthz HTTP/1.1\r\nX-A: ");
  std::string got;
  for (int i = 0; i < 40 && got.empty(); ++i) {
    std::this_thread::sleep_for(100ms);
    if (::send(slow.fd, "a", 1, MSG_NOSIGNAL | MSG_DONTWAIT) != 1)
      break;
    char buf[512];
    auto n = ::recv(slow.fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0)
      got.assign(buf, static_cast<size_t>(n));
  }
  got += slow.read_to_end();
  CHECK(got.starts_with("HTTP/1.1 408 Request Timeout\r\n"));
  CHECK(idle.read_to_end().empty()); // closed without a word
  auto took = std::chrono::steady_clock::now() - start;
  CHECK(took < 3s);
}

TEST_CASE("clients that disconnect mid-request or before their answer leave nothing "
          "behind (stand-in spawner)") {
  fixture f;
  {
    raw_client c{f.port};
    c.send("POST /v1/agents HTTP/1.1\r\n" + auth_header() + "Content-Length: 100\r\n\r\n{\"na");
  }
  {
    raw_client c{f.port};
    c.send("POST /v1/agents/a-1/tools/slow HTTP/1.1\r\n" + auth_header()
           + "Content-Length: 2\r\n\r\n{}");
  } // closed before the answer, which arrives 300 ms later and is dropped
  std::this_thread::sleep_for(500ms);
  CHECK(http(f, "GET", "/healthz").status == 200);
  CHECK(http(f, "POST", "/v1/agents/a-1/tools/slow", "{}").status == 200);
}

TEST_CASE("connections over the cap get a 503 and are closed (stand-in spawner)") {
  fixture f{[](api_options& o) { o.max_connections = 2; }};
  raw_client a{f.port};
  raw_client b{f.port};
  for (auto* c : {&a, &b}) {
    c->send("GET /healthz HTTP/1.1\r\n\r\n");
    CHECK(c->read_response().starts_with("HTTP/1.1 200 OK\r\n"));
  }
  raw_client extra{f.port};
  auto r = extra.read_to_end();
  CHECK(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
  CHECK(contains(r, "too many connections"));
  a.close();
  // The slot frees once the api saw the close; retry briefly.
  bool served = false;
  for (int i = 0; i < 50 && !served; ++i) {
    raw_client again{f.port};
    again.send("GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n");
    served = again.read_to_end().starts_with("HTTP/1.1 200 OK\r\n");
    if (!served)
      std::this_thread::sleep_for(20ms);
  }
  CHECK(served);
}

TEST_CASE("the api refuses to start on a port in use and says why (stand-in spawner)") {
  fixture f;
  caf::scoped_actor self{*f.sys};
  api_options o;
  o.listen = {"127.0.0.1", f.port};
  o.token = "x";
  auto second = spawn_api(*f.sys, f.io, o, f.spawner, f.governor);
  bool failed = false;
  self->request(second, caf::duration{10s}, get_atom::value)
    .receive([&](uint16_t) {},
             [&](caf::error& e) {
               failed = true;
               CHECK(contains(view(e).message, "cannot listen"));
             });
  CHECK(failed);
}

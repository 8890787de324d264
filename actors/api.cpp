// api: the HTTP control API. One event-based actor owns the listener and
// every connection's parser; the io_thread moves the bytes. Each route turns
// a request into one request to the spawner or the governor, and its answer
// (or errc error) into JSON. docs/api.md is the reference.
//
// Answers go out in request order per connection (pipelining): each request
// takes a slot when parsed; an answer fills its slot, and the filled slots at
// the front are written. A connection that is gone when an answer arrives
// simply is no longer in the map.

#include "api.hpp"

#include "agentvisor/io.hpp"
#include "agentvisor/json.hpp"
#include "agentvisor/messages.hpp"
#include "agentvisor/token.hpp"
#include "io/http.hpp"

#include <caf/all.hpp>

#include <simdjson.h>

#include <algorithm>
#include <charconv>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace agentvisor {
namespace {

using steady = std::chrono::steady_clock;

// --- JSON answers --------------------------------------------------------------

http::response json_response(int status, std::string body) {
  return http::response{status, "application/json", std::move(body), {}};
}

http::response error_response(int status, std::string_view code, std::string_view message) {
  std::string out;
  json::writer w(out);
  w.begin_object().key("error").begin_object().field("code", code).field("message", message)
    .end_object().end_object();
  return json_response(status, std::move(out));
}

int status_of(errc code) {
  switch (code) {
    case errc::bad_request: return 400;
    case errc::not_found: return 404;
    case errc::over_budget: return 429;
    case errc::budget_timeout: return 503;
    case errc::spawn_failed: return 500;
    case errc::agent_down: return 502;
    case errc::draining: return 503;
    case errc::timeout: return 504;
    case errc::escalated: return 503;
    case errc::internal: return 500;
  }
  return 500;
}

http::response from_error(const caf::error& err) {
  auto v = view(err);
  return error_response(status_of(v.code), to_string(v.code), v.message);
}

/// The error code of a refusal by the HTTP layer itself.
std::string_view http_code_name(int status) {
  switch (status) {
    case 400: return "bad_request";
    case 408: return "request_timeout";
    case 413: return "body_too_large";
    case 431: return "headers_too_large";
    case 501: return "not_implemented";
    case 503: return "unavailable";
    default: return "bad_request";
  }
}

void write_agent(json::writer& w, const agent_info& a) {
  w.begin_object()
    .field("id", a.id)
    .field("machine", a.machine)
    .field("name", a.name)
    .field("state", to_string(a.state))
    .field("backend", a.backend)
    .field("restart", to_string(a.restart))
    .field("restarts", a.restarts);
  w.key("last_down_reason");
  if (a.last_down_reason.empty())
    w.value(nullptr);
  else
    w.value(a.last_down_reason);
  w.field("oom_kills", a.oom_kills)
    .field("memory_bytes", a.memory_bytes)
    .field("memory_limit_bytes", a.memory_limit_bytes)
    .field("pids_limit", a.pids_limit)
    .field("pid", a.pid)
    .field("calls_in_flight", a.calls_in_flight)
    .field("calls_queued", a.calls_queued)
    .end_object();
}

std::string agent_json(const agent_info& a) {
  std::string out;
  json::writer w(out);
  write_agent(w, a);
  return out;
}

std::string agents_json(const std::vector<agent_info>& xs) {
  std::string out;
  json::writer w(out);
  w.begin_object().key("agents").begin_array();
  for (const auto& a : xs)
    write_agent(w, a);
  w.end_array().end_object();
  return out;
}

void write_budget(json::writer& w, const budget& b) {
  w.begin_object()
    .field("memory_bytes", b.memory_bytes)
    .field("cpus", b.cpus)
    .field("agents", b.agents)
    .field("pids", b.pids)
    .end_object();
}

std::string governor_json(const governor_state& g) {
  std::string out;
  json::writer w(out);
  w.begin_object().key("budget");
  write_budget(w, g.total);
  w.key("used");
  write_budget(w, g.used);
  w.field("memory_in_use_bytes", g.memory_in_use_bytes)
    .field("queued", g.queued)
    .field("granted_total", g.granted_total)
    .field("denied_total", g.denied_total)
    .field("oom_kills_total", g.oom_kills_total)
    .field("evictions_total", g.evictions_total)
    .field("host_available_bytes", g.host_available_bytes)
    .end_object();
  return out;
}

std::string tool_json(const tool_result& r) {
  std::string out;
  json::writer w(out);
  w.begin_object().field("ok", r.ok);
  if (r.ok) {
    // The guest's result is JSON already (checked by the guest protocol).
    w.key("result").raw(r.result_json.empty() ? std::string_view{"null"} : r.result_json);
  } else {
    w.key("error").begin_object().field("code", r.error_code)
      .field("message", r.error_message).end_object();
  }
  w.field("attempts", r.attempts).end_object();
  return out;
}

// --- Request bodies ------------------------------------------------------------

/// Empty: fine; else "field: what was expected".
using field_error = std::optional<std::string>;

field_error positive(simdjson::dom::element v, std::string_view field, uint64_t max,
                     uint64_t& out) {
  uint64_t x = 0;
  if (v.get_uint64().get(x) != simdjson::SUCCESS || x == 0 || x > max)
    return std::string{field} + ": expected a positive integer up to " + std::to_string(max);
  out = x;
  return std::nullopt;
}

field_error parse_agent_request(simdjson::dom::parser& parser, std::string_view body,
                                agent_request& out) {
  simdjson::dom::element doc;
  if (auto e = parser.parse(body.data(), body.size()).get(doc))
    return std::string{"body: invalid JSON ("} + simdjson::error_message(e) + ")";
  simdjson::dom::object obj;
  if (doc.get_object().get(obj) != simdjson::SUCCESS)
    return std::string{"body: expected a JSON object"};
  bool has_name = false;
  for (auto field : obj) {
    auto key = field.key;
    auto v = field.value;
    uint64_t x = 0;
    if (key == "name") {
      std::string_view s;
      if (v.get_string().get(s) != simdjson::SUCCESS || s.empty() || s.size() > 256)
        return std::string{"name: expected a non-empty string of at most 256 bytes"};
      out.name = std::string{s};
      has_name = true;
    } else if (key == "memory_mb") {
      if (auto e = positive(v, key, 1ull << 30, x))
        return e;
      out.memory_mb = x;
    } else if (key == "pids") {
      if (auto e = positive(v, key, 4194304, x))
        return e;
      out.pids = static_cast<uint32_t>(x);
    } else if (key == "cpu_weight") {
      if (auto e = positive(v, key, 10000, x))
        return e;
      out.cpu_weight = static_cast<uint32_t>(x);
    } else if (key == "restart") {
      std::string_view s;
      bool known = false;
      if (v.get_string().get(s) == simdjson::SUCCESS)
        for (auto t : {restart_type::permanent, restart_type::transient, restart_type::temporary})
          if (to_string(t) == s) {
            out.restart = t;
            out.restart_set = known = true;
          }
      if (!known)
        return std::string{"restart: expected \"permanent\", \"transient\" or \"temporary\""};
    } else if (key == "backend") {
      // Known names only; whether this supervisor enabled it is the
      // spawner's answer (also 400, naming the enabled ones).
      std::string_view s;
      if (v.get_string().get(s) != simdjson::SUCCESS || !backend_from_string(s))
        return std::string{"backend: expected \"sandbox\", \"qemu\" or \"firecracker\""};
      out.backend = std::string{s};
    } else {
      return std::string{key} + ": unknown field";
    }
  }
  if (!has_name)
    return std::string{"name: required"};
  return std::nullopt;
}

/// A tool call from its path segment, query and body (the arguments).
field_error parse_tool_call(simdjson::dom::parser& parser, const http::request& req,
                            std::string tool, tool_call& out) {
  out.tool = std::move(tool);
  if (!req.body.empty()) {
    simdjson::dom::element doc;
    if (auto e = parser.parse(req.body.data(), req.body.size()).get(doc))
      return std::string{"body: invalid JSON ("} + simdjson::error_message(e) + ")";
    if (!doc.is_object())
      return std::string{"body: expected a JSON object (the tool's arguments)"};
    out.args_json = req.body;
  }
  std::string_view q = req.query;
  while (!q.empty()) {
    auto amp = q.find('&');
    auto pair = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view{} : q.substr(amp + 1);
    auto eq = pair.find('=');
    auto key = pair.substr(0, eq);
    auto val = eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
    if (key == "retryable") {
      if (val == "true" || val == "1")
        out.retryable = true;
      else if (val == "false" || val == "0")
        out.retryable = false;
      else
        return std::string{"retryable: expected true or false"};
    } else if (key == "timeout_ms") {
      uint32_t ms = 0;
      auto [end, ec] = std::from_chars(val.data(), val.data() + val.size(), ms);
      if (ec != std::errc{} || end != val.data() + val.size() || ms == 0)
        return std::string{"timeout_ms: expected a positive integer of milliseconds"};
      out.timeout_ms = ms;
    } // other parameters are ignored, as HTTP servers usually do
  }
  return std::nullopt;
}

/// "/v1/agents/a-1" -> {"v1", "agents", "a-1"}; empty segments kept, so a
/// trailing slash does not match a route.
std::vector<std::string_view> segments(std::string_view path) {
  std::vector<std::string_view> out;
  if (path.empty() || path.front() != '/')
    return out;
  path.remove_prefix(1);
  for (;;) {
    auto slash = path.find('/');
    out.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos)
      break;
    path.remove_prefix(slash + 1);
  }
  return out;
}

// --- The actor -------------------------------------------------------------------

/// One request's place in its connection's answer order.
struct slot {
  bool head = false;
  bool keep_alive = true;
  /// The serialized answer, once known.
  std::optional<std::string> bytes;
};

struct connection {
  http::request_parser parser;
  std::deque<slot> slots;
  /// Sequence number of slots.front(); a request's seq never changes.
  uint64_t first_seq = 0;
  steady::time_point last_activity;
  /// When the incomplete request now arriving began (slowloris deadline).
  std::optional<steady::time_point> request_started;
  /// A closing answer is queued: ignore further input.
  bool closing = false;
};

struct api_state {
  io::io_thread* io = nullptr;
  api_options opts;
  caf::actor spawner;
  caf::actor governor;
  io::handle_id listener = 0;
  io::handle_id sweep = 0;
  uint16_t port = 0;
  bool listening = false;
  std::vector<caf::response_promise> port_waiters;
  std::unordered_map<io::handle_id, connection> conns;
  simdjson::dom::parser json;

  api_state() = default;
  api_state(const api_state&) = delete;
  api_state& operator=(const api_state&) = delete;

  /// Runs when the actor exits (CAF destroys the state in on_exit), so an
  /// exit message, a kill or quit() all release the sockets.
  ~api_state() {
    close_all();
  }

  void close_all() {
    if (io == nullptr)
      return;
    io->close(listener);
    io->close(sweep);
    for (const auto& entry : conns)
      io->close(entry.first);
    conns.clear();
    io = nullptr;
  }

  static inline const char* name = "api";
};

using api_actor = caf::stateful_actor<api_state>;

/// Writes the answered slots at the front of `cid`'s queue, in order; closes
/// the connection after a slot that does not keep it alive.
void flush(api_actor* self, io::handle_id cid) {
  auto& st = self->state;
  auto it = st.conns.find(cid);
  if (it == st.conns.end())
    return;
  auto& c = it->second;
  while (!c.slots.empty() && c.slots.front().bytes) {
    st.io->write(cid, std::move(*c.slots.front().bytes));
    bool keep = c.slots.front().keep_alive;
    c.slots.pop_front();
    ++c.first_seq;
    if (!keep) {
      st.io->close_after_write(cid);
      st.conns.erase(it);
      return;
    }
  }
  if (c.slots.empty())
    c.last_activity = steady::now(); // idle time counts from the last answer
}

/// Fills slot `seq` of `cid` with `r`; drops it if the connection is gone.
void answer(api_actor* self, io::handle_id cid, uint64_t seq, const http::response& r) {
  auto& st = self->state;
  auto it = st.conns.find(cid);
  if (it == st.conns.end() || seq < it->second.first_seq)
    return;
  auto& c = it->second;
  auto i = seq - c.first_seq;
  if (i >= c.slots.size())
    return;
  auto& s = c.slots[i];
  s.bytes = http::serialize(r, s.keep_alive, s.head);
  flush(self, cid);
}

/// Queues an answer of the HTTP layer that closes the connection.
void refuse(api_actor* self, io::handle_id cid, int status, std::string_view message) {
  auto& st = self->state;
  auto it = st.conns.find(cid);
  if (it == st.conns.end())
    return;
  auto& c = it->second;
  c.closing = true;
  c.slots.push_back(slot{false, false,
                         http::serialize(error_response(status, http_code_name(status), message),
                                         false)});
  flush(self, cid);
}

/// Asks `dest` and answers slot `seq` with `ok(value)` or the error's status.
template <class T, class Ok, class... Ts>
void ask_and_answer(api_actor* self, const caf::actor& dest, std::string_view what,
                    std::chrono::milliseconds timeout, io::handle_id cid, uint64_t seq, Ok ok,
                    Ts&&... xs) {
  if (!dest) {
    answer(self, cid, seq, error_response(503, "unavailable", std::string{what} + " is not running"));
    return;
  }
  self->request(dest, timeout, std::forward<Ts>(xs)...)
    .then([self, cid, seq, ok](T& value) { answer(self, cid, seq, ok(value)); },
          [self, cid, seq](caf::error& err) { answer(self, cid, seq, from_error(err)); });
}

bool authorized(const api_state& st, const http::request& req) {
  auto* h = req.header("authorization");
  if (h == nullptr)
    return false;
  auto token = bearer_token(*h);
  return !token.empty() && token_equals(token, st.opts.token);
}

http::response method_not_allowed(std::string_view allow) {
  auto r = error_response(405, "method_not_allowed",
                          "allowed methods: " + std::string{allow});
  r.headers.emplace_back("Allow", std::string{allow});
  return r;
}

/// GET /metrics: the registry collected and serialized in the format the
/// scraper's Accept header asks for (docs/metrics.md).
http::response serve_metrics(const api_state& st, const http::request& req) {
  if (!st.opts.metrics)
    return error_response(404, "not_found", "metrics are disabled (metrics.enabled = false)");
  auto* accept = req.header("accept");
  auto f = metrics::negotiate(accept != nullptr ? std::string_view{*accept} : std::string_view{});
  http::response r;
  r.content_type = std::string{metrics::content_type(f)};
  r.body = metrics::serialize(st.opts.metrics->collect(), f);
  return r;
}

bool is_get(const http::request& req) {
  return req.method == "GET" || req.method == "HEAD";
}

// Each route: validate, then one request to the spawner or the governor.

void create_agent(api_actor* self, io::handle_id cid, uint64_t seq, const http::request& req) {
  auto& st = self->state;
  agent_request ar;
  if (auto e = parse_agent_request(st.json, req.body, ar)) {
    answer(self, cid, seq, error_response(400, "bad_request", *e));
    return;
  }
  ask_and_answer<agent_info>(
    self, st.spawner, "the spawner", st.opts.spawn_timeout, cid, seq,
    [](const agent_info& a) { return json_response(201, agent_json(a)); }, start_atom::value,
    std::move(ar));
}

void call_tool(api_actor* self, io::handle_id cid, uint64_t seq, const http::request& req,
               std::string id, std::string tool) {
  auto& st = self->state;
  tool_call call;
  if (auto e = parse_tool_call(st.json, req, std::move(tool), call)) {
    answer(self, cid, seq, error_response(400, "bad_request", *e));
    return;
  }
  auto timeout = call.timeout_ms > 0
                   ? std::chrono::milliseconds{call.timeout_ms} + st.opts.call_margin
                   : st.opts.request_timeout;
  ask_and_answer<tool_result>(
    self, st.spawner, "the spawner", timeout, cid, seq,
    [](const tool_result& r) { return json_response(200, tool_json(r)); }, call_atom::value,
    std::move(id), std::move(call));
}

void route_agents(api_actor* self, io::handle_id cid, uint64_t seq, const http::request& req,
                  const std::vector<std::string_view>& seg) {
  auto& st = self->state;
  auto to = st.opts.request_timeout;
  if (seg.size() == 2) { // /v1/agents
    if (req.method == "POST")
      create_agent(self, cid, seq, req);
    else if (is_get(req))
      ask_and_answer<std::vector<agent_info>>(
        self, st.spawner, "the spawner", to, cid, seq,
        [](const std::vector<agent_info>& xs) { return json_response(200, agents_json(xs)); },
        list_atom::value);
    else
      answer(self, cid, seq, method_not_allowed("GET, HEAD, POST"));
    return;
  }
  std::string id{seg[2]};
  auto agent_ok = [](const agent_info& a) { return json_response(200, agent_json(a)); };
  if (seg.size() == 3 && !id.empty()) { // /v1/agents/{id}
    if (is_get(req))
      ask_and_answer<agent_info>(self, st.spawner, "the spawner", to, cid, seq, agent_ok,
                                 get_atom::value, std::move(id));
    else if (req.method == "DELETE")
      ask_and_answer<agent_info>(self, st.spawner, "the spawner", to, cid, seq, agent_ok,
                                 stop_atom::value, std::move(id));
    else
      answer(self, cid, seq, method_not_allowed("GET, HEAD, DELETE"));
    return;
  }
  if (seg.size() == 5 && !id.empty() && seg[3] == "tools" && !seg[4].empty()) {
    if (req.method == "POST")
      call_tool(self, cid, seq, req, std::move(id), std::string{seg[4]});
    else
      answer(self, cid, seq, method_not_allowed("POST"));
    return;
  }
  answer(self, cid, seq, error_response(404, "not_found", "no route for " + req.path));
}

/// Routes one parsed request; its answer fills slot `seq`.
void dispatch(api_actor* self, io::handle_id cid, uint64_t seq, const http::request& req) {
  auto& st = self->state;
  if (req.path == "/healthz") {
    answer(self, cid, seq,
           is_get(req) ? json_response(200, R"({"status":"ok"})")
                       : method_not_allowed("GET, HEAD"));
    return;
  }
  bool metrics_route = req.path == "/metrics";
  if (metrics_route && !st.opts.metrics_require_token) {
    answer(self, cid, seq, is_get(req) ? serve_metrics(st, req) : method_not_allowed("GET, HEAD"));
    return;
  }
  // Before routing, so that without a token nothing about routes leaks.
  if (!authorized(st, req)) {
    auto r = error_response(401, "unauthorized",
                            "missing or wrong token: send Authorization: Bearer <token>");
    r.headers.emplace_back("WWW-Authenticate", "Bearer");
    answer(self, cid, seq, r);
    return;
  }
  if (metrics_route) {
    answer(self, cid, seq, is_get(req) ? serve_metrics(st, req) : method_not_allowed("GET, HEAD"));
    return;
  }
  auto seg = segments(req.path);
  if (seg.size() >= 2 && seg[0] == "v1" && seg[1] == "agents") {
    route_agents(self, cid, seq, req, seg);
  } else if (seg.size() == 2 && seg[0] == "v1" && seg[1] == "governor") {
    if (is_get(req))
      ask_and_answer<governor_state>(
        self, st.governor, "the resource governor", st.opts.request_timeout, cid, seq,
        [](const governor_state& g) { return json_response(200, governor_json(g)); },
        get_atom::value);
    else
      answer(self, cid, seq, method_not_allowed("GET, HEAD"));
  } else {
    answer(self, cid, seq, error_response(404, "not_found", "no route for " + req.path));
  }
}

// --- I/O messages ------------------------------------------------------------------

void on_accepted(api_actor* self, const io::tcp_accepted& a) {
  auto& st = self->state;
  if (a.listener != st.listener) {
    st.io->close(a.id);
    return;
  }
  if (st.conns.size() >= st.opts.max_connections) {
    // Politely: an answer the client can read, then the close.
    st.io->write(a.id, http::serialize(error_response(503, "unavailable",
                                                      "too many connections, try again later"),
                                       false));
    st.io->close_after_write(a.id);
    return;
  }
  connection c{http::request_parser{http::limits{st.opts.max_header_bytes,
                                                 st.opts.max_body_bytes}},
               {}, 0, steady::now(), std::nullopt, false};
  st.conns.emplace(a.id, std::move(c));
}

void on_data(api_actor* self, io::stream_data& d) {
  auto& st = self->state;
  auto it = st.conns.find(d.id);
  if (it == st.conns.end() || it->second.closing)
    return;
  auto& c = it->second;
  auto now = steady::now();
  c.last_activity = now;
  auto r = c.parser.feed(d.bytes);
  if (!r.requests.empty() || !c.parser.in_request())
    c.request_started.reset();
  if (c.parser.in_request() && !c.request_started)
    c.request_started = now;
  // 100 Continue only when it cannot overtake an earlier answer.
  if (r.continues > 0 && r.requests.empty() && c.slots.empty())
    st.io->write(d.id, std::string{http::continue_response()});
  // Take every slot first: an answer given at once may close the connection.
  std::vector<std::pair<uint64_t, http::request>> todo;
  for (auto& req : r.requests) {
    if (c.slots.size() >= st.opts.max_pipelined) {
      r.error = http::parse_error{503, "too many pipelined requests waiting for answers"};
      break;
    }
    todo.emplace_back(c.first_seq + c.slots.size(), std::move(req));
    c.slots.push_back(slot{todo.back().second.head, todo.back().second.keep_alive, {}});
  }
  if (r.error)
    c.closing = true; // the refusal's slot is queued below, after todo's
  auto error = std::move(r.error);
  for (auto& [seq, req] : todo)
    dispatch(self, d.id, seq, req);
  if (error)
    refuse(self, d.id, error->status, error->message);
}

/// Closes connections that idle too long, and answers 408 to requests that
/// take too long to arrive.
void sweep(api_actor* self) {
  auto& st = self->state;
  auto now = steady::now();
  std::vector<io::handle_id> idle;
  std::vector<io::handle_id> slow;
  for (const auto& [id, c] : st.conns) {
    if (!c.slots.empty())
      continue; // waiting for an answer: the request timeouts bound that
    if (c.request_started && now - *c.request_started > st.opts.idle_timeout)
      slow.push_back(id);
    else if (!c.request_started && now - c.last_activity > st.opts.idle_timeout)
      idle.push_back(id);
  }
  for (auto id : idle) {
    st.io->close(id);
    st.conns.erase(id);
  }
  for (auto id : slow)
    refuse(self, id, 408, "the request did not arrive in time");
}

void on_listening(api_actor* self, const io::tcp_listening& l) {
  auto& st = self->state;
  if (l.id != st.listener)
    return;
  st.port = l.port;
  st.listening = true;
  for (auto& rp : st.port_waiters)
    rp.deliver(st.port);
  st.port_waiters.clear();
}

void on_failed(api_actor* self, const io::io_failed& f) {
  auto& st = self->state;
  if (f.id == st.listener) {
    auto err = make_error(errc::internal, "api cannot listen: " + f.what);
    for (auto& rp : st.port_waiters)
      rp.deliver(err);
    st.port_waiters.clear();
    self->quit(err);
    return;
  }
  st.conns.erase(f.id); // a connection the loop gave up on
}

caf::behavior api_impl(api_actor* self, io::io_thread* io, api_options opts,
                       caf::actor spawner, caf::actor governor) {
  auto& st = self->state;
  st.io = io;
  st.opts = std::move(opts);
  st.spawner = std::move(spawner);
  st.governor = std::move(governor);
  auto me = caf::actor_cast<caf::actor>(self);
  st.listener = io->listen_tcp(me, st.opts.listen.host, st.opts.listen.port);
  // One timer for all connections: a check every quarter of the timeout
  // closes an idle connection at most 25 % late.
  auto period = std::max(std::chrono::milliseconds{10}, st.opts.idle_timeout / 4);
  st.sweep = io->start_timer(me, period, period);
  return {
    [self](get_atom) -> caf::result<uint16_t> {
      auto& s = self->state;
      if (s.listening)
        return s.port;
      auto rp = self->make_response_promise();
      s.port_waiters.push_back(rp);
      return caf::delegated<uint16_t>{};
    },
    [self](shutdown_atom) {
      self->state.close_all();
      self->quit();
      return caf::unit;
    },
    [self](const io::tcp_listening& l) { on_listening(self, l); },
    [self](const io::tcp_accepted& a) { on_accepted(self, a); },
    [self](io::stream_data& d) { on_data(self, d); },
    [self](const io::stream_closed& c) { self->state.conns.erase(c.id); },
    [self](const io::timer_fired& t) {
      if (t.id == self->state.sweep)
        sweep(self);
    },
    [self](const io::io_failed& f) { on_failed(self, f); },
  };
}

} // namespace

caf::actor spawn_api(caf::actor_system& sys, io::io_thread& io, api_options opts,
                     caf::actor spawner, caf::actor governor) {
  return sys.spawn(api_impl, &io, std::move(opts), std::move(spawner), std::move(governor));
}

} // namespace agentvisor

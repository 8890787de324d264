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

#include "agentvisor/chaos.hpp"
#include "agentvisor/io.hpp"
#include "agentvisor/json.hpp"
#include "agentvisor/log.hpp"
#include "agentvisor/messages.hpp"
#include "agentvisor/token.hpp"
#include "io/http.hpp"
#include "spawner.hpp"

#include <caf/all.hpp>

#include <simdjson.h>

#include <algorithm>
#include <charconv>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <unistd.h>

#include <unordered_map>
#include <utility>
#include <vector>

namespace agentvisor {
namespace {

using steady = std::chrono::steady_clock;

/// Self-message: a GET /v1/events long poll's wait is over.
using events_wait_atom = caf::atom_constant<caf::atom("api_evwait")>;

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
    case 403: return "forbidden";
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

/// A request body that must be one JSON object.
field_error body_object(simdjson::dom::parser& parser, std::string_view body,
                        simdjson::dom::object& obj) {
  simdjson::dom::element doc;
  if (auto e = parser.parse(body.data(), body.size()).get(doc))
    return std::string{"body: invalid JSON ("} + simdjson::error_message(e) + ")";
  if (doc.get_object().get(obj) != simdjson::SUCCESS)
    return std::string{"body: expected a JSON object"};
  return std::nullopt;
}

field_error parse_agent_request(simdjson::dom::parser& parser, std::string_view body,
                                agent_request& out) {
  simdjson::dom::object obj;
  if (auto e = body_object(parser, body, obj))
    return e;
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

/// POST /v1/agents/{id}/faults: {"kind": K, "duration_ms": N, "how": "exit"|"abort"}.
struct fault_order {
  chaos::fault_kind kind = chaos::fault_kind::kill;
  uint32_t duration_ms = 1000;
  bool abort = false; ///< crash: abort() instead of exit(3)
};

field_error parse_fault_order(simdjson::dom::parser& parser, std::string_view body,
                              fault_order& out) {
  simdjson::dom::object obj;
  if (auto e = body_object(parser, body, obj))
    return e;
  bool has_kind = false, has_duration = false, has_how = false;
  for (auto field : obj) {
    auto key = field.key;
    auto v = field.value;
    if (key == "kind") {
      std::string_view k;
      std::optional<chaos::fault_kind> kind;
      if (v.get_string().get(k) == simdjson::SUCCESS)
        kind = chaos::fault_kind_from(k);
      if (!kind)
        return "kind: unknown fault kind " + (v.is_string() ? "\"" + std::string{k} + "\"" : std::string{"(not a string)"})
               + " (one of " + chaos::fault_kind_list() + ")";
      if (*kind == chaos::fault_kind::governor_pressure)
        return std::string{"kind: governor_pressure has no target agent: POST /v1/governor/pressure"};
      out.kind = *kind;
      has_kind = true;
    } else if (key == "duration_ms") {
      uint64_t x = 0;
      if (auto e = positive(v, key, 3600000, x))
        return e;
      out.duration_ms = static_cast<uint32_t>(x);
      has_duration = true;
    } else if (key == "how") {
      std::string_view h;
      if (v.get_string().get(h) != simdjson::SUCCESS || (h != "exit" && h != "abort"))
        return std::string{"how: expected \"exit\" or \"abort\""};
      out.abort = h == "abort";
      has_how = true;
    } else {
      return std::string{key} + ": unknown field";
    }
  }
  if (!has_kind)
    return std::string{"kind: required"};
  if (has_duration && !chaos::has_duration(out.kind))
    return "duration_ms: only for partition, slow_spawn, cpu_hog (not " + std::string{chaos::to_string(out.kind)} + ")";
  if (has_how && out.kind != chaos::fault_kind::crash)
    return std::string{"how: only for kind crash"};
  return std::nullopt;
}

/// POST /v1/governor/pressure: {"duration_ms": N, "memory_bytes": M}.
field_error parse_pressure(simdjson::dom::parser& parser, std::string_view body,
                           uint32_t& duration_ms, uint64_t& memory_bytes) {
  simdjson::dom::object obj;
  if (auto e = body_object(parser, body, obj))
    return e;
  for (auto field : obj) {
    uint64_t x = 0;
    if (field.key == "duration_ms") {
      if (auto e = positive(field.value, field.key, 3600000, x))
        return e;
      duration_ms = static_cast<uint32_t>(x);
    } else if (field.key == "memory_bytes") {
      if (auto e = positive(field.value, field.key, uint64_t{1} << 50, x))
        return e;
      memory_bytes = x;
    } else {
      return std::string{field.key} + ": unknown field";
    }
  }
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

/// The value of query parameter `name` as an unsigned integer; nullopt when
/// absent; an error text when present but not a plain integer.
std::optional<uint64_t> query_uint(std::string_view q, std::string_view name, field_error& err) {
  while (!q.empty()) {
    auto amp = q.find('&');
    auto pair = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view{} : q.substr(amp + 1);
    auto eq = pair.find('=');
    if (pair.substr(0, eq) != name)
      continue;
    auto val = eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
    uint64_t x = 0;
    auto [end, ec] = std::from_chars(val.data(), val.data() + val.size(), x);
    if (ec != std::errc{} || end != val.data() + val.size() || val.empty()) {
      err = std::string{name} + ": expected a non-negative integer";
      return std::nullopt;
    }
    return x;
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

/// One agent_event kept for GET /v1/events.
struct stored_event {
  uint64_t seq = 0;
  int64_t ts_ms = 0; ///< Unix time in ms (the event's steady time mapped)
  agent_event ev;
};

/// A GET /v1/events waiting for an event newer than `after`.
struct event_waiter {
  uint64_t id = 0;
  io::handle_id cid = 0;
  uint64_t seq = 0;
  uint64_t after = 0;
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
  /// The newest opts.event_ring agent_events, oldest first; seq from 1.
  std::deque<stored_event> events;
  uint64_t last_event_seq = 0;
  std::vector<event_waiter> waiters;
  uint64_t next_waiter = 1;

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

// --- Faults (chaos) ----------------------------------------------------------------

/// 403 unless agents.allow_faults: a fault ends or burdens an agent.
bool faults_allowed(api_actor* self, io::handle_id cid, uint64_t seq) {
  if (self->state.opts.agents.allow_faults)
    return true;
  answer(self, cid, seq,
         error_response(403, "faults_disabled",
                        "fault injection is off: start the supervisor with agents.allow_faults = "
                        "true"));
  return false;
}

std::string fault_json(std::string_view agent, chaos::fault_kind kind, std::string_view outcome) {
  std::string out;
  json::writer w(out);
  w.begin_object().field("agent", agent).field("kind", chaos::to_string(kind))
    .field("outcome", outcome).end_object();
  return out;
}

/// The fault through the spawner's fault route (as the in-process chaos
/// runner sends it): 202 once the spawner answered; a fault that took its
/// agent down before the answer (agent_down) landed too.
void fault_via_spawner(api_actor* self, io::handle_id cid, uint64_t seq, std::string id,
                       chaos::fault_kind kind, fault_request f) {
  auto& st = self->state;
  auto timeout = std::chrono::milliseconds{f.ms} + st.opts.request_timeout;
  self->request(st.spawner, timeout, fault_atom::value, id, std::move(f))
    .then(
      [self, cid, seq, id, kind](tool_result&) {
        answer(self, cid, seq, json_response(202, fault_json(id, kind, "injected")));
      },
      [self, cid, seq, id, kind](caf::error& err) {
        if (view(err).code == errc::agent_down)
          answer(self, cid, seq, json_response(202, fault_json(id, kind, "agent_down")));
        else
          answer(self, cid, seq, from_error(err));
      });
}

/// POST /v1/agents/{id}/faults: the paths of docs/chaos.md, "Running".
void inject_fault(api_actor* self, io::handle_id cid, uint64_t seq, const http::request& req,
                  std::string id) {
  auto& st = self->state;
  if (!faults_allowed(self, cid, seq))
    return;
  fault_order o;
  if (auto e = parse_fault_order(st.json, req.body, o)) {
    answer(self, cid, seq, error_response(400, "bad_request", *e));
    return;
  }
  if (!st.spawner) {
    answer(self, cid, seq, error_response(503, "unavailable", "the spawner is not running"));
    return;
  }
  using chaos::fault_kind;
  switch (o.kind) {
    case fault_kind::kill: return fault_via_spawner(self, cid, seq, id, o.kind, {"kill", 0, 0, {}});
    case fault_kind::hang: return fault_via_spawner(self, cid, seq, id, o.kind, {"hang", 0, 0, {}});
    case fault_kind::partition:
      return fault_via_spawner(self, cid, seq, id, o.kind, {"partition", 0, o.duration_ms, {}});
    case fault_kind::crash:
      return fault_via_spawner(self, cid, seq, id, o.kind,
                               o.abort ? fault_request{"abort", 0, 0, {}}
                                       : fault_request{"exit", 3, 0, {}});
    case fault_kind::oom: return fault_via_spawner(self, cid, seq, id, o.kind, {"oom", 0, 0, {}});
    case fault_kind::cpu_hog:
      return fault_via_spawner(self, cid, seq, id, o.kind, {"cpu_hog", 0, o.duration_ms, {}});
    case fault_kind::disk_fill:
      return fault_via_spawner(self, cid, seq, id, o.kind, {"disk_fill", 0, 0, {}});
    case fault_kind::fork_bomb:
      return fault_via_spawner(self, cid, seq, id, o.kind, {"fork_bomb", 0, 0, {}});
    case fault_kind::spawn_failure:
    case fault_kind::slow_spawn: break;
    case fault_kind::governor_pressure: return; // refused by the parser
  }
  // Arm the backend, then kill the target so that its restart is the spawn
  // that fails or waits. The agent is looked up first: an armed fault with
  // no kill behind it would wait for that agent's next spawn.
  if (!st.opts.backend) {
    answer(self, cid, seq, error_response(503, "unavailable", "no backend to arm"));
    return;
  }
  spawn_fault sf{1, o.kind == fault_kind::spawn_failure,
                 o.kind == fault_kind::slow_spawn ? o.duration_ms : 0, {}, id};
  auto to = st.opts.request_timeout;
  self->request(st.spawner, to, get_atom::value, id)
    .then(
      [self, cid, seq, id, sf, kind = o.kind, to](agent_info&) {
        self->request(self->state.opts.backend, to, spawn_fault_atom::value, sf)
          .then(
            [self, cid, seq, id, kind](uint32_t) {
              if (auto& m = self->state.opts.metrics)
                m->fault_injected(metrics::fault_kind_from(chaos::to_string(kind)));
              fault_via_spawner(self, cid, seq, id, kind, {"kill", 0, 0, {}});
            },
            [self, cid, seq](caf::error& err) { answer(self, cid, seq, from_error(err)); });
      },
      [self, cid, seq](caf::error& err) { answer(self, cid, seq, from_error(err)); });
}

/// POST /v1/governor/pressure: the memory budget shrinks for duration_ms,
/// to memory_bytes or, by default, half of what the agents use now.
void governor_pressure(api_actor* self, io::handle_id cid, uint64_t seq,
                       const http::request& req) {
  auto& st = self->state;
  if (!faults_allowed(self, cid, seq))
    return;
  uint32_t ms = 1000;
  uint64_t bytes = 0;
  if (auto e = parse_pressure(st.json, req.body, ms, bytes)) {
    answer(self, cid, seq, error_response(400, "bad_request", *e));
    return;
  }
  if (!st.governor) {
    answer(self, cid, seq, error_response(503, "unavailable", "the resource governor is not running"));
    return;
  }
  auto apply = [self, cid, seq, ms](uint64_t budget) {
    self->request(self->state.governor, self->state.opts.request_timeout, pressure_atom::value,
                  budget, ms)
      .then(
        [self, cid, seq, ms, budget] {
          std::string out;
          json::writer w(out);
          w.begin_object().field("kind", "governor_pressure").field("memory_bytes", budget)
            .field("duration_ms", ms).field("outcome", "injected").end_object();
          answer(self, cid, seq, json_response(202, std::move(out)));
        },
        [self, cid, seq](caf::error& err) { answer(self, cid, seq, from_error(err)); });
  };
  if (bytes > 0)
    return apply(bytes);
  self->request(st.governor, st.opts.request_timeout, get_atom::value)
    .then(
      [apply](governor_state& g) {
        apply(std::max<uint64_t>(g.memory_in_use_bytes / 2, 1 << 20));
      },
      [self, cid, seq](caf::error& err) { answer(self, cid, seq, from_error(err)); });
}

// --- Events (long poll) ----------------------------------------------------------

/// The answer to a GET /v1/events with `after`: the events newer than it
/// (at most 1000), the seq to ask after next, and how many the ring lost.
http::response events_answer(const api_state& st, uint64_t after) {
  std::string out;
  json::writer w(out);
  uint64_t lost = 0;
  if (!st.events.empty() && after + 1 < st.events.front().seq)
    lost = st.events.front().seq - after - 1;
  uint64_t next = std::min(after, st.last_event_seq);
  w.begin_object().key("events").begin_array();
  std::size_t n = 0;
  for (const auto& e : st.events) {
    if (e.seq <= after)
      continue;
    if (++n > 1000)
      break;
    w.begin_object()
      .field("seq", e.seq)
      .field("ts_ms", static_cast<long long>(e.ts_ms))
      .field("agent", e.ev.agent_id)
      .field("machine", e.ev.machine)
      .field("kind", e.ev.kind == agent_event_kind::down ? "down" : "ready")
      .field("reason", e.ev.reason)
      .field("detail", e.ev.detail)
      .field("restarts", e.ev.restarts)
      .field("failures", e.ev.failures)
      .end_object();
    next = e.seq;
  }
  w.end_array().field("next", next).field("lost", lost).end_object();
  return json_response(200, std::move(out));
}

void get_events(api_actor* self, io::handle_id cid, uint64_t seq, const http::request& req) {
  auto& st = self->state;
  field_error err;
  auto after = query_uint(req.query, "after", err).value_or(0);
  auto wait = query_uint(req.query, "wait_ms", err).value_or(0);
  if (err) {
    answer(self, cid, seq, error_response(400, "bad_request", *err));
    return;
  }
  bool newer = st.last_event_seq > after;
  // A client that lost events must hear it at once, not after the wait.
  if (newer || wait == 0) {
    answer(self, cid, seq, events_answer(st, after));
    return;
  }
  auto ms = std::min(std::chrono::milliseconds{wait}, st.opts.max_event_wait);
  auto id = st.next_waiter++;
  st.waiters.push_back(event_waiter{id, cid, seq, after});
  self->delayed_send(self, ms, events_wait_atom::value, id);
}

void on_agent_event(api_actor* self, const agent_event& ev) {
  auto& st = self->state;
  // steady time -> Unix time, so that a client in another process (or on
  // another host) can place it.
  auto age = steady::now() - steady::time_point{std::chrono::nanoseconds{ev.at_ns}};
  auto wall = std::chrono::system_clock::now() - age;
  auto ts_ms = std::chrono::duration_cast<std::chrono::milliseconds>(wall.time_since_epoch()).count();
  st.events.push_back(stored_event{++st.last_event_seq, ts_ms, ev});
  while (st.events.size() > std::max<std::size_t>(st.opts.event_ring, 1))
    st.events.pop_front();
  auto waiters = std::move(st.waiters);
  st.waiters.clear();
  for (const auto& w : waiters)
    answer(self, w.cid, w.seq, events_answer(st, w.after));
}

// --- The supervisor's settings -----------------------------------------------------

void get_supervisor(api_actor* self, io::handle_id cid, uint64_t seq) {
  auto& st = self->state;
  if (!st.spawner) {
    answer(self, cid, seq, error_response(503, "unavailable", "the spawner is not running"));
    return;
  }
  self->request(st.spawner, st.opts.request_timeout, calls_atom::value)
    .then(
      [self, cid, seq](uint64_t received, uint64_t answered) {
        const auto& o = self->state.opts;
        std::string out;
        json::writer w(out);
        w.begin_object()
          .field("instance", o.instance)
          .field("pid", static_cast<long long>(::getpid()))
          .key("agents").begin_object()
          .field("memory_mb", o.agents.memory_mb)
          .field("pids", o.agents.pids)
          .field("cpu_weight", o.agents.cpu_weight)
          .field("workspace_mb", o.agents.workspace_mb)
          .field("heartbeat_ms", o.agents.heartbeat_ms)
          .field("hang_timeout_ms", o.agents.hang_timeout_ms)
          .field("max_calls_in_flight", o.agents.max_calls_in_flight)
          .field("ready_timeout_ms", o.agents.ready_timeout_ms)
          .field("allow_faults", o.agents.allow_faults)
          .end_object()
          .key("supervision").begin_object()
          .field("strategy", to_string(o.supervision.strategy))
          .field("restart", to_string(o.supervision.restart))
          .field("max_restarts", o.supervision.max_restarts)
          .field("period_ms", o.supervision.period_ms)
          .field("min_backoff_ms", o.supervision.min_backoff_ms)
          .field("max_backoff_ms", o.supervision.max_backoff_ms)
          .field("random_factor", o.supervision.random_factor)
          .field("shutdown_timeout_ms", o.supervision.shutdown_timeout_ms)
          .end_object()
          .key("calls").begin_object()
          .field("received", received)
          .field("answered", answered)
          .end_object()
          .end_object();
        answer(self, cid, seq, json_response(200, std::move(out)));
      },
      [self, cid, seq](caf::error& err) { answer(self, cid, seq, from_error(err)); });
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
  if (seg.size() == 4 && !id.empty() && seg[3] == "faults") {
    if (req.method == "POST")
      inject_fault(self, cid, seq, req, std::move(id));
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
  } else if (seg.size() == 3 && seg[0] == "v1" && seg[1] == "governor" && seg[2] == "pressure") {
    if (req.method == "POST")
      governor_pressure(self, cid, seq, req);
    else
      answer(self, cid, seq, method_not_allowed("POST"));
  } else if (seg.size() == 2 && seg[0] == "v1" && seg[1] == "events") {
    if (is_get(req))
      get_events(self, cid, seq, req);
    else
      answer(self, cid, seq, method_not_allowed("GET, HEAD"));
  } else if (seg.size() == 2 && seg[0] == "v1" && seg[1] == "supervisor") {
    if (is_get(req))
      get_supervisor(self, cid, seq);
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
  // Every agent's downs and (re)starts, for GET /v1/events. A spawner that
  // does not take observers answers with an error message (CAF 0.17 sends
  // a handler's result back even for a plain send): that must not end the
  // API, whose own requests all carry their error handlers.
  self->set_error_handler([](caf::error& err) {
    spdlog::warn("api: an unsolicited error: {}", caf::to_string(err));
  });
  if (st.spawner)
    self->send(st.spawner, observe_atom::value, me);
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
    [self](const agent_event& ev) { on_agent_event(self, ev); },
    [self](events_wait_atom, uint64_t id) {
      auto& s = self->state;
      auto it = std::find_if(s.waiters.begin(), s.waiters.end(),
                             [id](const event_waiter& w) { return w.id == id; });
      if (it == s.waiters.end())
        return; // answered by an event already
      auto w = *it;
      s.waiters.erase(it);
      answer(self, w.cid, w.seq, events_answer(s, w.after));
    },
  };
}

} // namespace

caf::actor spawn_api(caf::actor_system& sys, io::io_thread& io, api_options opts,
                     caf::actor spawner, caf::actor governor) {
  return sys.spawn(api_impl, &io, std::move(opts), std::move(spawner), std::move(governor));
}

} // namespace agentvisor

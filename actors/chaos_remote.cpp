// The remote chaos transport (chaos_remote.hpp): every request of the runner
// becomes one HTTP request on its own connection (Connection: close), whose
// response comes back through the I/O thread as stream_data and is parsed
// with the client half of src/io/http_client.

#include "chaos_remote.hpp"

#include "spawner.hpp"

#include "agentvisor/io.hpp"
#include "agentvisor/json.hpp"
#include "agentvisor/log.hpp"
#include "agentvisor/messages.hpp"
#include "io/http_client.hpp"

#include <caf/all.hpp>

#include <simdjson.h>

#include <functional>
#include <set>
#include <unordered_map>

namespace agentvisor {

namespace {

using std::chrono::milliseconds;

using req_timeout_atom = caf::atom_constant<caf::atom("rm_timeout")>;
using poll_atom = caf::atom_constant<caf::atom("rm_poll")>;

/// Reads an optional field: `out` keeps its value when absent or mistyped.
template <class R, class T>
void take(R&& r, T& out) {
  if (std::forward<R>(r).get(out) != simdjson::SUCCESS) {
  }
}

/// A response, or why there is none.
struct outcome {
  std::optional<http::client_response> response;
  std::string error;
};

struct pending {
  http::response_parser parser;
  std::function<void(outcome)> done;
};

struct remote_state {
  io::io_thread* io = nullptr;
  chaos_remote_options opts;
  std::unordered_map<io::handle_id, pending> conns;
  simdjson::dom::parser json;
  caf::actor observer;
  uint64_t after = uint64_t{1} << 62; // the first poll learns the position
  bool first_poll = true;
  std::set<std::string> agents;   ///< started by this run
  std::set<std::string> machines; ///< every machine of those agents seen

  remote_state() = default;
  remote_state(const remote_state&) = delete;
  remote_state& operator=(const remote_state&) = delete;
  ~remote_state() {
    if (io != nullptr)
      for (auto& [id, p] : conns)
        io->close(id);
  }
  static inline const char* name = "chaos_remote";
};

using self_ptr = caf::stateful_actor<remote_state>*;

std::string url_of(const remote_state& st) {
  return "http://" + http::url{st.opts.host, st.opts.port, st.opts.prefix}.authority()
         + st.opts.prefix;
}

void complete(self_ptr self, io::handle_id id, outcome o) {
  auto& st = self->state;
  auto it = st.conns.find(id);
  if (it == st.conns.end())
    return;
  auto done = std::move(it->second.done);
  st.conns.erase(it);
  st.io->close(id);
  done(std::move(o));
}

/// One request on its own connection; `done` runs in the actor's context.
void send(self_ptr self, std::string method, std::string target, std::string body,
          milliseconds timeout, std::function<void(outcome)> done) {
  auto& st = self->state;
  http::client_request r;
  r.method = std::move(method);
  r.target = st.opts.prefix + target;
  r.host = http::url{st.opts.host, st.opts.port, {}}.authority();
  r.headers.emplace_back("Authorization", "Bearer " + st.opts.token);
  r.body = std::move(body);
  auto id = st.io->connect_tcp(caf::actor_cast<caf::actor>(self), st.opts.host, st.opts.port);
  st.io->write(id, http::encode(r));
  st.conns.emplace(id, pending{http::response_parser{}, std::move(done)});
  self->delayed_send(self, timeout, req_timeout_atom::value, id);
}

/// The errc an error answer names in its body, with its message.
caf::error error_of(simdjson::dom::parser& json, const http::client_response& r) {
  std::string_view code, message;
  simdjson::dom::element doc;
  if (json.parse(r.body).get(doc) == simdjson::SUCCESS) {
    take(doc["error"]["code"].get_string(), code);
    take(doc["error"]["message"].get_string(), message);
  }
  auto text = "HTTP " + std::to_string(r.status) + (code.empty() ? "" : " " + std::string{code})
              + (message.empty() ? "" : ": " + std::string{message});
  for (uint8_t c = 1; c <= static_cast<uint8_t>(errc::internal); ++c)
    if (to_string(static_cast<errc>(c)) == code)
      return make_error(static_cast<errc>(c), std::string{message});
  return make_error(r.status >= 500 ? errc::internal : errc::bad_request, text);
}

/// Sends and turns the answer into `ok(doc)` for status `want`, else into
/// the error it names; transport failures are errc::internal.
template <class Ok, class Fail>
void ask(self_ptr self, std::string method, std::string target, std::string body, int want,
         milliseconds timeout, Ok ok, Fail fail) {
  auto what = method + " " + target;
  send(self, std::move(method), std::move(target), std::move(body), timeout,
       [self, want, ok, fail, what](outcome o) mutable {
         auto& st = self->state;
         if (!o.response) {
           fail(make_error(o.error.find("timed out") != std::string::npos ? errc::timeout
                                                                          : errc::internal,
                           what + " at " + url_of(st) + ": " + o.error));
           return;
         }
         if (o.response->status != want) {
           fail(error_of(st.json, *o.response));
           return;
         }
         simdjson::dom::element doc;
         if (auto e = st.json.parse(o.response->body).get(doc)) {
           fail(make_error(errc::internal, what + ": the answer is not JSON ("
                                             + simdjson::error_message(e) + ")"));
           return;
         }
         ok(doc);
       });
}

agent_info agent_from(simdjson::dom::element doc) {
  agent_info a;
  std::string_view s;
  if (doc["id"].get_string().get(s) == simdjson::SUCCESS)
    a.id = std::string{s};
  if (doc["machine"].get_string().get(s) == simdjson::SUCCESS)
    a.machine = std::string{s};
  if (doc["name"].get_string().get(s) == simdjson::SUCCESS)
    a.name = std::string{s};
  if (doc["backend"].get_string().get(s) == simdjson::SUCCESS)
    a.backend = std::string{s};
  int64_t pid = 0;
  if (doc["pid"].get_int64().get(pid) == simdjson::SUCCESS)
    a.pid = static_cast<int>(pid);
  uint64_t restarts = 0;
  if (doc["restarts"].get_uint64().get(restarts) == simdjson::SUCCESS)
    a.restarts = static_cast<uint32_t>(restarts);
  return a;
}

tool_result tool_from(simdjson::dom::element doc) {
  tool_result r;
  bool ok = true;
  take(doc["ok"].get_bool(), ok);
  r.ok = ok;
  simdjson::dom::element res;
  if (doc["result"].get(res) == simdjson::SUCCESS)
    r.result_json = simdjson::minify(res);
  std::string_view s;
  if (doc["error"]["code"].get_string().get(s) == simdjson::SUCCESS)
    r.error_code = std::string{s};
  if (doc["error"]["message"].get_string().get(s) == simdjson::SUCCESS)
    r.error_message = std::string{s};
  uint64_t attempts = 1;
  if (doc["attempts"].get_uint64().get(attempts) == simdjson::SUCCESS)
    r.attempts = static_cast<uint32_t>(attempts);
  return r;
}

std::string pct(std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

// --- events --------------------------------------------------------------------------

void poll(self_ptr self);

void on_events(self_ptr self, simdjson::dom::element doc) {
  auto& st = self->state;
  uint64_t next = st.after, lost = 0;
  take(doc["next"].get_uint64(), next);
  take(doc["lost"].get_uint64(), lost);
  if (lost > 0 && !st.first_poll)
    self->send(st.observer, events_lost_atom::value, lost);
  st.first_poll = false;
  simdjson::dom::array events;
  if (doc["events"].get_array().get(events) == simdjson::SUCCESS) {
    auto steady_now = std::chrono::steady_clock::now().time_since_epoch();
    auto wall_now_ms = std::chrono::duration_cast<milliseconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    for (auto e : events) {
      std::string_view agent, machine, kind, reason, detail;
      int64_t ts_ms = 0;
      uint64_t restarts = 0, failures = 0;
      take(e["agent"].get_string(), agent);
      take(e["machine"].get_string(), machine);
      take(e["kind"].get_string(), kind);
      take(e["reason"].get_string(), reason);
      take(e["detail"].get_string(), detail);
      take(e["ts_ms"].get_int64(), ts_ms);
      take(e["restarts"].get_uint64(), restarts);
      take(e["failures"].get_uint64(), failures);
      if (!st.agents.count(std::string{agent}))
        continue; // another client's agent
      if (!machine.empty())
        st.machines.insert(std::string{machine});
      agent_event ev;
      ev.agent_id = std::string{agent};
      ev.machine = std::string{machine};
      ev.kind = kind == "down" ? agent_event_kind::down : agent_event_kind::ready;
      ev.reason = std::string{reason};
      ev.detail = std::string{detail};
      ev.restarts = static_cast<uint32_t>(restarts);
      ev.failures = static_cast<uint32_t>(failures);
      // The server's Unix time, placed on this process's steady clock.
      auto age = milliseconds{wall_now_ms - ts_ms};
      ev.at_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(steady_now - age).count();
      self->send(st.observer, std::move(ev));
    }
  }
  st.after = next;
}

void poll(self_ptr self) {
  auto& st = self->state;
  if (!st.observer)
    return;
  auto wait = st.first_poll ? 0u : st.opts.event_wait_ms;
  ask(self, "GET",
      "/v1/events?after=" + std::to_string(st.after) + "&wait_ms=" + std::to_string(wait), {}, 200,
      st.opts.request_timeout + milliseconds{wait},
      [self](simdjson::dom::element doc) {
        on_events(self, doc);
        poll(self);
      },
      [self](const caf::error& err) {
        spdlog::warn("chaos: GET /v1/events: {}; polling again", view(err).message);
        self->delayed_send(self, milliseconds(200), poll_atom::value);
      });
}

caf::behavior remote_impl(self_ptr self, io::io_thread* io, chaos_remote_options opts) {
  auto& st = self->state;
  st.io = io;
  st.opts = std::move(opts);
  return {
    [self](start_atom, agent_request& req) -> caf::result<agent_info> {
      auto rp = self->make_response_promise();
      std::string body;
      json::writer w(body);
      w.begin_object().field("name", req.name);
      auto& o = self->state.opts;
      if (auto mb = req.memory_mb ? req.memory_mb : o.memory_mb)
        w.field("memory_mb", mb);
      if (auto p = req.pids ? req.pids : o.pids)
        w.field("pids", p);
      w.end_object();
      ask(self, "POST", "/v1/agents", std::move(body), 201, o.request_timeout,
          [self, rp](simdjson::dom::element doc) mutable {
            auto a = agent_from(doc);
            self->state.agents.insert(a.id);
            self->state.machines.insert(a.machine.empty() ? a.id : a.machine);
            rp.deliver(std::move(a));
          },
          [rp](const caf::error& e) mutable { rp.deliver(e); });
      return caf::delegated<agent_info>{};
    },
    [self](call_atom, const std::string& id, tool_call& c) -> caf::result<tool_result> {
      auto rp = self->make_response_promise();
      auto target = "/v1/agents/" + pct(id) + "/tools/" + pct(c.tool)
                    + "?retryable=" + (c.retryable ? "true" : "false");
      if (c.timeout_ms > 0)
        target += "&timeout_ms=" + std::to_string(c.timeout_ms);
      auto timeout = milliseconds{c.timeout_ms} * 2 + self->state.opts.request_timeout;
      ask(self, "POST", std::move(target), std::move(c.args_json), 200, timeout,
          [rp](simdjson::dom::element doc) mutable { rp.deliver(tool_from(doc)); },
          [rp](const caf::error& e) mutable { rp.deliver(e); });
      return caf::delegated<tool_result>{};
    },
    [self](stop_atom, const std::string& id) -> caf::result<agent_info> {
      auto rp = self->make_response_promise();
      ask(self, "DELETE", "/v1/agents/" + pct(id), {}, 200, self->state.opts.request_timeout,
          [rp](simdjson::dom::element doc) mutable { rp.deliver(agent_from(doc)); },
          [rp](const caf::error& e) mutable { rp.deliver(e); });
      return caf::delegated<agent_info>{};
    },
    [self](calls_atom) -> caf::result<uint64_t, uint64_t> {
      auto rp = self->make_response_promise();
      ask(self, "GET", "/v1/supervisor", {}, 200, self->state.opts.request_timeout,
          [rp](simdjson::dom::element doc) mutable {
            uint64_t received = 0, answered = 0;
            take(doc["calls"]["received"].get_uint64(), received);
            take(doc["calls"]["answered"].get_uint64(), answered);
            rp.deliver(received, answered);
          },
          [rp](const caf::error& e) mutable { rp.deliver(e); });
      return caf::delegated<uint64_t, uint64_t>{};
    },
    [self](observe_atom, caf::actor& observer) {
      self->state.observer = std::move(observer);
      poll(self);
    },
    [self](poll_atom) { poll(self); },
    [self](fault_atom, const std::string& id, const std::string& kind, uint32_t duration_ms,
           bool abort) -> caf::result<std::string> {
      auto rp = self->make_response_promise();
      std::string body;
      json::writer w(body);
      w.begin_object().field("kind", kind);
      if (auto k = chaos::fault_kind_from(kind); k && chaos::has_duration(*k))
        w.field("duration_ms", duration_ms);
      if (kind == "crash")
        w.field("how", abort ? "abort" : "exit");
      w.end_object();
      ask(self, "POST", "/v1/agents/" + pct(id) + "/faults", std::move(body), 202,
          milliseconds{duration_ms} + self->state.opts.request_timeout,
          [rp](simdjson::dom::element doc) mutable {
            std::string_view o = "injected";
            take(doc["outcome"].get_string(), o);
            rp.deliver(std::string{o});
          },
          [rp](const caf::error& e) mutable { rp.deliver(e); });
      return caf::delegated<std::string>{};
    },
    [self](pressure_atom, uint32_t duration_ms) -> caf::result<std::string> {
      auto rp = self->make_response_promise();
      ask(self, "POST", "/v1/governor/pressure",
          "{\"duration_ms\":" + std::to_string(duration_ms) + "}", 202,
          self->state.opts.request_timeout,
          [rp](simdjson::dom::element) mutable { rp.deliver(std::string{"injected"}); },
          [rp](const caf::error& e) mutable { rp.deliver(e); });
      return caf::delegated<std::string>{};
    },
    [self](http_atom, std::string& method, std::string& target,
           std::string& body) -> caf::result<int, std::string> {
      auto rp = self->make_response_promise();
      send(self, std::move(method), std::move(target), std::move(body),
           self->state.opts.request_timeout, [self, rp](outcome o) mutable {
             if (o.response)
               rp.deliver(o.response->status, std::move(o.response->body));
             else
               rp.deliver(make_error(errc::internal, url_of(self->state) + ": " + o.error));
           });
      return caf::delegated<int, std::string>{};
    },
    [self](list_atom) {
      auto& m = self->state.machines;
      return std::vector<std::string>(m.begin(), m.end());
    },
    // The I/O thread's answers.
    [self](const io::tcp_connected&) {},
    [self](io::stream_data& d) {
      auto& st = self->state;
      auto it = st.conns.find(d.id);
      if (it == st.conns.end())
        return;
      auto f = it->second.parser.feed(d.bytes);
      if (!f.responses.empty())
        complete(self, d.id, outcome{std::move(f.responses.front()), {}});
      else if (f.error)
        complete(self, d.id, outcome{std::nullopt, *f.error});
    },
    [self](const io::stream_closed& c) {
      auto& st = self->state;
      auto it = st.conns.find(c.id);
      if (it == st.conns.end())
        return;
      auto f = it->second.parser.finish();
      if (!f.responses.empty())
        complete(self, c.id, outcome{std::move(f.responses.front()), {}});
      else
        complete(self, c.id,
                 outcome{std::nullopt,
                         f.error ? *f.error
                                 : "the connection ended before a response"
                                     + (c.reason.empty() ? std::string{} : " (" + c.reason + ")")});
    },
    [self](const io::io_failed& f) { complete(self, f.id, outcome{std::nullopt, f.what}); },
    [self](req_timeout_atom, io::handle_id id) {
      complete(self, id, outcome{std::nullopt, "no answer: timed out"});
    },
  };
}

} // namespace

caf::actor spawn_chaos_remote(caf::actor_system& sys, io::io_thread& io,
                              chaos_remote_options opts) {
  return sys.spawn(remote_impl, &io, std::move(opts));
}

} // namespace agentvisor

#pragma once
// A spawner in a real actor_system, driven through requests and answers,
// over whatever children a factory makes: the test children of
// spawner_otp_test.cpp, or real vm_actors (the sandbox program to come).
// The fixture wraps the factory to record each spawn, and a watcher actor
// monitors every child to record each down, so that scenarios can check
// which children restarted and in which order without knowing their kind.

#include "spawner.hpp"
#include "with_messages.hpp"

#include "agentvisor/messages.hpp"

#include <spdlog/spdlog.h>

#include <caf/all.hpp>
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace agentvisor::testing {

using ids = std::vector<std::string>;

using namespace std::chrono_literals;

using watch_atom = caf::atom_constant<caf::atom("watch")>;

/// What happened to children, in the order it happened: "spawn a-1",
/// "down a-1 crashed: boom". Shared between the test's thread, the
/// spawner's factory and the watcher.
class child_log {
public:
  void add(std::string event) {
    std::lock_guard<std::mutex> g{m_};
    events_.push_back(std::move(event));
  }

  void spawned(const std::string& id, const caf::actor& a) {
    std::lock_guard<std::mutex> g{m_};
    events_.push_back("spawn " + id);
    latest_[id] = a;
    all_.push_back(a);
    ++spawns_[id];
  }

  std::vector<std::string> events() const {
    std::lock_guard<std::mutex> g{m_};
    return events_;
  }

  /// Events from index `from` on whose text starts with `prefix`, with the
  /// prefix cut off ("spawn " -> the ids, in order).
  std::vector<std::string> since(std::size_t from, const std::string& prefix) const {
    std::lock_guard<std::mutex> g{m_};
    std::vector<std::string> out;
    for (auto i = from; i < events_.size(); ++i)
      if (events_[i].rfind(prefix, 0) == 0)
        out.push_back(events_[i].substr(prefix.size()));
    return out;
  }

  std::size_t size() const {
    std::lock_guard<std::mutex> g{m_};
    return events_.size();
  }

  int spawns(const std::string& id) const {
    std::lock_guard<std::mutex> g{m_};
    auto i = spawns_.find(id);
    return i == spawns_.end() ? 0 : i->second;
  }

  int total_spawns() const {
    std::lock_guard<std::mutex> g{m_};
    int n = 0;
    for (auto& [id, k] : spawns_)
      n += k;
    return n;
  }

  caf::actor latest(const std::string& id) const {
    std::lock_guard<std::mutex> g{m_};
    auto i = latest_.find(id);
    return i == latest_.end() ? caf::actor{} : i->second;
  }

  std::vector<caf::actor> all() const {
    std::lock_guard<std::mutex> g{m_};
    return all_;
  }

private:
  mutable std::mutex m_;
  std::vector<std::string> events_;
  std::map<std::string, caf::actor> latest_;
  std::map<std::string, int> spawns_;
  std::vector<caf::actor> all_;
};

struct watcher_state {
  std::map<caf::actor_addr, std::string> ids;
};

/// Monitors children and logs "down <id> <reason>" (the reason's name
/// only: details differ between test children and real machines).
inline caf::behavior watcher(caf::stateful_actor<watcher_state>* self,
                             std::shared_ptr<child_log> log) {
  self->set_down_handler([=](caf::down_msg& dm) {
    auto i = self->state.ids.find(dm.source);
    if (i == self->state.ids.end())
      return;
    log->add("down " + i->second + " "
             + std::string(to_string(down_info_from(dm.reason, i->second).reason)));
    self->state.ids.erase(i);
  });
  return {
    [=](watch_atom, const std::string& id, const caf::actor& a) {
      self->state.ids[a.address()] = id;
      self->monitor(a);
    },
  };
}

/// Options that make tests quick without depending on speed: short
/// backoffs, a generous intensity, short stop timeouts.
inline spawner_options test_options() {
  spawner_options o;
  o.supervision.strategy = restart_strategy::one_for_one;
  o.supervision.max_restarts = 100;
  o.supervision.period_ms = 60000;
  o.supervision.min_backoff_ms = 10;
  o.supervision.max_backoff_ms = 50;
  o.supervision.random_factor = 0.2;
  o.supervision.shutdown_timeout_ms = 2000;
  o.defaults.memory_mb = 64;
  o.grant_deadline_ms = 1000;
  return o;
}

struct spawner_fixture {
  /// The fixture's own system, unless it runs in another's (a real host).
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> own_sys;
  caf::actor_system& sys;
  std::optional<caf::scoped_actor> self_{std::in_place, sys};
  std::shared_ptr<child_log> log = std::make_shared<child_log>();
  caf::actor watch = sys.spawn(watcher, log);
  /// Makes one child (test child or vm_actor); wrapped by start_spawner().
  child_factory inner;
  spawner_options opts = test_options();
  caf::actor governor;
  caf::actor sp;
  std::vector<caf::actor> extra; // killed at the end

  /// The backend and I/O thread for real vm_actors (unset for test children).
  backend_actor backend;
  io::io_thread* io = nullptr;
  /// Leave spawner_context.factory empty: the spawner spawns vm_actors on
  /// its own (the production path). The log then records no spawns and
  /// kill() cannot find children; tests observe them through get (pids).
  bool default_factory = false;

  explicit spawner_fixture(child_factory f)
    : own_sys(std::make_unique<caf::actor_system>(with_messages(cfg))),
      sys(*own_sys),
      inner(std::move(f)) {
    spdlog::set_level(spdlog::level::warn); // the spawner's info lines are noise here
  }

  /// Runs in `host_sys` (whose config registered the message types).
  spawner_fixture(caf::actor_system& host_sys, child_factory f)
    : sys(host_sys), inner(std::move(f)) {
    spdlog::set_level(spdlog::level::warn);
  }

  ~spawner_fixture() {
    if (sp) {
      // An ordered shutdown first, so that no child outlives the test.
      self()->request(sp, caf::infinite, shutdown_atom::value).receive([] {}, [](caf::error&) {});
      caf::anon_send_exit(sp, caf::exit_reason::kill);
    }
    for (auto& a : log->all())
      caf::anon_send_exit(a, caf::exit_reason::kill);
    for (auto& a : extra)
      caf::anon_send_exit(a, caf::exit_reason::kill);
    caf::anon_send_exit(watch, caf::exit_reason::kill);
    self_.reset();
  }

  caf::scoped_actor& self() {
    return *self_;
  }

  void start_spawner() {
    spawner_context ctx;
    ctx.backend = backend;
    ctx.io = io;
    ctx.governor = governor;
    if (!default_factory)
      ctx.factory = [log = log, watch = watch, inner = inner](caf::actor_system& s,
                                                            const vm_options& o,
                                                            const caf::actor& parent) {
      auto a = inner(s, o, parent);
      if (a) {
        log->spawned(o.spec.id, a);
        caf::anon_send(watch, watch_atom::value, o.spec.id, a);
      }
      return a;
    };
    sp = spawn_spawner(sys, std::move(ctx), opts);
  }

  template <class T, class... Ts>
  caf::expected<T> ask(Ts&&... xs) {
    std::optional<caf::expected<T>> out;
    self()
      ->request(sp, caf::infinite, std::forward<Ts>(xs)...)
      .receive([&](T& x) { out.emplace(std::move(x)); },
               [&](caf::error& err) { out.emplace(std::move(err)); });
    return std::move(*out);
  }

  caf::expected<agent_info> start(std::string name, restart_type r = restart_type::permanent,
                                  uint64_t memory_mb = 0) {
    agent_request req;
    req.name = std::move(name);
    req.restart = r;
    req.restart_set = true;
    req.memory_mb = memory_mb;
    return ask<agent_info>(start_atom::value, req);
  }

  /// Starts an agent that must come up; returns its id.
  std::string start_ok(std::string name, restart_type r = restart_type::permanent) {
    auto x = start(name, r);
    REQUIRE_MESSAGE(x, "start " << name << ": " << (x ? "" : view(x.error()).message));
    return x->id;
  }

  /// Ordered shutdown; true once the spawner answers (an empty answer).
  bool shutdown() {
    bool ok = false;
    self()->request(sp, caf::infinite, shutdown_atom::value).receive([&] { ok = true; },
                                                                     [](caf::error&) {});
    return ok;
  }

  caf::expected<agent_info> get(const std::string& id) {
    return ask<agent_info>(get_atom::value, id);
  }

  caf::expected<tool_result> call(const std::string& id, tool_call c) {
    return ask<tool_result>(call_atom::value, id, std::move(c));
  }

  caf::expected<agent_info> stop(const std::string& id) {
    return ask<agent_info>(stop_atom::value, id);
  }

  std::vector<agent_info> list() {
    auto x = ask<std::vector<agent_info>>(list_atom::value);
    REQUIRE(x);
    return *x;
  }

  /// (received, answered) as the spawner counts tool calls.
  std::pair<uint64_t, uint64_t> call_counts() {
    std::pair<uint64_t, uint64_t> out;
    self()
      ->request(sp, caf::infinite, calls_atom::value)
      .receive([&](uint64_t r, uint64_t a) { out = {r, a}; },
               [&](caf::error& err) { FAIL(caf::to_string(err)); });
    return out;
  }

  /// Ends the child's current machine with `reason` (vm_actor protocol).
  void kill(const std::string& id, down_reason reason, std::string detail) {
    auto a = log->latest(id);
    REQUIRE(a);
    caf::anon_send(a, kill_atom::value, reason, std::move(detail));
  }

  /// Waits (generously: the machine is shared) until `pred` holds.
  template <class Pred>
  bool eventually(Pred pred, std::chrono::milliseconds limit = 20s) {
    auto until = std::chrono::steady_clock::now() + limit;
    while (!pred()) {
      if (std::chrono::steady_clock::now() > until)
        return false;
      std::this_thread::sleep_for(5ms);
    }
    return true;
  }

  /// Until the spawner reports `id` ready with `restarts` restarts.
  bool ready_after(const std::string& id, uint32_t restarts) {
    return eventually([&] {
      auto x = get(id);
      return x && x->state == vm_state::ready && x->restarts == restarts;
    });
  }

  /// The first `n` downs logged since `mark` (the watcher logs them on its
  /// own thread: wait for them).
  ids downs_since(std::size_t mark, std::size_t n) {
    eventually([&] { return log->since(mark, "down ").size() >= n; });
    return log->since(mark, "down ");
  }

  /// Until `id` is gone from the spawner.
  bool gone(const std::string& id) {
    return eventually([&] {
      auto x = get(id);
      return !x && view(x.error()).code == errc::not_found;
    });
  }
};

} // namespace agentvisor::testing

namespace doctest {
template <>
struct StringMaker<agentvisor::testing::ids> {
  static String convert(const agentvisor::testing::ids& xs) {
    std::string out = "{";
    for (const auto& x : xs)
      out += (out.size() > 1 ? ", " : "") + x;
    return (out + "}").c_str();
  }
};
} // namespace doctest

// task<T> over CAF 0.17: real actors in a real actor_system, driven through
// requests and answers. Frame lifetime is checked by counting constructions
// and destructions of a guard living inside coroutine frames, after the
// actor's down_msg (a response delivered from a coroutine reaches us before
// the frame that delivered it is destroyed).
#include <agentvisor/task.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <caf/all.hpp>
#include <doctest/doctest.h>

using agentvisor::ask;
using agentvisor::launch;
using agentvisor::sleep_for;
using agentvisor::task;
using agentvisor::within;

namespace {

using add_atom = caf::atom_constant<caf::atom("add")>;
using fail_atom = caf::atom_constant<caf::atom("fail")>;
using nop_atom = caf::atom_constant<caf::atom("nop")>;
using run_atom = caf::atom_constant<caf::atom("run")>;
using start_atom = caf::atom_constant<caf::atom("start")>;
using ping_atom = caf::atom_constant<caf::atom("ping")>;
using pong_atom = caf::atom_constant<caf::atom("pong")>;
using wait_atom = caf::atom_constant<caf::atom("wait")>;
using open_atom = caf::atom_constant<caf::atom("open")>;

using self_ptr = caf::event_based_actor*;
using int_promise = caf::typed_response_promise<int>;

// -- guard objects placed in coroutine frames ---------------------------------

struct counters {
  std::atomic<int> constructed{0};
  std::atomic<int> destroyed{0};
  std::atomic<int> resumed{0};
};

/// Lives in a coroutine frame and counts its construction and destruction.
/// As a local it dies at the end of the coroutine body; as a by-value
/// parameter it lives in the frame until the frame itself is destroyed (a
/// moved-from guard counts for nothing).
class guard {
public:
  explicit guard(counters& c) : c_(&c) {
    ++c_->constructed;
  }
  guard(guard&& other) noexcept : c_(std::exchange(other.c_, nullptr)) {}
  guard(const guard&) = delete;
  guard& operator=(const guard&) = delete;
  guard& operator=(guard&&) = delete;
  ~guard() {
    if (c_ != nullptr)
      ++c_->destroyed;
  }

private:
  counters* c_;
};

// -- peers --------------------------------------------------------------------

/// Adds, fails on request, answers nothing (an empty message) to nop.
caf::behavior calculator() {
  return {
    [](add_atom, int a, int b) { return a + b; },
    [](fail_atom) -> caf::result<int> {
      return caf::make_error(caf::sec::invalid_argument);
    },
    [](nop_atom) {
      // an empty answer
    },
  };
}

struct gate_state {
  std::vector<int_promise> pending;
};

/// Holds every wait request until told to open; then answers them all with 1.
/// A gate never opened is a black hole.
caf::behavior gate(caf::stateful_actor<gate_state>* self) {
  return {
    [=](wait_atom) {
      auto rp = self->make_response_promise<int>();
      self->state.pending.push_back(rp);
      return rp;
    },
    [=](open_atom) {
      for (auto& rp : self->state.pending)
        rp.deliver(1);
      self->state.pending.clear();
    },
  };
}

// -- the actor under test -----------------------------------------------------

/// An actor that, on `run`, runs `body(self)` as a coroutine and answers with
/// its result (a value or an error), and answers `ping` at any time.
template <class Body>
caf::actor spawn_runner(caf::actor_system& sys, Body body) {
  return sys.spawn([body](self_ptr self) -> caf::behavior {
    return {
      [=](run_atom) {
        auto rp = self->make_response_promise<int>();
        launch(self, [=]() mutable -> task<void> {
          caf::expected<int> r = co_await body(self);
          if (r)
            rp.deliver(*r);
          else
            rp.deliver(r.error());
        });
        return rp;
      },
      [](ping_atom) { return pong_atom::value; },
    };
  });
}

/// An actor that, on `start`, launches `body(self)` and answers at once (the
/// coroutine has then reached its first suspension).
template <class Body>
caf::actor spawn_starter(caf::actor_system& sys, Body body) {
  return sys.spawn([body](self_ptr self) -> caf::behavior {
    return {
      [=](start_atom) {
        launch(self, body(self));
        return caf::unit;
      },
    };
  });
}

struct fixture {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  std::vector<caf::actor> spawned;

  ~fixture() {
    for (auto& a : spawned)
      caf::anon_send_exit(a, caf::exit_reason::kill);
  }

  template <class... Ts>
  caf::actor spawn(Ts&&... xs) {
    auto a = sys.spawn(std::forward<Ts>(xs)...);
    spawned.push_back(a);
    return a;
  }

  template <class Body>
  caf::actor runner(Body body) {
    auto a = spawn_runner(sys, std::move(body));
    spawned.push_back(a);
    return a;
  }

  /// Asks `a` to run its coroutine and waits for the answer.
  caf::expected<int> run(const caf::actor& a) {
    std::optional<caf::expected<int>> out;
    self->request(a, caf::infinite, run_atom::value)
      .receive([&](int x) { out.emplace(x); },
               [&](caf::error& err) { out.emplace(std::move(err)); });
    return std::move(*out);
  }

  void start(const caf::actor& a) {
    self->request(a, caf::infinite, start_atom::value)
      .receive([] {}, [](caf::error& err) { FAIL(caf::to_string(err)); });
  }

  /// Kills `a` (or waits for it to end, with kill = false) and returns the
  /// reason from its down_msg.
  caf::error wait_down(const caf::actor& a, bool kill) {
    self->monitor(a);
    if (kill)
      caf::anon_send_exit(a, caf::exit_reason::kill);
    caf::error reason;
    self->receive([&](caf::down_msg& dm) { reason = std::move(dm.reason); });
    return reason;
  }
};

} // namespace

// -- requests -----------------------------------------------------------------

TEST_CASE_FIXTURE(fixture,
                  "a coroutine awaits two requests in sequence and adds up "
                  "their answers") {
  auto calc = spawn(calculator);
  auto a = runner([calc](self_ptr self) -> task<caf::expected<int>> {
    auto x = co_await ask<int>(self, calc, add_atom::value, 1, 2);
    if (!x)
      co_return x.error();
    auto y = co_await ask<int>(self, calc, add_atom::value, *x, 10);
    co_return y;
  });
  auto r = run(a);
  REQUIRE(r);
  CHECK(*r == 13);
}

TEST_CASE_FIXTURE(fixture,
                  "an error response reaches the coroutine as an error value") {
  auto calc = spawn(calculator);
  auto a = runner([calc](self_ptr self) -> task<caf::expected<int>> {
    auto x = co_await ask<int>(self, calc, fail_atom::value);
    co_return x;
  });
  auto r = run(a);
  REQUIRE(!r);
  CHECK(r.error() == caf::sec::invalid_argument);
}

TEST_CASE_FIXTURE(fixture,
                  "a request to a dead actor yields request_receiver_down") {
  auto calc = sys.spawn(calculator);
  CHECK(wait_down(calc, true) == caf::exit_reason::kill);
  auto a = runner([calc](self_ptr self) -> task<caf::expected<int>> {
    co_return co_await ask<int>(self, calc, add_atom::value, 1, 2);
  });
  auto r = run(a);
  REQUIRE(!r);
  CHECK(r.error() == caf::sec::request_receiver_down);
}

TEST_CASE_FIXTURE(fixture,
                  "a target that dies holding the request in a response "
                  "promise never answers: only a timeout ends the wait") {
  auto hole = sys.spawn(gate);
  auto a = runner([hole](self_ptr self) -> task<caf::expected<int>> {
    co_return co_await ask<int>(self, hole,
                                within{std::chrono::milliseconds(200)},
                                wait_atom::value);
  });
  auto pending = self->request(a, caf::infinite, run_atom::value);
  // ping answered: the coroutine has sent its request and is suspended.
  self->request(a, caf::infinite, ping_atom::value)
    .receive([](pong_atom) {},
             [](caf::error& err) { FAIL(caf::to_string(err)); });
  wait_down(hole, true);
  std::optional<caf::error> err;
  pending.receive([](int) {}, [&](caf::error& e) { err = std::move(e); });
  REQUIRE(err);
  // CAF 0.17 sends nothing when a response promise dies undelivered (no
  // broken_promise yet): without the timeout this coroutine would wait
  // until its own actor dies. docs/coroutines.md, trap 4.
  CHECK(*err == caf::sec::request_timeout);
}

TEST_CASE_FIXTURE(fixture,
                  "a request with a timeout yields request_timeout when no "
                  "answer comes") {
  auto hole = spawn(gate);
  auto a = runner([hole](self_ptr self) -> task<caf::expected<int>> {
    co_return co_await ask<int>(self, hole,
                                within{std::chrono::milliseconds(20)},
                                wait_atom::value);
  });
  auto r = run(a);
  REQUIRE(!r);
  CHECK(r.error() == caf::sec::request_timeout);
}

TEST_CASE_FIXTURE(fixture,
                  "a request with a timeout yields the answer when it comes "
                  "in time") {
  auto calc = spawn(calculator);
  auto a = runner([calc](self_ptr self) -> task<caf::expected<int>> {
    auto x = co_await ask<int>(self, calc, within{std::chrono::seconds(30)},
                               add_atom::value, 40, 2);
    // The timeout still fires later for the answered request; CAF drops it
    // and the next await is not disturbed.
    co_await sleep_for(self, std::chrono::milliseconds(1));
    co_return x;
  });
  auto r = run(a);
  REQUIRE(r);
  CHECK(*r == 42);
}

TEST_CASE_FIXTURE(fixture, "ask<void> yields success for an empty answer") {
  auto calc = spawn(calculator);
  auto a = runner([calc](self_ptr self) -> task<caf::expected<int>> {
    caf::expected<void> x = co_await ask<void>(self, calc, nop_atom::value);
    if (!x)
      co_return x.error();
    co_return 7;
  });
  auto r = run(a);
  REQUIRE(r);
  CHECK(*r == 7);
}

TEST_CASE_FIXTURE(fixture,
                  "an answer of another type yields unexpected_response") {
  auto calc = spawn(calculator);
  auto a = runner([calc](self_ptr self) -> task<caf::expected<int>> {
    auto x = co_await ask<std::string>(self, calc, add_atom::value, 1, 1);
    if (x)
      co_return -1;
    co_return x.error();
  });
  auto r = run(a);
  REQUIRE(!r);
  CHECK(r.error() == caf::sec::unexpected_response);
}

// -- sleeping and responsiveness ----------------------------------------------

TEST_CASE_FIXTURE(fixture, "sleep_for resumes after at least the duration") {
  using namespace std::chrono;
  auto a = runner([](self_ptr self) -> task<caf::expected<int>> {
    auto t0 = steady_clock::now();
    co_await sleep_for(self, milliseconds(30));
    auto t1 = steady_clock::now();
    co_await sleep_for(self, milliseconds(0)); // zero: still resumes
    co_return static_cast<int>(duration_cast<microseconds>(t1 - t0).count());
  });
  auto r = run(a);
  REQUIRE(r);
  CHECK(*r >= 30'000);
}

TEST_CASE_FIXTURE(fixture,
                  "the actor answers other messages while a coroutine is "
                  "suspended") {
  auto g = spawn(gate);
  auto after_ping = std::make_shared<std::atomic<bool>>(false);
  auto a = runner([g](self_ptr self) -> task<caf::expected<int>> {
    co_return co_await ask<int>(self, g, wait_atom::value);
  });
  auto pending = self->request(a, caf::infinite, run_atom::value);
  bool ponged = false;
  self->request(a, caf::infinite, ping_atom::value)
    .receive([&](pong_atom) { ponged = true; },
             [](caf::error& err) { FAIL(caf::to_string(err)); });
  CHECK(ponged);
  // The gate got the coroutine's request before the pong was sent, so it is
  // pending there now.
  caf::anon_send(g, open_atom::value);
  std::optional<int> answer;
  pending.receive([&](int x) { answer = x; },
                  [](caf::error& err) { FAIL(caf::to_string(err)); });
  REQUIRE(answer);
  CHECK(*answer == 1);
}

// -- frame lifetime -----------------------------------------------------------

namespace {

task<int> child_waits(self_ptr self, caf::actor hole, counters& c) {
  guard g{c};
  auto x = co_await ask<int>(self, hole, wait_atom::value);
  ++c.resumed;
  co_return x ? *x : -1;
}

task<void> parent_waits(self_ptr self, caf::actor hole, counters& c) {
  guard g{c};
  auto x = co_await child_waits(self, hole, c);
  static_cast<void>(x);
  ++c.resumed;
}

/// Quits its actor, then awaits: the await must never return.
task<void> quits(self_ptr self, counters& c) {
  guard g{c};
  co_await sleep_for(self, std::chrono::milliseconds(1));
  self->quit(caf::sec::runtime_error);
  co_await sleep_for(self, std::chrono::milliseconds(1));
  ++c.resumed;
}

/// The guard is a parameter: it dies with the frame, not with the body.
task<void> ends_at_once(counters& c, guard) {
  ++c.resumed;
  co_return;
}

task<void> sleeps_long(self_ptr self, counters& c) {
  guard g{c};
  co_await sleep_for(self, std::chrono::hours(1));
  ++c.resumed;
}

} // namespace

TEST_CASE_FIXTURE(fixture,
                  "killing the actor while a nested coroutine waits destroys "
                  "every frame and resumes none") {
  counters c;
  auto hole = spawn(gate);
  auto a = spawn_starter(sys, [hole, &c](self_ptr self) {
    return parent_waits(self, hole, c);
  });
  start(a);
  CHECK(c.constructed == 2);
  CHECK(c.destroyed == 0);
  CHECK(wait_down(a, true) == caf::exit_reason::kill);
  CHECK(c.destroyed == 2);
  CHECK(c.resumed == 0);
}

TEST_CASE_FIXTURE(fixture,
                  "killing the actor while a coroutine sleeps destroys the "
                  "frame and resumes nothing") {
  counters c;
  auto a = spawn_starter(sys, [&c](self_ptr self) {
    return sleeps_long(self, c);
  });
  start(a);
  CHECK(c.constructed == 1);
  CHECK(wait_down(a, true) == caf::exit_reason::kill);
  CHECK(c.destroyed == 1);
  CHECK(c.resumed == 0);
}

TEST_CASE_FIXTURE(fixture,
                  "quit from one coroutine destroys the other suspended "
                  "coroutines and its own next await never returns") {
  counters c;
  auto hole = spawn(gate);
  auto a = spawn_starter(sys, [hole, &c](self_ptr self) {
    for (int i = 0; i < 3; ++i)
      launch(self, parent_waits(self, hole, c));
    return quits(self, c);
  });
  start(a);
  CHECK(wait_down(a, false) == caf::sec::runtime_error);
  CHECK(c.constructed == 7);
  CHECK(c.destroyed == 7);
  CHECK(c.resumed == 0);
}

TEST_CASE_FIXTURE(fixture,
                  "a coroutine that never suspends is destroyed when launch "
                  "returns") {
  counters c;
  auto a = spawn_starter(sys, [&c](self_ptr) {
    return ends_at_once(c, guard{c});
  });
  start(a); // answered after launch() returned
  CHECK(c.constructed == 1);
  CHECK(c.destroyed == 1);
  CHECK(c.resumed == 1);
  wait_down(a, true);
}

TEST_CASE_FIXTURE(fixture,
                  "a lambda's captures stay alive while the coroutine it "
                  "launched is suspended") {
  auto a = runner([](self_ptr self) -> task<caf::expected<int>> {
    auto text = std::make_shared<std::string>("captured state");
    auto out = std::make_shared<int>(0);
    launch(self, [self, text, out]() -> task<void> {
      co_await sleep_for(self, std::chrono::milliseconds(1));
      *out = static_cast<int>(text->size()); // captures read after resuming
    });
    while (*out == 0) // no timing assumption: wait until it has run
      co_await sleep_for(self, std::chrono::milliseconds(1));
    co_return *out;
  });
  auto r = run(a);
  REQUIRE(r);
  CHECK(*r == static_cast<int>(std::string("captured state").size()));
}

// -- many coroutines ----------------------------------------------------------

namespace {

struct tally {
  int done = 0;
  int sum = 0;
};

/// One of many root coroutines; the guard lives as long as the root frame.
task<void> one_of_many(self_ptr self, caf::actor calc, std::shared_ptr<tally> t,
                       int i, guard) {
  auto x = co_await ask<int>(self, calc, add_atom::value, i, 1);
  co_await sleep_for(self, std::chrono::milliseconds(1));
  t->sum += x ? *x : -1'000'000;
  ++t->done;
}

} // namespace

TEST_CASE_FIXTURE(fixture, "a thousand coroutines in one actor all complete") {
  static constexpr int n = 1000;
  counters c;
  auto calc = spawn(calculator);
  auto a = runner([calc, &c](self_ptr self) -> task<caf::expected<int>> {
    auto t = std::make_shared<tally>();
    for (int i = 0; i < n; ++i)
      launch(self, one_of_many(self, calc, t, i, guard{c}));
    if (c.constructed != n) // each ran synchronously up to its first await
      co_return caf::make_error(caf::sec::invalid_argument);
    while (t->done < n)
      co_await sleep_for(self, std::chrono::milliseconds(1));
    co_return t->sum;
  });
  auto r = run(a);
  REQUIRE(r);
  CHECK(*r == n * (n + 1) / 2);
  wait_down(a, true);
  CHECK(c.constructed == n);
  CHECK(c.destroyed == n);
}

// -- nesting, void, exceptions ------------------------------------------------

namespace {

task<int> twice(self_ptr self, caf::actor calc, int x) {
  auto r = co_await ask<int>(self, calc, add_atom::value, x, x);
  co_return r ? *r : -1;
}

task<void> bump(int& counter) {
  ++counter;
  co_return;
}

task<int> throws_after_await(self_ptr self) {
  co_await sleep_for(self, std::chrono::milliseconds(1));
  throw std::runtime_error("boom");
}

} // namespace

TEST_CASE_FIXTURE(fixture, "a task awaits nested task<int> and task<void>") {
  auto calc = spawn(calculator);
  auto a = runner([calc](self_ptr self) -> task<caf::expected<int>> {
    int counter = 0;
    int x = co_await twice(self, calc, 5);
    co_await bump(counter);
    auto t = twice(self, calc, x);
    int y = co_await std::move(t);
    co_await bump(counter);
    co_return y + counter;
  });
  auto r = run(a);
  REQUIRE(r);
  CHECK(*r == 22);
}

TEST_CASE_FIXTURE(fixture,
                  "an exception in a nested task reaches the awaiting task") {
  auto a = runner([](self_ptr self) -> task<caf::expected<int>> {
    try {
      co_await throws_after_await(self);
    } catch (const std::runtime_error& e) {
      co_return static_cast<int>(std::string(e.what()).size());
    }
    co_return -1;
  });
  auto r = run(a);
  REQUIRE(r);
  CHECK(*r == 4);
}

TEST_CASE_FIXTURE(fixture,
                  "an exception leaving the root goes to the actor's "
                  "exception handler") {
  counters c;
  auto a = sys.spawn([&c](self_ptr self) -> caf::behavior {
    self->set_exception_handler([](caf::scheduled_actor*, std::exception_ptr&) {
      return caf::make_error(caf::sec::bad_function_call);
    });
    return {
      [=, &c](start_atom) {
        launch(self, [self, &c]() -> task<void> {
          guard g{c};
          co_await throws_after_await(self);
          ++c.resumed;
        });
        return caf::unit;
      },
    };
  });
  start(a);
  CHECK(wait_down(a, false) == caf::sec::bad_function_call);
  CHECK(c.constructed == 1);
  CHECK(c.destroyed == 1);
  CHECK(c.resumed == 0);
}

// -- typed, stateful actors ---------------------------------------------------

namespace {

using calc_actor
  = caf::typed_actor<caf::replies_to<add_atom, int, int>::with<int>>;
using client_actor = caf::typed_actor<caf::replies_to<run_atom>::with<int>>;

calc_actor::behavior_type typed_calculator() {
  return {[](add_atom, int a, int b) { return a + b; }};
}

struct client_state {
  int calls = 0;
};

client_actor::behavior_type
typed_client(client_actor::stateful_pointer<client_state> self,
             calc_actor calc) {
  return {
    [=](run_atom) {
      auto rp = self->make_response_promise<int>();
      launch(self, [self, calc, rp]() mutable -> task<void> {
        auto x = co_await ask<int>(self, calc, add_atom::value, 20, 2);
        ++self->state.calls; // state is ours: we run on the actor's context
        auto y = co_await ask<int>(self, calc, add_atom::value, *x, 20);
        ++self->state.calls;
        rp.deliver(*y + self->state.calls);
      });
      return rp;
    },
  };
}

} // namespace

TEST_CASE_FIXTURE(fixture,
                  "a typed stateful actor runs a coroutine against a typed "
                  "target") {
  auto calc = sys.spawn(typed_calculator);
  auto client = sys.spawn(typed_client, calc);
  std::optional<int> answer;
  self->request(client, caf::infinite, run_atom::value)
    .receive([&](int x) { answer = x; },
             [](caf::error& err) { FAIL(caf::to_string(err)); });
  REQUIRE(answer);
  CHECK(*answer == 44);
  caf::anon_send_exit(client, caf::exit_reason::kill);
  caf::anon_send_exit(calc, caf::exit_reason::kill);
}

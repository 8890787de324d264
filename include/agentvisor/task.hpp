#pragma once
/// task<T>: lazy C++20 coroutines for CAF 0.17 event-based actors.
///
///   agentvisor::task<int> sum(caf::event_based_actor* self, caf::actor calc) {
///     auto a = co_await agentvisor::ask<int>(self, calc, get_atom::value);
///     if (!a)
///       co_return -1;                        // a.error(): caf::error
///     co_await agentvisor::sleep_for(self, std::chrono::milliseconds(10));
///     co_return *a;
///   }
///   ...
///   agentvisor::launch(self, sum(self, calc)); // inside a handler of self
///
/// Rules (docs/coroutines.md explains each one):
/// - A coroutine runs on its actor's context only: launch() runs the root
///   synchronously until its first suspension, and every later resumption
///   happens inside a CAF response handler of that actor.
/// - The pending response handler owns the root frame. When the actor
///   terminates, CAF drops its pending handlers and the whole chain of frames
///   is destroyed, never resumed.
/// - Only awaitables from this header may be co_awaited inside a task.
/// - Frame destructors run while the actor is shutting down: they must not
///   call `self` (no request, send, become).
///
/// Header cost: of CAF this file includes only caf/expected.hpp,
/// caf/duration.hpp and caf/message_priority.hpp (about 40 % of the time and
/// 45 % of the memory caf/all.hpp costs). caf::behavior and the actor's
/// request() are taken from the Self type at instantiation, so the including
/// file must already see the actor type it uses (it always does, to have a
/// `self`).
///
/// Written against CAF 0.17.6: it relies on scheduled_actor's public
/// new_request_id(), request_response_timeout(),
/// add_multiplexed_response_handler() and getf(is_shutting_down_flag), and
/// on quit() dropping pending response handlers at once. Review on upgrade.

#include <cassert>
#include <chrono>
#include <concepts>
#include <coroutine>
#include <cstddef>
#include <exception>
#include <functional>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>

#include "caf/duration.hpp"
#include "caf/expected.hpp"
#include "caf/message_priority.hpp"

namespace agentvisor {

template <class T = void>
class task;

namespace detail {

template <class T>
class promise;

// -- helpers ------------------------------------------------------------------

/// Makes `T` depend on `U`, so that a type (caf::behavior) is only needed at
/// instantiation, where the actor's own headers have defined it.
template <class T, class U>
struct dependent {
  using type = T;
};

/// Any std::chrono duration to the caf::duration CAF's clock takes. CAF's own
/// converting constructor rejects hours and floating-point durations.
template <class Rep, class Period>
caf::duration to_caf_duration(std::chrono::duration<Rep, Period> d) {
  return caf::duration{std::chrono::duration_cast<std::chrono::nanoseconds>(d)};
}

/// True once the actor has called quit() (or was killed): from then on CAF
/// keeps no response handler, so an awaitable must not install one. A
/// handler installed after quit() would keep the actor alive and resume the
/// coroutine of an actor that already decided to die.
template <class Self>
bool is_shutting_down(const Self* self) noexcept {
  return self->getf(Self::is_shutting_down_flag | Self::is_terminated_flag);
}

template <class T>
struct is_task : std::false_type {};

template <class T>
struct is_task<task<T>> : std::true_type {};

// -- promise ------------------------------------------------------------------

/// State every task promise shares: the link to the awaiting parent, the root
/// of the chain and, in the root only, the count of owners of the chain.
class promise_base {
public:
  promise_base() = default;
  promise_base(const promise_base&) = delete;
  promise_base& operator=(const promise_base&) = delete;

  /// True for the frame launch() started; false for frames awaited by
  /// another task.
  bool is_root() const noexcept {
    return root_ == this;
  }

  /// The frame that owns this chain of frames.
  promise_base* root() const noexcept {
    return root_;
  }

  /// The control block of the actor the chain was launched on (root only).
  const void* actor() const noexcept {
    return actor_;
  }

  /// Binds a root to its actor (launch()).
  void actor(const void* ctrl) noexcept {
    actor_ = ctrl;
  }

protected:
  ~promise_base() = default;

private:
  template <class>
  friend class agentvisor::task;
  template <class>
  friend class promise;
  friend class frame_ref;
  friend struct final_awaiter;

  /// The parent to resume when this frame completes; null for the root.
  std::coroutine_handle<> continuation_;
  /// The root of the chain; set by the parent's co_await.
  promise_base* root_ = this;
  /// This frame's own handle (type-erased), for the root's destroy().
  std::coroutine_handle<> self_;
  /// Owners of the chain (root only). Only ever touched on the actor's
  /// context (see frame_ref), hence not atomic.
  std::size_t refs_ = 0;
  /// See actor(); used to check that awaitables get the right `self`.
  const void* actor_ = nullptr;

protected:
  /// An exception that left a non-root frame; rethrown in the parent.
  std::exception_ptr exception_;
};

/// Shared ownership of a root frame and, through it, of every frame the root
/// awaits (a parent owns the task<U> it awaits, hence its frame).
///
/// Why a count carried by the pending response handlers rather than a
/// registry of frames with the actor (attach_functor): a suspended task is
/// waiting for exactly one response, so the handler CAF keeps for that
/// response is the natural owner. Whenever CAF drops the handler without
/// calling it -- quit() (which clears the pending handlers at once), cleanup()
/// of a terminated actor, or ~scheduled_actor() -- the last reference goes
/// and the chain is destroyed without being resumed. Nothing can resume a
/// frame whose handler is gone, so use-after-free through a stale handle
/// cannot happen, and there is no second bookkeeping to keep in sync with
/// CAF. A functor attached to the actor would run only at cleanup, would
/// need a registry that completed frames unregister from, and would leave
/// frames alive between quit() and cleanup().
///
/// All copies live in handlers of one actor (or on the stack of launch()
/// running on that actor), so all of them are created and destroyed by
/// whichever thread runs that actor at the time; never two at once.
class frame_ref {
public:
  explicit frame_ref(promise_base* root) noexcept : root_(root) {
    ++root_->refs_;
  }

  frame_ref(const frame_ref& other) noexcept : root_(other.root_) {
    if (root_ != nullptr)
      ++root_->refs_;
  }

  frame_ref(frame_ref&& other) noexcept
    : root_(std::exchange(other.root_, nullptr)) {
    // nop
  }

  frame_ref& operator=(const frame_ref&) = delete;
  frame_ref& operator=(frame_ref&&) = delete;

  ~frame_ref() {
    if (root_ != nullptr && --root_->refs_ == 0)
      root_->self_.destroy(); // destroys every frame of the chain
  }

private:
  promise_base* root_;
};

/// Completion: hand control to the parent (symmetric transfer), or, at the
/// root, stay suspended at the final point until the last frame_ref
/// destroys the frame.
struct final_awaiter {
  bool await_ready() const noexcept {
    return false;
  }

  template <class Promise>
  std::coroutine_handle<>
  await_suspend(std::coroutine_handle<Promise> h) const noexcept {
    promise_base& p = h.promise();
    if (p.continuation_)
      return p.continuation_;
    return std::noop_coroutine();
  }

  void await_resume() const noexcept {
    // nop
  }
};

/// Parts common to task<T> and task<void> promises.
class promise_common : public promise_base {
public:
  std::suspend_always initial_suspend() const noexcept {
    return {};
  }

  final_awaiter final_suspend() const noexcept {
    return {};
  }

  /// A child keeps the exception for its parent. At the root the exception
  /// leaves the coroutine like one leaving a message handler: out of
  /// launch(), or out of the response handler that resumed the chain, into
  /// CAF, which calls the actor's exception handler (default: quit with
  /// sec::runtime_error). The frame then counts as suspended at its final
  /// point and the unwinding frame_ref destroys it.
  void unhandled_exception() {
    if (is_root()) {
#if defined(__cpp_exceptions)
      throw;
#else
      std::terminate();
#endif
    }
    exception_ = std::current_exception();
  }

protected:
  void rethrow_if_failed() {
    if (exception_)
      std::rethrow_exception(std::exchange(exception_, nullptr));
  }
};

template <class T>
class promise final : public promise_common {
public:
  task<T> get_return_object() noexcept;

  template <class U = T>
    requires std::constructible_from<T, U&&>
  void return_value(U&& x) {
    value_.emplace(std::forward<U>(x));
  }

  /// The result for the awaiting parent.
  T take() {
    this->rethrow_if_failed();
    return std::move(*value_);
  }

private:
  std::optional<T> value_;
};

template <>
class promise<void> final : public promise_common {
public:
  task<void> get_return_object() noexcept;

  void return_void() const noexcept {
    // nop
  }

  void take() {
    this->rethrow_if_failed();
  }
};

template <class Promise>
concept task_promise = std::derived_from<Promise, promise_base>;

} // namespace detail

/// Satisfied by pointers to event-based actors: caf::event_based_actor,
/// caf::stateful_actor<S>, typed actor pointers and their stateful_pointer.
/// Blocking and scoped actors have no multiplexed response handlers.
template <class Self>
concept event_based_self
  = requires(Self* self, const caf::duration& d) {
      self->ctrl();
      { self->getf(Self::is_shutting_down_flag) } -> std::convertible_to<bool>;
      self->request_response_timeout(
        d, self->new_request_id(caf::message_priority::normal));
      self->add_multiplexed_response_handler(
        self->new_request_id(caf::message_priority::normal).response_id(),
        std::declval<typename detail::dependent<caf::behavior, Self>::type>());
    };

// -- task ---------------------------------------------------------------------

/// A lazy coroutine returning T. It does nothing until it is co_awaited by
/// another task (the awaiting task resumes when it completes, with its value
/// or its exception) or started with launch(). A task is move-only and
/// awaited at most once: `co_await child(...)` or `co_await std::move(t)`.
template <class T>
class [[nodiscard]] task {
public:
  static_assert(!std::is_reference_v<T>, "task<T&> is not supported");

  using promise_type = detail::promise<T>;
  using handle_type = std::coroutine_handle<promise_type>;

  task(task&& other) noexcept : h_(std::exchange(other.h_, nullptr)) {
    // nop
  }

  task& operator=(task&& other) noexcept {
    if (this != &other) {
      if (h_)
        h_.destroy();
      h_ = std::exchange(other.h_, nullptr);
    }
    return *this;
  }

  task(const task&) = delete;
  task& operator=(const task&) = delete;

  /// Destroys the frame: a task never started, or the finished (or
  /// suspended, when its root is being destroyed) child of an awaiting task.
  ~task() {
    if (h_)
      h_.destroy();
  }

  /// True unless moved from.
  bool valid() const noexcept {
    return static_cast<bool>(h_);
  }

  /// Awaiting a task starts it; the awaiting task resumes when it completes.
  auto operator co_await() && noexcept {
    return awaiter{h_};
  }

private:
  friend class detail::promise<T>;

  struct awaiter {
    handle_type child;

    bool await_ready() const noexcept {
      return false;
    }

    template <detail::task_promise Parent>
    std::coroutine_handle<>
    await_suspend(std::coroutine_handle<Parent> parent) const noexcept {
      detail::promise_base& p = parent.promise();
      detail::promise_base& c = child.promise();
      c.continuation_ = parent;
      c.root_ = p.root_;
      return child; // symmetric transfer: no stack growth along a chain
    }

    T await_resume() const {
      return child.promise().take();
    }
  };

  template <class S, class U>
  friend void launch(S* self, task<U> root);

  explicit task(handle_type h) noexcept : h_(h) {
    // nop
  }

  /// Gives up ownership of the frame (launch() hands it to a frame_ref).
  handle_type release() noexcept {
    return std::exchange(h_, nullptr);
  }

  handle_type h_;
};

namespace detail {

template <class T>
task<T> promise<T>::get_return_object() noexcept {
  auto h = std::coroutine_handle<promise>::from_promise(*this);
  this->self_ = h;
  return task<T>{h};
}

inline task<void> promise<void>::get_return_object() noexcept {
  auto h = std::coroutine_handle<promise>::from_promise(*this);
  this->self_ = h;
  return task<void>{h};
}

} // namespace detail

// -- launch -------------------------------------------------------------------

/// Starts `root` on the actor `self`: the coroutine runs synchronously, in
/// the caller, until its first suspension, then in response handlers of
/// `self`. Call only from the actor's own context (a handler, its behaviour
/// factory, or another coroutine of it). A value returned by the root is
/// discarded; to answer a request, deliver a response promise from inside.
/// An exception leaving the root propagates to CAF (see unhandled_exception).
template <class Self, class T>
void launch(Self* self, task<T> root) {
  static_assert(event_based_self<Self>,
                "launch() needs a pointer to an event-based actor");
  auto h = root.release();
  if (!h)
    return;
  h.promise().actor(self->ctrl());
  detail::frame_ref owner{&h.promise()};
  h.resume();
} // owner: if nothing is pending (the task finished), the frame goes here

namespace detail {

/// Keeps the callable (and so a lambda's captures) in the root frame for as
/// long as the task it returned runs.
template <class F>
task<void> run_callable(F f) {
  co_await std::invoke(f);
}

} // namespace detail

/// Starts the task returned by `f()` on `self`. `f` is moved into the root
/// frame first, so a lambda's captures stay alive while the coroutine is
/// suspended: `launch(self, [=]() -> task<void> { ... })` is safe where
/// `launch(self, [=]() -> task<void> { ... }())` is not.
template <class Self, class F>
  requires std::invocable<F&>
           && detail::is_task<std::invoke_result_t<F&>>::value
void launch(Self* self, F f) {
  launch(self, detail::run_callable(std::move(f)));
}

// -- ask ----------------------------------------------------------------------

/// A request timeout for ask(): `ask<R>(self, dest, within{250ms}, msg...)`.
/// The constructor is explicit, so a duration meant as message content is
/// never taken for a timeout.
struct within {
  template <class Rep, class Period>
  explicit within(std::chrono::duration<Rep, Period> d)
    : value(detail::to_caf_duration(d)) {
    // nop
  }

  caf::duration value;
};

/// Awaitable returned by ask(). Issues the request when the coroutine
/// suspends and resumes it from the response handler.
template <class R, class Self, class Handle, class... Ts>
class [[nodiscard]] ask_awaiter {
public:
  ask_awaiter(Self* self, Handle dest, caf::duration timeout, Ts... xs)
    : self_(self),
      dest_(std::move(dest)),
      timeout_(timeout),
      args_(std::move(xs)...) {
    // nop
  }

  bool await_ready() const noexcept {
    return false;
  }

  template <detail::task_promise Promise>
  void await_suspend(std::coroutine_handle<Promise> h) {
    // After quit(): stay suspended with no owner but the code that resumed
    // us; the chain is destroyed, never resumed, like every other chain of
    // this actor.
    if (detail::is_shutting_down(self_))
      return;
    // The handlers own the chain while it waits. `this` lives in the
    // suspended frame, which the handlers keep alive until they run.
    assert(h.promise().root()->actor() == self_->ctrl()
           && "ask() got another actor's self than the one running the task");
    detail::frame_ref owner{h.promise().root()};
    auto on_error = [this, h, owner](caf::error& err) {
      result_.emplace(std::move(err));
      h.resume(); // `this` may be gone after this line
    };
    std::apply(
      [&](Ts&... xs) {
        auto rh = self_->request(dest_, timeout_, std::move(xs)...);
        if constexpr (std::is_void_v<R>) {
          rh.then(
            [this, h, owner]() {
              result_.emplace();
              h.resume();
            },
            std::move(on_error));
        } else {
          rh.then(
            [this, h, owner](R& x) {
              result_.emplace(std::move(x));
              h.resume();
            },
            std::move(on_error));
        }
      },
      args_);
  }

  caf::expected<R> await_resume() {
    return std::move(*result_);
  }

private:
  Self* self_;
  Handle dest_;
  caf::duration timeout_;
  std::tuple<Ts...> args_;
  std::optional<caf::expected<R>> result_;
};

namespace detail {

template <class T>
inline constexpr bool is_within
  = std::is_same_v<std::remove_cvref_t<T>, within>;

} // namespace detail

/// Sends `xs...` to `dest` as a request and yields its answer as
/// caf::expected<R> (caf::expected<void> for R = void: an empty answer).
/// Every failure is an error value, never an exception or a crash: an error
/// response, sec::request_receiver_down (dest is dead or dies),
/// sec::unexpected_response (an answer of another type), sec::request_timeout.
/// No timeout: waits until an answer or an error arrives.
template <class R, class Self, class Handle, class... Ts>
  requires(sizeof...(Ts) > 0 && (!detail::is_within<Ts> && ...))
auto ask(Self* self, const Handle& dest, Ts&&... xs)
  -> ask_awaiter<R, Self, Handle, std::decay_t<Ts>...> {
  static_assert(event_based_self<Self>,
                "ask() needs a pointer to an event-based actor");
  static_assert(!std::is_same_v<R, caf::error>,
                "ask<caf::error> is ambiguous: an error is always the "
                "expected's error");
  return {self, dest, caf::duration{caf::infinite}, std::forward<Ts>(xs)...};
}

/// As above, with a request timeout: `ask<R>(self, dest, within{1s}, xs...)`
/// yields sec::request_timeout if no answer arrives in time.
template <class R, class Self, class Handle, class... Ts>
  requires(sizeof...(Ts) > 0 && (!detail::is_within<Ts> && ...))
auto ask(Self* self, const Handle& dest, within timeout, Ts&&... xs)
  -> ask_awaiter<R, Self, Handle, std::decay_t<Ts>...> {
  static_assert(event_based_self<Self>,
                "ask() needs a pointer to an event-based actor");
  static_assert(!std::is_same_v<R, caf::error>,
                "ask<caf::error> is ambiguous: an error is always the "
                "expected's error");
  return {self, dest, timeout.value, std::forward<Ts>(xs)...};
}

// -- sleep_for ----------------------------------------------------------------

/// Awaitable returned by sleep_for().
template <class Self>
class [[nodiscard]] sleep_awaiter {
public:
  sleep_awaiter(Self* self, caf::duration d) : self_(self), d_(d) {
    // nop
  }

  bool await_ready() const noexcept {
    return false;
  }

  /// A request that is never sent: CAF's clock delivers
  /// sec::request_timeout for its id after `d_`, and that error, routed to
  /// our multiplexed handler, is the wake-up. No cooperation from the
  /// actor's behaviour is needed, and the actor keeps handling messages.
  template <detail::task_promise Promise>
  void await_suspend(std::coroutine_handle<Promise> h) {
    using behavior = typename detail::dependent<caf::behavior, Self>::type;
    if (detail::is_shutting_down(self_))
      return; // as in ask_awaiter: destroyed, never resumed
    assert(h.promise().root()->actor() == self_->ctrl()
           && "sleep_for() got another actor's self than the one running "
              "the task");
    detail::frame_ref owner{h.promise().root()};
    auto mid = self_->new_request_id(caf::message_priority::normal);
    // Timeout first: if registering the handler throws, the timeout finds
    // no handler and CAF drops it.
    self_->request_response_timeout(d_, mid);
    self_->add_multiplexed_response_handler(
      mid.response_id(), behavior{[h, owner](caf::error&) { h.resume(); }});
  }

  void await_resume() const noexcept {
    // nop
  }

private:
  Self* self_;
  caf::duration d_;
};

/// Suspends the coroutine for at least `d` (CAF's clock; no upper bound).
/// The actor handles other messages meanwhile. A zero or negative `d` still
/// suspends, for one round trip through CAF's clock. `d` must fit in
/// std::chrono::nanoseconds (about 292 years).
template <class Self, class Rep, class Period>
sleep_awaiter<Self>
sleep_for(Self* self, std::chrono::duration<Rep, Period> d) {
  static_assert(event_based_self<Self>,
                "sleep_for() needs a pointer to an event-based actor");
  return {self, detail::to_caf_duration(d)};
}

} // namespace agentvisor

// agentvisor-bench-micro: Google Benchmark micro-benchmarks of the pieces
// every agent operation goes through.
//  - actor-to-actor request round trips between two event-based actors,
//    plain request(...).then(...) against `co_await ask(...)` (task.hpp),
//    and a blocking scoped_actor's request(...).receive(...) beside them;
//  - the guest protocol's codec: encode and decode of a call and of a
//    read_file result.
// JSON: --benchmark_format=json, or --benchmark_out=FILE
// --benchmark_out_format=json (docs/performance.md).

#include "agentvisor/guest_protocol.hpp"

#include <caf/all.hpp>

#include "agentvisor/task.hpp"

#include <benchmark/benchmark.h>

#include <memory>
#include <stdexcept>
#include <string>

namespace {

using namespace agentvisor;

using ping_atom = caf::atom_constant<caf::atom("ping")>;
using go_atom = caf::atom_constant<caf::atom("go")>;

/// Round trips per benchmark iteration: one batch is long enough that the
/// request from the benchmark thread that starts it is noise.
constexpr int batch = 1000;

caf::behavior ponger(caf::event_based_actor*) {
  return {[](ping_atom, int x) { return x + 1; }};
}

struct pinger_state {
  caf::actor pong;
  caf::response_promise done;
  int left = 0;
  static inline const char* name = "bench_pinger";
};

using pinger_ptr = caf::stateful_actor<pinger_state>*;

void then_loop(pinger_ptr self) {
  if (self->state.left-- == 0) {
    self->state.done.deliver(caf::unit);
    return;
  }
  self->request(self->state.pong, caf::infinite, ping_atom::value, self->state.left)
    .then([=](int) { then_loop(self); });
}

task<void> ask_loop(pinger_ptr self, int n) {
  for (int i = 0; i < n; ++i) {
    auto r = co_await ask<int>(self, self->state.pong, ping_atom::value, i);
    if (!r)
      break;
  }
  self->state.done.deliver(caf::unit);
}

/// On (go, n, coroutine): n sequential round trips to the ponger, each
/// request sent from the previous answer's handler, then the answer.
caf::behavior pinger(pinger_ptr self, caf::actor pong) {
  self->state.pong = std::move(pong);
  return {
    [=](go_atom, int n, bool coroutine) {
      self->state.done = self->make_response_promise();
      auto rp = self->state.done;
      if (coroutine) {
        launch(self, ask_loop(self, n));
      } else {
        self->state.left = n;
        then_loop(self);
      }
      return rp;
    },
  };
}

caf::actor_system* g_sys = nullptr;

void run_batches(benchmark::State& state, bool coroutine) {
  auto pong = g_sys->spawn(ponger);
  auto ping = g_sys->spawn(pinger, pong);
  caf::scoped_actor self{*g_sys};
  for (auto _ : state) {
    bool ok = true;
    self->request(ping, caf::infinite, go_atom::value, batch, coroutine)
      .receive([] {}, [&](caf::error&) { ok = false; });
    if (!ok)
      state.SkipWithError("the pinger failed");
  }
  state.SetItemsProcessed(state.iterations() * batch);
  // Seconds per round trip (JSON: "round_trip", in seconds).
  state.counters["round_trip"] =
    benchmark::Counter(batch, benchmark::Counter::kIsIterationInvariantRate
                                | benchmark::Counter::kInvert);
  self->send_exit(ping, caf::exit_reason::user_shutdown);
  self->send_exit(pong, caf::exit_reason::user_shutdown);
}

void actor_round_trip_request_then(benchmark::State& state) {
  run_batches(state, false);
}
BENCHMARK(actor_round_trip_request_then)->UseRealTime()->Unit(benchmark::kMillisecond);

void actor_round_trip_co_await_ask(benchmark::State& state) {
  run_batches(state, true);
}
BENCHMARK(actor_round_trip_co_await_ask)->UseRealTime()->Unit(benchmark::kMillisecond);

/// What the benchmark commands' blocking drivers pay per request.
void scoped_actor_request_receive(benchmark::State& state) {
  auto pong = g_sys->spawn(ponger);
  caf::scoped_actor self{*g_sys};
  int x = 0;
  for (auto _ : state) {
    self->request(pong, caf::infinite, ping_atom::value, x)
      .receive([&](int y) { x = y; }, [&](caf::error&) { state.SkipWithError("ponger failed"); });
  }
  benchmark::DoNotOptimize(x);
  self->send_exit(pong, caf::exit_reason::user_shutdown);
}
BENCHMARK(scoped_actor_request_receive)->UseRealTime()->Unit(benchmark::kMicrosecond);

// --- guest protocol ------------------------------------------------------------

const guest::call& sample_call() {
  static const guest::call c{42, "read_file", R"({"path":"src/main.cpp","offset":0,"length":4096})"};
  return c;
}

/// A read_file result of 512 bytes of text, as the guest writes it.
const guest::call_result& sample_result() {
  static const guest::call_result r = [] {
    std::string text;
    while (text.size() < 512)
      text += "the quick brown fox jumps over the lazy dog\n";
    text.resize(512);
    std::string body = "{\"path\":\"bench/small.txt\",\"size\":512,\"content\":\"";
    for (char ch : text)
      body += ch == '\n' ? std::string{"\\n"} : std::string(1, ch);
    body += "\",\"truncated\":false}";
    guest::call_result x;
    x.id = 42;
    x.result_json = body;
    return x;
  }();
  return r;
}

void protocol_encode_call(benchmark::State& state) {
  std::string out;
  for (auto _ : state) {
    out.clear();
    guest::encode(sample_call(), out);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(out.size()));
}
BENCHMARK(protocol_encode_call);

void protocol_encode_result(benchmark::State& state) {
  std::string out;
  for (auto _ : state) {
    out.clear();
    guest::encode(sample_result(), out);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(out.size()));
}
BENCHMARK(protocol_encode_result);

void protocol_decode_call(benchmark::State& state) {
  auto line = guest::encode(sample_call());
  guest::decoder dec;
  for (auto _ : state) {
    auto m = dec.decode_host(line);
    if (!m)
      state.SkipWithError(m.err().message.c_str());
    benchmark::DoNotOptimize(m);
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(line.size()));
}
BENCHMARK(protocol_decode_call);

void protocol_decode_result(benchmark::State& state) {
  auto line = guest::encode(sample_result());
  guest::decoder dec;
  for (auto _ : state) {
    auto m = dec.decode_guest(line);
    if (!m)
      state.SkipWithError(m.err().message.c_str());
    benchmark::DoNotOptimize(m);
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(line.size()));
}
BENCHMARK(protocol_decode_result);

} // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv))
    return 2;
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  g_sys = &sys;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

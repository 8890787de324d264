// The sandbox backend actor with the real I/O thread, real template process,
// real sandboxes and cgroups: what the supervision tree will see.

#include "cgroup.hpp"
#include "sandbox_backend.hpp"

#include "agentvisor/guest_protocol.hpp"
#include "agentvisor/guest_session.hpp"

#include <caf/all.hpp>
#include <doctest/doctest.h>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>

using namespace agentvisor;
using namespace std::chrono_literals;
namespace sb = agentvisor::sandbox;

namespace {

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

std::string unique(const std::string& what) {
  return "test-backend-" + std::to_string(::getpid()) + "-" + what;
}

void skip_unless_root() {
  if (::geteuid() != 0) {
    std::fprintf(stderr, "SKIP: the sandbox backend tests need root (cgroups, mounts)\n");
    std::exit(77);
  }
}

sb::backend_options options(const std::string& instance) {
  sb::backend_options o;
  o.instance = instance;
  o.state_dir = (std::filesystem::temp_directory_path() / ("agentvisor-" + instance)).string();
  o.guest_binary = GUEST_PATH;
  return o;
}

agent_spec spec(const std::string& id, uint64_t memory_mb = 128, bool faults = false) {
  agent_spec s;
  s.id = id;
  s.memory_bytes = memory_mb << 20;
  s.workspace_bytes = 16 << 20;
  s.pids = 64;
  s.allow_faults = faults;
  s.heartbeat_ms = 200;
  return s;
}

struct fixture {
  fixture() {
    skip_unless_root();
    opts = options(unique("main"));
    REQUIRE(io.start());
    auto host = sb::prepare_host(opts);
    REQUIRE_MESSAGE(host, host.err().message);
    template_pid = sb::template_pid(**host);
    backend = sb::spawn_sandbox_backend(sys, io, *host);
  }
  ~fixture() {
    self->send_exit(backend, caf::exit_reason::user_shutdown);
    self->wait_for(backend);
    io.stop();
    CHECK_MESSAGE(!std::filesystem::exists("/sys/fs/cgroup/memory/agentvisor/" + opts.instance),
                  "the instance cgroup was left behind");
    std::filesystem::remove_all(opts.state_dir);
  }

  caf::expected<agent_started> spawn(const agent_spec& s) {
    caf::expected<agent_started> out{caf::sec::none};
    self->request(backend, caf::infinite, spawn_atom::value, s, caf::actor{self})
      .receive([&](agent_started& a) { out = std::move(a); },
               [&](caf::error& e) { out = std::move(e); });
    return out;
  }

  // The next guest message on a channel that is not a heartbeat.
  guest::guest_message next_line(io::handle_id channel) {
    for (;;) {
      std::optional<guest::guest_message> m;
      bool timeout = false;
      self->receive(
        [&](io::stream_line& l) {
          REQUIRE(l.id == channel);
          auto d = dec.decode_guest(l.line);
          REQUIRE_MESSAGE(d, d.err().message);
          m = std::move(*d);
        },
        caf::after(10s) >> [&] { timeout = true; });
      REQUIRE_FALSE_MESSAGE(timeout, "no line from the guest within 10 s");
      if (!std::holds_alternative<guest::heartbeat>(*m))
        return std::move(*m);
    }
  }

  void ready(const agent_started& a) {
    CHECK(std::holds_alternative<guest::hello>(next_line(a.channel)));
    CHECK(std::holds_alternative<guest::ready>(next_line(a.channel)));
  }

  guest::call_result call(const agent_started& a, const std::string& tool,
                          const std::string& args) {
    static uint64_t next = 1;
    auto id = next++;
    io.write(a.channel, guest::encode(guest::call{id, tool, args}));
    for (;;) {
      auto m = next_line(a.channel);
      if (auto* r = std::get_if<guest::call_result>(&m); r && r->id == id)
        return *r;
    }
  }

  // --- an owner with a guest_session, as the vm_actor will be ---------------

  // Feeds the channel's lines, and its close, to `session` until it gives an
  // event that is not a heartbeat, or a protocol error. `closed_reason` gets
  // the reason of an io::stream_closed on the way.
  agentvisor::result<guest::session_event> next_event(guest::guest_session& session,
                                                      io::handle_id channel,
                                                      std::optional<std::string>* closed_reason = nullptr) {
    for (;;) {
      std::optional<agentvisor::result<guest::session_event>> r;
      bool timeout = false;
      self->receive(
        [&](io::stream_line& l) {
          REQUIRE(l.id == channel);
          r.emplace(session.on_line(l.line));
        },
        [&](io::stream_closed& c) {
          REQUIRE(c.id == channel);
          if (closed_reason)
            *closed_reason = c.reason;
          r.emplace(session.on_closed(c.reason));
        },
        caf::after(10s) >> [&] { timeout = true; });
      REQUIRE_FALSE_MESSAGE(timeout, "nothing from the guest within 10 s");
      if (!*r || !std::holds_alternative<guest::heartbeat>(**r))
        return std::move(*r);
    }
  }

  // The next event, which must not be a protocol error.
  guest::session_event expect_event(guest::guest_session& session, io::handle_id channel) {
    auto r = next_event(session, channel);
    REQUIRE_MESSAGE(r, "protocol error: " << (r ? "" : r.err().message));
    return std::move(*r);
  }

  // Spawns an agent (faults allowed) whose session has seen hello and ready.
  agent_started spawn_ready(const std::string& id, guest::guest_session& session) {
    auto a = spawn(spec(id, 128, true));
    REQUIRE_MESSAGE(a, sys.render(a.error()));
    CHECK(std::holds_alternative<guest::hello>(expect_event(session, a->channel)));
    CHECK(std::holds_alternative<guest::ready>(expect_event(session, a->channel)));
    REQUIRE(session.phase() == guest::session_phase::ready);
    CHECK(session.peer()->version == guest::protocol_version);
    return *a;
  }

  // Sends a call through the session and returns its id.
  uint64_t send_call(const agent_started& a, guest::guest_session& session,
                     const std::string& tool, const std::string& args) {
    auto c = session.call(tool, args);
    REQUIRE_MESSAGE(c, c.err().message);
    io.write(a.channel, std::move(c->line));
    return c->id;
  }

  // The owner's answer to a protocol error: kill the agent through the
  // backend and wait for it to be gone.
  agent_exited kill_and_await(const agent_started& a) {
    self->send(backend, kill_atom::value, a.id);
    return await_exit(a.id).exited;
  }

  // After a misbehaving guest: a new agent spawns and answers a call.
  void backend_still_spawns(const std::string& id) {
    guest::guest_session session;
    auto a = spawn_ready(id, session);
    auto cid = send_call(a, session, "list_directory", "{}");
    auto ev = expect_event(session, a.channel);
    REQUIRE(std::holds_alternative<guest::call_result>(ev));
    CHECK(std::get<guest::call_result>(ev).id == cid);
    CHECK(std::get<guest::call_result>(ev).ok);
    self->send(backend, kill_atom::value, a.id);
    CHECK(await_exit(a.id).exited.signal == SIGKILL);
  }

  // A guest told to write one bad line, with a command running and the
  // fault's report pending: the session's protocol error message, checked by
  // the caller; the owner kills the agent, every pending call is answered
  // (fail_all_pending names both), and the backend spawns the next agent.
  std::string misbehave(const std::string& id, guest::garbage_kind what) {
    guest::guest_session session;
    auto a = spawn_ready(id, session);
    auto running = send_call(a, session, "execute_command", R"({"argv":["sleep","30"]})");
    guest::fault f;
    f.kind = guest::fault_kind::garbage;
    f.what = what;
    auto sent = session.fault(f);
    REQUIRE(sent.id != 0);
    io.write(a.channel, std::move(sent.line));
    std::optional<std::string> closed;
    auto r = next_event(session, a.channel, &closed);
    REQUIRE_MESSAGE(!r, "no protocol error; got event #" << r->index());
    CHECK(session.failed());
    // What the owner does: kill, answer every call in flight, carry on.
    auto exited = kill_and_await(a);
    CHECK(exited.id == id);
    if (closed) // the channel closed first: the guest may have exited on EOF
      CHECK((exited.signal == SIGKILL || (exited.signal == 0 && exited.exit_code == 0)));
    else
      CHECK(exited.signal == SIGKILL);
    CHECK_FALSE(exited.oom);
    CHECK(session.fail_all_pending() == std::vector<uint64_t>{running, sent.id});
    backend_still_spawns(id + "-next");
    return r.err().message;
  }

  // Collects what the backend and the channel send until agent_exited.
  struct ending {
    agent_exited exited;
    std::vector<agent_oom> ooms;
    bool channel_closed = false;
  };
  ending await_exit(const std::string& id) {
    ending e;
    bool done = false;
    while (!done) {
      bool timeout = false;
      self->receive(
        [&](agent_exited& x) {
          CHECK(x.id == id);
          e.exited = x;
          done = true;
        },
        [&](agent_oom& o) { e.ooms.push_back(o); },
        [&](io::stream_line&) {},
        [&](io::stream_closed&) { e.channel_closed = true; },
        caf::after(20s) >> [&] { timeout = true; });
      REQUIRE_FALSE_MESSAGE(timeout, "no agent_exited within 20 s");
    }
    return e;
  }

  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  io::io_thread io;
  sb::backend_options opts;
  backend_actor backend;
  pid_t template_pid = -1;
  guest::decoder dec;
};

} // namespace

TEST_CASE_FIXTURE(fixture, "a spawned agent says hello and ready on its channel, runs a tool, and stop ends it with exit code 0") {
  auto a = spawn(spec("b1"));
  REQUIRE_MESSAGE(a, sys.render(a.error()));
  CHECK(a->backend == "sandbox");
  CHECK(a->pid > 0);
  ready(*a);
  auto r = call(*a, "execute_command", R"j({"argv":["/bin/sh","-c","echo hi from $(hostname)"]})j");
  REQUIRE(r.ok);
  CHECK(contains(r.result_json, "hi from b1"));
  self->send(backend, stop_atom::value, std::string{"b1"}, uint32_t{5000});
  auto e = await_exit("b1");
  CHECK(e.exited.exit_code == 0);
  CHECK(e.exited.signal == 0);
  CHECK_FALSE(e.exited.oom);
  CHECK(e.ooms.empty());
}

TEST_CASE_FIXTURE(fixture, "kill ends an agent with signal 9 and it is not called OOM") {
  auto a = spawn(spec("b2"));
  REQUIRE(a);
  ready(*a);
  self->send(backend, kill_atom::value, std::string{"b2"});
  auto e = await_exit("b2");
  CHECK(e.exited.signal == SIGKILL);
  CHECK_FALSE(e.exited.oom);
  CHECK(e.ooms.empty());
}

TEST_CASE_FIXTURE(fixture, "a guest OOM-killed by the kernel gives agent_oom, then agent_exited with oom set") {
  auto a = spawn(spec("b3", 32, true));
  REQUIRE(a);
  ready(*a);
  io.write(a->channel, R"({"type":"fault","kind":"oom"})" "\n");
  auto e = await_exit("b3");
  CHECK(e.exited.signal == SIGKILL);
  CHECK(e.exited.oom);
  REQUIRE_FALSE(e.ooms.empty());
  CHECK(e.ooms.front().id == "b3");
  CHECK(e.ooms.front().limit_bytes == 32ull << 20);
  CHECK(e.ooms.front().peak_bytes > 16ull << 20);
}

TEST_CASE_FIXTURE(fixture, "an OOM kill of a command gives agent_oom while the agent keeps running") {
  // Room for the guest itself: the OOM killer takes the largest process, and
  // a sanitized guest is large; the command must be the one it picks.
  auto a = spawn(spec("b4", 128));
  REQUIRE(a);
  ready(*a);
  // The shell doubles a string until the kernel kills it.
  auto r = call(*a, "execute_command",
                R"({"argv":["/bin/sh","-c","a=xxxxxxxx; while true; do a=$a$a; done"],"timeout_ms":20000})");
  REQUIRE(r.ok);
  CHECK(contains(r.result_json, "\"signal\":9"));
  bool got_oom = false;
  self->receive([&](agent_oom& o) { got_oom = o.id == "b4"; },
                caf::after(5s) >> [] {});
  CHECK(got_oom);
  CHECK(call(*a, "list_directory", R"({"path":"."})").ok);
  self->send(backend, kill_atom::value, std::string{"b4"});
  auto e = await_exit("b4");
  CHECK(e.exited.signal == SIGKILL);
}

TEST_CASE_FIXTURE(fixture, "usage reports the agent's memory and processes") {
  auto a = spawn(spec("b5"));
  REQUIRE(a);
  ready(*a);
  agent_usage u;
  self->request(backend, 10s, usage_atom::value, std::string{"b5"})
    .receive([&](agent_usage& x) { u = x; },
             [&](caf::error& e) { FAIL(sys.render(e)); });
  CHECK(u.id == "b5");
  CHECK(u.memory_bytes > 0);
  CHECK(u.pids >= 1);
  CHECK(u.oom_kills == 0);
  self->send(backend, kill_atom::value, std::string{"b5"});
  await_exit("b5");
}

TEST_CASE_FIXTURE(fixture, "spawn errors are values that name the agent and what was wrong") {
  auto bad = spawn(spec("a/b"));
  REQUIRE_FALSE(bad);
  CHECK(contains(sys.render(bad.error()), "invalid agent id 'a/b'"));
  auto a = spawn(spec("b6"));
  REQUIRE(a);
  auto dup = spawn(spec("b6"));
  REQUIRE_FALSE(dup);
  CHECK(contains(sys.render(dup.error()), "agent b6 already exists"));
  ready(*a);
  self->send(backend, kill_atom::value, std::string{"b6"});
  await_exit("b6");
  std::string usage_err;
  self->request(backend, 10s, usage_atom::value, std::string{"nobody"})
    .receive([](agent_usage&) {}, [&](caf::error& e) { usage_err = sys.render(e); });
  CHECK(contains(usage_err, "no agent nobody"));
}

TEST_CASE_FIXTURE(fixture, "when the template process dies the backend restarts it and spawns work again") {
  REQUIRE(::kill(template_pid, SIGKILL) == 0);
  // The backend learns of the death from the I/O thread; a spawn racing with
  // that may fail, so allow a few attempts.
  caf::expected<agent_started> a{caf::sec::none};
  for (int i = 0; i < 20; ++i) {
    a = spawn(spec("b8-" + std::to_string(i)));
    if (a)
      break;
    self->receive(caf::after(50ms) >> [] {});
  }
  REQUIRE_MESSAGE(a, sys.render(a.error()));
  ready(*a);
  self->send(backend, kill_atom::value, a->id);
  await_exit(a->id);
}

// --- bad input from a guest: protocol error, agent terminated, supervisor carries on ---

TEST_CASE_FIXTURE(fixture, "a guest writing a malformed line is a protocol error: its owner kills it and the backend spawns the next agent") {
  auto m = misbehave("bad1", guest::garbage_kind::malformed);
  CHECK_MESSAGE(m.starts_with("line is not valid JSON: "), m);
}

TEST_CASE_FIXTURE(fixture, "a guest writing an unknown message type is a protocol error naming it: its owner kills it and the backend carries on") {
  CHECK(misbehave("bad2", guest::garbage_kind::unknown_type) == "unknown message type \"teleport\"");
}

TEST_CASE_FIXTURE(fixture, "a guest writing a result for no call is a protocol error naming the id: its owner kills it and the backend carries on") {
  CHECK(misbehave("bad3", guest::garbage_kind::orphan_result) ==
        "result for id 18446744073709551615, which no call is waiting for");
}

TEST_CASE_FIXTURE(fixture, "a guest line over 1 MiB closes the channel with 'line over', the session makes it a protocol error, and the backend carries on") {
  guest::guest_session session;
  auto a = spawn_ready("bad4", session);
  guest::fault f;
  f.kind = guest::fault_kind::garbage;
  f.what = guest::garbage_kind::oversized;
  io.write(a.channel, session.fault(f).line);
  std::optional<std::string> closed;
  auto r = next_event(session, a.channel, &closed);
  REQUIRE_MESSAGE(closed, "the channel did not close");
  CHECK(*closed == "line over 1048576 bytes");
  REQUIRE_FALSE(r);
  CHECK(r.err().message == "the guest sent a line over 1048576 bytes");
  CHECK(session.failed());
  auto exited = kill_and_await(a);
  CHECK((exited.signal == SIGKILL || (exited.signal == 0 && exited.exit_code == 0)));
  backend_still_spawns("bad4-next");
}

TEST_CASE_FIXTURE(fixture, "a well-behaved guest's lines through a session are events only, up to its bye") {
  guest::guest_session session;
  auto a = spawn_ready("good1", session);
  auto id = send_call(a, session, "write_file", R"({"path":"n.txt","content":"hi"})");
  auto ev = expect_event(session, a.channel);
  REQUIRE(std::holds_alternative<guest::call_result>(ev));
  CHECK(std::get<guest::call_result>(ev).id == id);
  CHECK(session.pending_count() == 0);
  io.write(a.channel, session.shutdown());
  CHECK(std::holds_alternative<guest::bye>(expect_event(session, a.channel)));
  auto closed = expect_event(session, a.channel);
  REQUIRE(std::holds_alternative<guest::channel_closed>(closed));
  CHECK(std::get<guest::channel_closed>(closed).reason.empty());
  auto e = await_exit("good1");
  CHECK(e.exited.exit_code == 0);
  CHECK(e.exited.signal == 0);
}

TEST_CASE("start-up removes cgroups a dead supervisor of the same instance left, and a second supervisor of that instance is refused") {
  skip_unless_root();
  auto opts = options(unique("stale"));
  std::filesystem::create_directories(opts.state_dir);
  auto layout = sb::detect_cgroups().value();
  auto inst = sb::cgroup_instance::open(layout, opts.instance).value();
  auto left = sb::agent_cgroup::create(inst, "left-behind", {64ull << 20, 16, 100}).value();
  // The leftover process is an orphan, as after a supervisor crash: the
  // middle process exits at once, so init (or a subreaper) reaps the rest.
  int pipefd[2];
  REQUIRE(::pipe(pipefd) == 0);
  pid_t mid = ::fork();
  if (mid == 0) {
    pid_t p = ::fork();
    if (p == 0) {
      for (const auto& d : left.dirs())
        std::ofstream(d + "/cgroup.procs") << 0;
      (void) !::write(pipefd[1], "x", 1);
      ::pause();
      ::_exit(0);
    }
    (void) !::write(pipefd[1], &p, sizeof p);
    ::_exit(0);
  }
  pid_t orphan = 0;
  char joined = 0;
  REQUIRE(::read(pipefd[0], &orphan, sizeof orphan) == sizeof orphan);
  REQUIRE(::read(pipefd[0], &joined, 1) == 1); // it is in the cgroup now
  ::waitpid(mid, nullptr, 0);
  ::close(pipefd[0]);
  ::close(pipefd[1]);
  {
    auto host = sb::prepare_host(opts);
    REQUIRE_MESSAGE(host, host.err().message);
    CHECK(sb::stale_removed(**host) == 1);
    CHECK(contains(sb::describe(**host), "removed 1 stale agent cgroup(s)"));
    CHECK(!std::filesystem::exists(left.memory_dir()));
    bool gone = false;
    for (int i = 0; i < 400 && !gone; ++i) {
      gone = ::kill(orphan, 0) != 0;
      if (!gone)
        ::usleep(5000);
    }
    CHECK_MESSAGE(gone, "the leftover process was not killed");
    auto second = sb::prepare_host(opts);
    REQUIRE_FALSE(second);
    CHECK(contains(second.err().message, "another supervisor runs instance"));
  }
  inst.remove();
  std::filesystem::remove_all(opts.state_dir);
}

// firecracker_boot: a real microVM. Boots the guest image with the real
// firecracker, runs a tool in it and stops it. Needs /dev/kvm, `firecracker`
// (or $AGENTVISOR_FIRECRACKER) and the guest image (scripts/build-guest-image:
// $AGENTVISOR_GUEST_KERNEL and $AGENTVISOR_GUEST_INITRD); exits 77 (skipped)
// naming what is missing.

#include "firecracker_backend.hpp"

#include "agentvisor/guest_protocol.hpp"
#include "agentvisor/guest_session.hpp"

#include <caf/all.hpp>
#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

using namespace agentvisor;
using namespace std::chrono_literals;
namespace fc = agentvisor::firecracker;

namespace {

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

[[noreturn]] void skip(const std::string& why) {
  std::fprintf(stderr, "SKIP: firecracker_boot: %s\n", why.c_str());
  std::fflush(stderr);
  std::_Exit(77);
}

fc::backend_options options_or_skip() {
  int kvm = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0)
    skip("/dev/kvm is not usable here (" + std::string{std::strerror(errno)} + ")");
  ::close(kvm);
  fc::backend_options o;
  o.binary = env_or("AGENTVISOR_FIRECRACKER", "firecracker");
  o.kernel = env_or("AGENTVISOR_GUEST_KERNEL", BUILD_ROOT "/guest-image/vmlinux");
  o.initrd = env_or("AGENTVISOR_GUEST_INITRD", BUILD_ROOT "/guest-image/initrd.img");
  if (auto ok = fc::check_host(o); !ok)
    skip(ok.err().message);
  o.instance = "boot-test";
  o.state_dir = (std::filesystem::temp_directory_path()
                 / ("fc-boot-" + std::to_string(::getpid()))).string();
  o.boot_timeout_ms = 20000;
  return o;
}

} // namespace

TEST_CASE("a firecracker microVM boots the guest, runs a tool and stops") {
  auto opts = options_or_skip();
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  io::io_thread io;
  REQUIRE(io.start());
  {
    caf::scoped_actor self{sys};
    auto backend = fc::spawn_firecracker_backend(sys, io, opts);
    REQUIRE_MESSAGE(backend, backend.err().message);
    agent_spec spec;
    spec.id = "fc-boot-1";
    spec.memory_bytes = 128ull << 20;
    spec.workspace_bytes = 64ull << 20;
    std::optional<agent_started> a;
    self->request(*backend, caf::infinite, spawn_atom::value, spec, caf::actor{self})
      .receive([&](agent_started& x) { a = x; },
               [&](caf::error& e) { FAIL("spawn: " << sys.render(e)); });
    REQUIRE(a);
    CHECK(a->backend == "firecracker");

    guest::guest_session session;
    auto next = [&]() -> guest::session_event {
      for (;;) {
        std::optional<result<guest::session_event>> r;
        self->receive([&](io::stream_line& l) { r.emplace(session.on_line(l.line)); },
                      [&](io::stream_closed& c) { r.emplace(session.on_closed(c.reason)); },
                      caf::after(20s) >> [] { FAIL("nothing from the guest within 20 s"); });
        REQUIRE_MESSAGE(*r, "protocol error: " << (*r ? "" : r->err().message));
        if (!std::holds_alternative<guest::heartbeat>(**r))
          return std::move(**r);
      }
    };
    CHECK(std::holds_alternative<guest::hello>(next()));
    CHECK(std::holds_alternative<guest::ready>(next()));
    auto c = session.call("execute_command",
                          R"({"argv":["/bin/sh","-c","echo hi > greeting.txt; cat greeting.txt"]})");
    REQUIRE_MESSAGE(c, c.err().message);
    io.write(a->channel, std::move(c->line));
    auto ev = next();
    REQUIRE(std::holds_alternative<guest::call_result>(ev));
    auto& res = std::get<guest::call_result>(ev);
    CHECK(res.ok);
    CHECK(res.result_json.find("hi") != std::string::npos);

    self->send(*backend, stop_atom::value, spec.id, uint32_t{2000});
    std::optional<agent_exited> e;
    while (!e)
      self->receive([&](agent_exited& x) { e = x; }, [](io::stream_line&) {},
                    [](io::stream_closed&) {}, [](agent_oom&) {},
                    caf::after(20s) >> [] { FAIL("no agent_exited within 20 s"); });
    CHECK(e->id == spec.id);
    CHECK_FALSE(std::filesystem::exists(opts.state_dir + "/vms/boot-test/" + spec.id));
    self->send_exit(*backend, caf::exit_reason::user_shutdown);
    self->wait_for(*backend);
  }
  CHECK(io.stop().open_handles == 0);
  std::filesystem::remove_all(opts.state_dir);
}

#pragma once
// A real host for supervision tests: the I/O thread, the sandbox backend with
// its template process and cgroups, and an actor system with agentvisor's
// message types. Needs root (exit 77 otherwise). The destructor checks that
// no agent cgroup of the test's instance is left.

#include "sandbox_backend.hpp"
#include "with_messages.hpp"

#include "agentvisor/messages.hpp"

#include <caf/all.hpp>
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace agentvisor::testing {

inline void skip_unless_root(const char* what) {
  if (::geteuid() != 0) {
    std::fprintf(stderr, "SKIP: %s need root (cgroups, mounts)\n", what);
    std::exit(77);
  }
}

struct real_host {
  explicit real_host(const std::string& name) {
    skip_unless_root("the supervision tests with real sandboxes");
    opts.instance = "test-" + name + "-" + std::to_string(::getpid());
    opts.state_dir =
      (std::filesystem::temp_directory_path() / ("agentvisor-" + opts.instance)).string();
    opts.guest_binary = GUEST_PATH;
    REQUIRE(io.start());
    auto host = sandbox::prepare_host(opts);
    REQUIRE_MESSAGE(host, host.err().message);
    backend = sandbox::spawn_sandbox_backend(sys, io, *host);
  }
  ~real_host() {
    {
      caf::scoped_actor self{sys};
      self->send_exit(backend, caf::exit_reason::user_shutdown);
      self->wait_for(backend);
    }
    auto report = io.stop();
    CHECK(report.open_handles == 0);
    CHECK_MESSAGE(!std::filesystem::exists("/sys/fs/cgroup/memory/agentvisor/" + opts.instance),
                  "the instance cgroup was left behind");
    std::filesystem::remove_all(opts.state_dir);
  }

  /// The agent cgroups of this instance that exist now.
  size_t live_cgroups() const {
    auto dir = std::filesystem::path("/sys/fs/cgroup/memory/agentvisor") / opts.instance;
    size_t n = 0;
    std::error_code ec;
    for (auto& e : std::filesystem::directory_iterator(dir, ec))
      n += e.is_directory() ? 1 : 0;
    return n;
  }

  caf::actor_system_config cfg;
  caf::actor_system sys{with_messages(cfg)};
  io::io_thread io;
  sandbox::backend_options opts;
  backend_actor backend;
};

} // namespace agentvisor::testing

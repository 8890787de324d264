// agentvisor-guest: PID 1 of an agent's sandbox. Speaks the guest protocol
// (docs/guest-protocol.md) over an inherited socket and runs the agent's
// tools inside the workspace.

#include "agent.hpp"

#include "template.hpp"
#include "vm_init.hpp"

#include <charconv>
#include <cstdio>
#include <cstring>
#include <string_view>

#include <unistd.h>

#ifndef AGENTVISOR_VERSION
#define AGENTVISOR_VERSION "0.0.0"
#endif

namespace {

constexpr const char* usage =
  "usage: agentvisor-guest [options]\n"
  "  --workspace DIR      root of every tool path (default /workspace)\n"
  "  --channel-fd N       the inherited protocol socket (default 3)\n"
  "  --heartbeat-ms N     heartbeat period, >= 1 (default 1000)\n"
  "  --memory-file PATH   file holding the cgroup's memory usage in bytes\n"
  "  --allow-faults       honour `fault` messages (chaos testing only)\n"
  "  --template           be the template process: clone sandboxes on\n"
  "                       requests from the supervisor on fd 3\n"
  "  --netns-pool N       (template) network namespaces kept ready, 0 for\n"
  "                       none (default 4)\n"
  "  --vm-init            be PID 1 of a microVM (also when run as /init)\n"
  "  --version            print the version and exit\n"
  "  --help               print this and exit\n";

template <class T>
bool parse_number(std::string_view s, T& out) {
  auto r = std::from_chars(s.data(), s.data() + s.size(), out);
  return r.ec == std::errc{} && r.ptr == s.data() + s.size();
}

int bad(const char* what, std::string_view value) {
  std::fprintf(stderr, "agentvisor-guest: %s: invalid value \"%.*s\"\n%s", what,
               static_cast<int>(value.size()), value.data(), usage);
  return 2;
}

// What each sandbox cloned by the template runs: the guest's main loop on
// the channel (fd 3) with the cgroup's memory file (fd 4) for heartbeats.
int sandbox_guest(const agentvisor::sandbox::spawn_request& r) {
  agentvisor::guest::agent_options opts;
  opts.workspace = "/workspace";
  opts.channel_fd = 3;
  opts.heartbeat_ms = r.guest.heartbeat_ms;
  opts.allow_faults = r.guest.allow_faults;
  if (!r.spec.memory_file.empty())
    opts.memory_file = "/proc/self/fd/4";
  return agentvisor::guest::run_agent(opts);
}

} // namespace

int main(int argc, char** argv) {
  // The kernel starts the initramfs's /init without arguments.
  if (argc >= 1 && std::string_view(argv[0]).ends_with("init") && ::getpid() == 1)
    return agentvisor::guest::run_vm_init();
  agentvisor::guest::agent_options opts;
  agentvisor::sandbox::template_options template_opts;
  bool template_mode = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    std::string_view value;
    bool has_value = false;
    if (auto eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_value = true;
    }
    auto take = [&]() -> bool {
      if (has_value) return true;
      if (i + 1 >= argc) return false;
      value = argv[++i];
      return true;
    };
    if (arg == "--help" || arg == "-h") {
      std::fputs(usage, stdout);
      return 0;
    }
    if (arg == "--version") {
      std::puts("agentvisor-guest " AGENTVISOR_VERSION);
      return 0;
    }
    if (arg == "--vm-init") {
      return agentvisor::guest::run_vm_init();
    } else if (arg == "--template") {
      template_mode = true;
    } else if (arg == "--netns-pool") {
      if (!take() || !parse_number(value, template_opts.netns_pool) || template_opts.netns_pool > 64)
        return bad("--netns-pool", value);
    } else if (arg == "--allow-faults") {
      opts.allow_faults = true;
    } else if (arg == "--workspace") {
      if (!take() || value.empty()) return bad("--workspace", value);
      opts.workspace = value;
    } else if (arg == "--channel-fd") {
      if (!take() || !parse_number(value, opts.channel_fd) || opts.channel_fd < 0)
        return bad("--channel-fd", value);
    } else if (arg == "--heartbeat-ms") {
      if (!take() || !parse_number(value, opts.heartbeat_ms) || opts.heartbeat_ms == 0)
        return bad("--heartbeat-ms", value);
    } else if (arg == "--memory-file") {
      if (!take()) return bad("--memory-file", value);
      opts.memory_file = value;
    } else {
      std::fprintf(stderr, "agentvisor-guest: unknown option \"%s\"\n%s", argv[i], usage);
      return 2;
    }
  }
  if (template_mode)
    return agentvisor::sandbox::run_template(3, sandbox_guest, template_opts);
  return agentvisor::guest::run_agent(opts);
}

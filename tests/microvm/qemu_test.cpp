// qemu_boot: real qemu VMs booting the real guest image (TCG here, KVM where
// /dev/kvm is usable) through the qemu backend actor: every tool, a stop; a
// command's allocation past the agent's memory (an OOM kill in the VM,
// reported while the agent lives on); usage with QMP's balloon statistics;
// keep_workspaces (the image kept, the agent's file read back with
// debugfs); the guest itself OOM-killed (its exit says so); the qemu
// process killed (an exit event); with snapshots, an agent restored from
// its shape's template (migrated in, not booted) that is its own agent: its
// memory limit, environment and workspace. After each: the VM's
// directory gone, no qemu of ours running, no I/O handle left. Exits 77
// naming what is missing (qemu-system-x86_64, the guest image).

#include "qemu_backend.hpp"

#include "agentvisor/guest_protocol.hpp"
#include "agentvisor/guest_session.hpp"

#include <caf/all.hpp>
#include <doctest/doctest.h>

#include <dirent.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

using namespace agentvisor;
using namespace std::chrono_literals;

namespace {

[[noreturn]] void skip(const std::string& why) {
  std::fprintf(stderr, "SKIP: qemu_boot: %s\n", why.c_str());
  std::fflush(stderr);
  std::_Exit(77);
}

struct fixture_options {
  qemu::backend_options opts;
  qemu::host_choice host;
};

fixture_options options_or_skip() {
  fixture_options f;
  f.opts.instance = "qemu-test";
  f.opts.state_dir = (std::filesystem::temp_directory_path()
                      / ("qemu-test-" + std::to_string(::getpid()))).string();
  f.opts.kernel = BUILD_ROOT "/guest-image/vmlinux";
  f.opts.initrd = BUILD_ROOT "/guest-image/initrd.img";
  f.opts.boot_timeout_ms = 180000; // TCG on a loaded 2-core host
  f.opts.allow_faults = true;
  auto host = qemu::check_host(f.opts, BUILD_ROOT "/src/cli/agentvisor");
  if (!host) skip(host.err().message);
  f.host = *host;
  return f;
}

/// Processes whose command line names this test's state directory.
int qemus_of(const std::string& state_dir) {
  int n = 0;
  DIR* d = ::opendir("/proc");
  while (auto* e = d ? ::readdir(d) : nullptr) {
    if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
    std::ifstream in(std::string("/proc/") + e->d_name + "/cmdline");
    std::string cmd((std::istreambuf_iterator<char>(in)), {});
    if (cmd.find(state_dir) != std::string::npos) ++n;
  }
  if (d) ::closedir(d);
  return n;
}

/// One booted agent and the guest session on its channel.
struct vm_under_test {
  caf::scoped_actor& self;
  backend_actor backend;
  agent_spec spec;
  agent_started started;
  guest::guest_session session;
  std::vector<agent_oom> ooms;

  /// The next guest event that is not a heartbeat. The test's one mailbox
  /// gets every VM's channel: lines of another VM (its heartbeats) are not
  /// this guest's and are dropped.
  guest::session_event next(std::chrono::seconds within = 60s) {
    // One deadline for the whole wait: another VM's heartbeats would
    // restart a per-receive timeout forever.
    const auto deadline = std::chrono::steady_clock::now() + within;
    for (;;) {
      std::optional<result<guest::session_event>> r;
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
      if (left <= 0ms)
        FAIL("nothing from the guest of " << spec.id);
      self->receive(
        [&](io::stream_line& l) {
          if (l.id == started.channel)
            r.emplace(session.on_line(l.line));
        },
        [&](io::stream_closed& c) {
          if (c.id == started.channel)
            r.emplace(session.on_closed(c.reason));
        },
        [&](agent_oom& o) { ooms.push_back(o); },
        caf::after(left) >> [&] { FAIL("nothing from the guest of " << spec.id); });
      if (!r) continue;
      REQUIRE_MESSAGE(*r, "protocol error: " << (*r ? "" : r->err().message));
      if (!std::holds_alternative<guest::heartbeat>(**r)) return std::move(**r);
    }
  }

  guest::call_result call(const std::string& tool, const std::string& args) {
    auto c = session.call(tool, args);
    REQUIRE_MESSAGE(c, c.err().message);
    io_write(c->line);
    auto ev = next(120s);
    REQUIRE_MESSAGE(std::holds_alternative<guest::call_result>(ev), tool << ": no result");
    return std::get<guest::call_result>(ev);
  }

  std::function<void(std::string)> io_write;

  agent_exited wait_exit() {
    std::optional<agent_exited> e;
    while (!e)
      self->receive([&](agent_exited& x) { e = x; }, [](io::stream_line&) {},
                    [](io::stream_closed&) {}, [&](agent_oom& o) { ooms.push_back(o); },
                    caf::after(120s) >> [&] { FAIL("no agent_exited for " << spec.id); });
    return *e;
  }
};

struct harness {
  fixture_options f = options_or_skip();
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  io::io_thread io;
  std::optional<caf::scoped_actor> self;
  backend_actor backend;

  explicit harness(bool keep_workspaces = false, bool snapshots = false) {
    f.opts.keep_workspaces = keep_workspaces;
    f.opts.snapshots = snapshots;
    REQUIRE(io.start());
    self.emplace(sys);
    backend = qemu::spawn_qemu_backend(sys, io, f.opts, f.host);
  }

  std::unique_ptr<vm_under_test> boot(const std::string& id, uint64_t memory = 128ull << 20) {
    auto v = std::unique_ptr<vm_under_test>(new vm_under_test{*self, backend, {}, {}, {}, {}, {}});
    v->spec.id = id;
    v->spec.memory_bytes = memory;
    v->spec.workspace_bytes = 32ull << 20;
    v->spec.heartbeat_ms = 1000;
    v->spec.allow_faults = true;
    v->spec.env = {"AGENT_GREETING=hello-from-env"};
    v->io_write = [this, v = v.get()](std::string line) { io.write(v->started.channel, std::move(line)); };
    bool ok = false;
    (*self)->request(backend, caf::infinite, spawn_atom::value, v->spec,
                     caf::actor_cast<caf::actor>(*self))
      .receive([&](agent_started& x) { v->started = x; ok = true; },
               [&](caf::error& e) { FAIL("spawn " << id << ": " << sys.render(e)); });
    REQUIRE(ok);
    CHECK(v->started.backend == "qemu");
    CHECK(std::holds_alternative<guest::hello>(v->next()));
    CHECK(std::holds_alternative<guest::ready>(v->next()));
    return v;
  }

  void check_gone(const std::string& id) {
    CHECK_FALSE(std::filesystem::exists(f.opts.state_dir + "/vms/qemu-test/" + id));
    CHECK(qemus_of(f.opts.state_dir) == 0);
  }

  ~harness() {
    (*self)->send_exit(backend, caf::exit_reason::user_shutdown);
    (*self)->wait_for(backend);
    self.reset();
    CHECK(io.stop().open_handles == 0);
    CHECK(qemus_of(f.opts.state_dir) == 0);
    std::filesystem::remove_all(f.opts.state_dir);
  }
};

} // namespace

TEST_CASE("a qemu VM runs every tool, survives a command's OOM kill, and stops") {
  harness h{true}; // keep_workspaces: the image is kept, checked at the end
  auto v = h.boot("tools");
  auto w = v->call("write_file", R"({"path":"dir/a.txt","content":"hello from the VM\n"})");
  CHECK_MESSAGE(w.ok, w.error.message);
  auto r = v->call("read_file", R"({"path":"dir/a.txt"})");
  CHECK(r.ok);
  CHECK(r.result_json.find("hello from the VM") != std::string::npos);
  auto l = v->call("list_directory", R"({"path":"dir"})");
  CHECK(l.result_json.find("\"a.txt\"") != std::string::npos);
  auto s = v->call("search", R"({"pattern":"from the"})");
  CHECK(s.result_json.find("dir/a.txt") != std::string::npos);
  auto e = v->call("execute_command",
                   R"({"argv":["sh","-c","uname -r; cat dir/a.txt; df -k . | tail -1; echo $AGENT_GREETING"]})");
  CHECK(e.ok);
  CHECK(e.result_json.find("hello from the VM") != std::string::npos);
  CHECK(e.result_json.find("\"exit_code\":0") != std::string::npos);
  CHECK(e.result_json.find("hello-from-env") != std::string::npos); // spec.env reached it

  // A command that allocates past the agent's 128 MiB (awk doubling a
  // string) until the OOM killer ends it.
  auto oom = v->call("execute_command", R"({"argv":["awk","BEGIN { s = \"x\"; while (1) s = s s }"]})");
  INFO(oom.result_json);
  CHECK(oom.ok);
  CHECK(oom.result_json.find("\"signal\":9") != std::string::npos);
  // The OOM event comes on the control channel, maybe after the result.
  for (int i = 0; i < 60 && v->ooms.empty(); ++i)
    (*h.self)->receive([&](agent_oom& o) { v->ooms.push_back(o); }, [](io::stream_line&) {},
                       caf::after(1s) >> [] {});
  REQUIRE_FALSE(v->ooms.empty());
  CHECK(v->ooms.front().id == "tools");
  // The agent lives on.
  auto again = v->call("read_file", R"({"path":"dir/a.txt"})");
  CHECK(again.ok);

  // usage: the guest cgroup's numbers, and the VM's own from the balloon
  // statistics over QMP (polled every heartbeat; the first may take a few).
  agent_usage u;
  for (int i = 0; i < 30 && u.machine_memory_bytes == 0; ++i) {
    (*h.self)->request(h.backend, caf::infinite, usage_atom::value, std::string{"tools"})
      .receive([&](agent_usage& x) { u = x; }, [&](caf::error& e) { FAIL(h.sys.render(e)); });
    if (u.machine_memory_bytes == 0)
      (*h.self)->receive([](io::stream_line&) {}, [&](agent_oom& o) { v->ooms.push_back(o); },
                         caf::after(1s) >> [] {});
  }
  INFO("usage: memory " << u.memory_bytes << ", VM total " << u.machine_memory_bytes
                        << ", VM available " << u.machine_available_bytes);
  CHECK(u.memory_bytes > 0);
  // 128 MiB + the 96 MiB reserve, less what the kernel keeps for itself.
  CHECK(u.machine_memory_bytes > (128ull << 20));
  CHECK(u.machine_memory_bytes <= (224ull << 20));
  CHECK(u.machine_available_bytes > 0);
  CHECK(u.machine_available_bytes < u.machine_memory_bytes);

  (*h.self)->send(h.backend, stop_atom::value, std::string{"tools"}, uint32_t{3000});
  auto x = v->wait_exit();
  CHECK(x.exit_code == 0);
  CHECK(x.signal == 0);
  CHECK_FALSE(x.oom);
  h.check_gone("tools");

  // keep_workspaces: the workspace image outlives the VM, with the file
  // the agent wrote (read with debugfs: no mount needed).
  auto kept = h.f.opts.state_dir + "/workspaces/qemu-test/tools.ext4";
  REQUIRE(std::filesystem::exists(kept));
  std::string cmd = "debugfs -R 'cat /dir/a.txt' " + kept + " 2>/dev/null";
  std::string text;
  if (FILE* p = ::popen(cmd.c_str(), "r")) {
    char buf[256];
    while (auto n = std::fread(buf, 1, sizeof buf, p))
      text.append(buf, n);
    ::pclose(p);
  }
  CHECK(text == "hello from the VM\n");
}

TEST_CASE("a guest that allocates past its memory is OOM-killed, and its exit says so") {
  harness h;
  auto v = h.boot("oom");
  guest::fault fo;
  fo.kind = guest::fault_kind::oom;
  auto f = v->session.fault(fo);
  h.io.write(v->started.channel, std::move(f.line));
  auto x = v->wait_exit();
  CHECK(x.signal == SIGKILL);
  CHECK(x.oom);
  CHECK_FALSE(v->ooms.empty());
  h.check_gone("oom");
}

TEST_CASE("killing the qemu process is an exit event, and nothing is left") {
  harness h;
  auto v = h.boot("killed");
  (*h.self)->send(h.backend, signal_atom::value, std::string{"killed"}, int32_t{SIGKILL});
  auto x = v->wait_exit();
  CHECK(x.signal == SIGKILL);
  CHECK_FALSE(x.oom);
  h.check_gone("killed");
}

TEST_CASE("snapshots: a shape's second agent is restored from its template's snapshot, as "
          "itself") {
  namespace fs = std::filesystem;
  harness h{false, true};
  auto a = h.boot("snap-a"); // boots cold; the template boots beside it
  const std::string shape = "224m-33554432"; // 128 MiB + 96, a 32 MiB disk
  const auto tdir = h.f.opts.state_dir + "/templates/qemu-test/" + shape;
  const auto template_dir = h.f.opts.state_dir + "/vms/qemu-test/@template-" + shape;
  // The template parks, is migrated to a file, and its qemu ends (TCG:
  // a boot's time, on a loaded host minutes).
  for (int i = 0; i < 1800 && !(fs::exists(tdir + "/vmstate") && !fs::exists(template_dir)); ++i)
    (*h.self)->receive([](io::stream_line&) {}, caf::after(100ms) >> [] {});
  REQUIRE(fs::exists(tdir + "/vmstate"));
  REQUIRE_FALSE(fs::exists(template_dir));

  auto b = h.boot("snap-b");
  // Restored, not booted: its qemu took the template's state as migration.
  std::ifstream in("/proc/" + std::to_string(b->started.pid) + "/cmdline");
  std::string cmdline((std::istreambuf_iterator<char>(in)), {});
  CHECK(cmdline.find(std::string("-incoming\0defer", 15)) != std::string::npos);
  // Its own agent: the limits and environment of its spec (sent in
  // `start`), a workspace of its own that works.
  auto w = b->call("write_file", R"({"path":"b.txt","content":"restored\n"})");
  CHECK_MESSAGE(w.ok, w.error.message);
  auto e = b->call("execute_command",
                   R"({"argv":["sh","-c","cat /sys/fs/cgroup/agent/memory.max b.txt; echo $AGENT_GREETING; ls /workspace"]})");
  INFO(e.result_json);
  CHECK(e.ok);
  CHECK(e.result_json.find("134217728\\nrestored\\nhello-from-env") != std::string::npos);
  CHECK(e.result_json.find("lost+found") != std::string::npos); // ext4: its own image

  for (auto* v : {a.get(), b.get()}) {
    (*h.self)->send(h.backend, stop_atom::value, v->spec.id, uint32_t{3000});
    auto x = v->wait_exit();
    CHECK(x.exit_code == 0);
    CHECK(x.signal == 0);
  }
  h.check_gone("snap-b");
}

// The firecracker backend actor with the real I/O thread and mke2fs, and a
// fake firecracker (fake_vmm.cpp) that serves the API and plays the guest's
// side of both vsock connections: the actor's non-blocking API calls, boot,
// channel hand-over, control events (oom, usage, exited, init_failed), stop,
// kill, chaos signals, boot timeout and clean-up, on a host without KVM.

#include "api.hpp"
#include "firecracker_backend.hpp"

#include "agentvisor/vm_control.hpp"

#include <caf/all.hpp>
#include <doctest/doctest.h>

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>

using namespace agentvisor;
using namespace std::chrono_literals;
namespace fc = agentvisor::firecracker;

namespace {

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

size_t open_fds() {
  size_t n = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/proc/self/fd"))
    ++n;
  return n;
}

std::vector<std::string> read_lines(const std::string& path) {
  std::vector<std::string> out;
  std::ifstream in(path);
  for (std::string l; std::getline(in, l);)
    out.push_back(l);
  return out;
}

struct fixture {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  io::io_thread io;
  fc::backend_options opts;
  backend_actor backend;
  std::string log_path;
  size_t fds_before = 0;

  explicit fixture(bool snapshots = false) {
    opts.snapshots = snapshots;
    auto base = std::filesystem::temp_directory_path() / ("fc-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(base);
    opts.instance = "t";
    opts.state_dir = base.string();
    opts.binary = FAKE_VMM_PATH;
    opts.kernel = "/boot/vmlinuz-fake";
    opts.initrd = "/boot/initrd-fake";
    opts.boot_timeout_ms = 3000;
    opts.allow_faults = true;
    log_path = (base / "requests.log").string();
    ::setenv("FAKE_VMM_LOG", log_path.c_str(), 1);
    // libuv opens a process-wide signal pipe once, on its first loop: open
    // it before counting.
    static bool warm = [] { io::io_thread t; t.start(); t.stop(); return true; }();
    (void) warm;
    fds_before = open_fds();
    REQUIRE(io.start());
    backend = fc::spawn_firecracker_backend_unchecked(sys, io, opts);
  }
  ~fixture() {
    self->send_exit(backend, caf::exit_reason::user_shutdown);
    self->wait_for(backend);
    auto report = io.stop();
    CHECK(report.open_handles == 0);
    if (open_fds() != fds_before)
      for (auto& e : std::filesystem::directory_iterator("/proc/self/fd"))
        MESSAGE(e.path().string() << " -> " << std::filesystem::read_symlink(e.path()).string());
    CHECK(open_fds() == fds_before);
    std::filesystem::remove_all(opts.state_dir);
  }

  std::string vm_dir(const std::string& id) { return opts.state_dir + "/vms/t/" + id; }

  agent_spec spec(const std::string& id) {
    agent_spec s;
    s.id = id;
    s.memory_bytes = 100ull << 20;
    s.workspace_bytes = 16ull << 20;
    s.heartbeat_ms = 250;
    return s;
  }

  caf::expected<agent_started> spawn(const agent_spec& s) {
    caf::expected<agent_started> out{caf::sec::none};
    self->request(backend, caf::infinite, spawn_atom::value, s, caf::actor{self})
      .receive([&](agent_started& a) { out = std::move(a); },
               [&](caf::error& e) { out = std::move(e); });
    return out;
  }

  std::string line(io::handle_id channel) {
    std::string out;
    self->receive([&](io::stream_line& l) { CHECK(l.id == channel); out = l.line; },
                  caf::after(5s) >> [] { FAIL("no line on the channel within 5 s"); });
    return out;
  }

  // Waits for agent_exited (skipping the channel's own messages).
  agent_exited exited(const std::string& id, std::vector<agent_oom>* ooms = nullptr) {
    for (;;) {
      std::optional<agent_exited> out;
      self->receive([&](agent_exited& e) { out = e; },
                    [&](agent_oom& o) { if (ooms) ooms->push_back(o); },
                    [&](io::stream_line&) {}, [&](io::stream_closed&) {},
                    caf::after(10s) >> [] { FAIL("no agent_exited within 10 s"); });
      if (out) {
        CHECK(out->id == id);
        CHECK_FALSE(std::filesystem::exists(vm_dir(id)));
        return *out;
      }
    }
  }

  std::string render(const caf::error& e) { return sys.render(e); }
};

struct snapshot_fixture : fixture {
  snapshot_fixture() : fixture(true) {}
};

bool any_line(const std::vector<std::string>& lines, const std::string& want) {
  return std::find(lines.begin(), lines.end(), want) != lines.end();
}

} // namespace

TEST_CASE_FIXTURE(fixture, "a VM boots, hands its channel to the owner, reports usage, and stops cleanly") {
  auto a = spawn(spec("vm-ok"));
  REQUIRE_MESSAGE(a, render(a.error()));
  CHECK(a->backend == "firecracker");
  CHECK(a->pid > 0);
  CHECK(line(a->channel) == R"({"fake":"hello"})");
  CHECK(std::filesystem::exists(vm_dir("vm-ok") + "/workspace.ext4"));

  // The configuration the actor sent, in order, with the paths it made.
  auto reqs = read_lines(log_path);
  REQUIRE(reqs.size() == 5);
  auto dir = vm_dir("vm-ok");
  CHECK(reqs[0] == "PUT /machine-config " + fc::api::put_machine_config(1, 196).body);
  CHECK(reqs[1] == "PUT /boot-source "
                     + fc::api::put_boot_source("/boot/vmlinuz-fake", fc::boot_args(spec("vm-ok")),
                                                "/boot/initrd-fake").body);
  CHECK(reqs[2] == "PUT /drives/workspace " + fc::api::put_drive("workspace", dir + "/workspace.ext4").body);
  CHECK(reqs[3] == "PUT /vsock " + fc::api::put_vsock(3, dir + "/v.sock").body);
  CHECK(reqs[4] == R"(PUT /actions {"action_type":"InstanceStart"})");

  // usage: the guest's last report (sent right after booted).
  for (int i = 0; i < 100; ++i) {
    agent_usage u;
    self->request(backend, caf::infinite, usage_atom::value, std::string{"vm-ok"})
      .receive([&](agent_usage& x) { u = x; }, [&](caf::error& e) { FAIL(render(e)); });
    if (u.memory_bytes == 12345) {
      CHECK(u.memory_peak_bytes == 23456);
      CHECK(u.pids == 3);
      CHECK(u.cpu_usage_ns == 999);
      break;
    }
    REQUIRE(i < 99);
    std::this_thread::sleep_for(10ms);
  }

  self->send(backend, stop_atom::value, std::string{"vm-ok"}, uint32_t{2000});
  auto e = exited("vm-ok");
  CHECK(e.exit_code == 0);
  CHECK(e.signal == 0);
  CHECK_FALSE(e.oom);
  CHECK(e.peak_bytes == 23456);
}

TEST_CASE_FIXTURE(fixture, "an OOM kill in the VM reaches the owner as agent_oom, then agent_exited with oom") {
  auto a = spawn(spec("oom-1"));
  REQUIRE_MESSAGE(a, render(a.error()));
  std::vector<agent_oom> ooms;
  auto e = exited("oom-1", &ooms);
  REQUIRE(ooms.size() == 1);
  CHECK(ooms[0].id == "oom-1");
  CHECK(ooms[0].limit_bytes == 64ull << 20);
  CHECK(e.signal == SIGKILL);
  CHECK(e.oom);
  CHECK(e.peak_bytes == 64ull << 20);
}

TEST_CASE_FIXTURE(fixture, "kill and a chaos SIGKILL end the VMM: agent_exited with signal 9") {
  auto a = spawn(spec("vm-kill"));
  REQUIRE_MESSAGE(a, render(a.error()));
  self->send(backend, kill_atom::value, std::string{"vm-kill"});
  auto e = exited("vm-kill");
  CHECK(e.signal == SIGKILL);
  CHECK_FALSE(e.oom);

  auto b = spawn(spec("vm-chaos"));
  REQUIRE_MESSAGE(b, render(b.error()));
  self->send(backend, signal_atom::value, std::string{"vm-chaos"}, int32_t{SIGKILL});
  CHECK(exited("vm-chaos").signal == SIGKILL);
}

TEST_CASE_FIXTURE(fixture, "a guest that ignores stop is killed after the grace period") {
  auto a = spawn(spec("hang-1"));
  REQUIRE_MESSAGE(a, render(a.error()));
  auto t0 = std::chrono::steady_clock::now();
  self->send(backend, stop_atom::value, std::string{"hang-1"}, uint32_t{200});
  auto e = exited("hang-1");
  auto took = std::chrono::steady_clock::now() - t0;
  CHECK(e.signal == SIGKILL);
  CHECK(took >= std::chrono::milliseconds(200 + fc::stop_margin_ms));
}

TEST_CASE_FIXTURE(fixture, "a guest that never boots fails the spawn with a boot timeout, and leaves nothing") {
  opts.boot_timeout_ms = 300;
  self->send_exit(backend, caf::exit_reason::user_shutdown);
  self->wait_for(backend);
  backend = fc::spawn_firecracker_backend_unchecked(sys, io, opts);
  auto a = spawn(spec("noboot-1"));
  REQUIRE_FALSE(a);
  auto msg = render(a.error());
  CHECK_MESSAGE(contains(msg, "agent noboot-1"), msg);
  CHECK_MESSAGE(contains(msg, "boot timeout"), msg);
  // The directory goes with the VMM's exit, which the answer waited for.
  CHECK_FALSE(std::filesystem::exists(vm_dir("noboot-1")));
}

TEST_CASE_FIXTURE(fixture, "an API error fails the spawn with Firecracker's fault_message") {
  auto a = spawn(spec("fault-1"));
  REQUIRE_FALSE(a);
  auto msg = render(a.error());
  CHECK_MESSAGE(contains(msg, "agent fault-1"), msg);
  CHECK_MESSAGE(contains(msg, "PUT /boot-source: HTTP 400: Invalid kernel path: no such file"), msg);
  CHECK_FALSE(std::filesystem::exists(vm_dir("fault-1")));
}

TEST_CASE_FIXTURE(fixture, "a VMM that dies during boot, or an init that fails, fails the spawn") {
  auto a = spawn(spec("crash-1"));
  REQUIRE_FALSE(a);
  auto msg = render(a.error());
  CHECK_MESSAGE(contains(msg, "firecracker exited before the guest booted (code 3)"), msg);
  CHECK_FALSE(std::filesystem::exists(vm_dir("crash-1")));

  auto b = spawn(spec("initfail-1"));
  REQUIRE_FALSE(b);
  msg = render(b.error());
  CHECK_MESSAGE(contains(msg, "guest init failed: mount /dev/vda: no such device"), msg);
  CHECK_FALSE(std::filesystem::exists(vm_dir("initfail-1")));
}

TEST_CASE_FIXTURE(fixture, "spawn faults, bad ids and duplicates are refused like the sandbox backend's") {
  uint32_t armed = 0;
  self->request(backend, caf::infinite, spawn_fault_atom::value, spawn_fault{1, true, 0, {}, {}})
    .receive([&](uint32_t n) { armed = n; }, [&](caf::error& e) { FAIL(render(e)); });
  CHECK(armed == 1);
  auto f = spawn(spec("vm-f"));
  REQUIRE_FALSE(f);
  CHECK(contains(render(f.error()), "spawn failure injected"));
  // A fault armed for one agent leaves everybody else's spawns alone.
  self->request(backend, caf::infinite, spawn_fault_atom::value,
                spawn_fault{1, true, 0, {}, "vm-target"})
    .receive([&](uint32_t n) { armed = n; }, [&](caf::error& e) { FAIL(render(e)); });
  CHECK(armed == 1);
  auto other = spawn(spec("vm-other"));
  REQUIRE_MESSAGE(other, render(other.error()));
  auto target = spawn(spec("vm-target"));
  REQUIRE_FALSE(target);
  CHECK(contains(render(target.error()), "agent vm-target: spawn failure injected"));
  auto again = spawn(spec("vm-target"));
  REQUIRE_MESSAGE(again, render(again.error()));
  for (const char* id : {"vm-other", "vm-target"}) {
    self->send(backend, kill_atom::value, std::string{id});
    exited(id);
  }
  auto bad = spawn(spec("../x"));
  REQUIRE_FALSE(bad);
  CHECK(contains(render(bad.error()), "invalid agent id"));
  auto a = spawn(spec("vm-dup"));
  REQUIRE_MESSAGE(a, render(a.error()));
  auto d = spawn(spec("vm-dup"));
  REQUIRE_FALSE(d);
  CHECK(contains(render(d.error()), "already exists"));
  self->send(backend, kill_atom::value, std::string{"vm-dup"});
  exited("vm-dup");
}

TEST_CASE("the kernel command line and the VM's memory") {
  agent_spec s;
  s.id = "a-7";
  s.memory_bytes = (100ull << 20) + 1;
  s.workspace_bytes = 32ull << 20;
  s.pids = 77;
  s.heartbeat_ms = 500;
  s.allow_faults = true;
  CHECK(fc::vm_memory_mib(s.memory_bytes) == 101 + fc::guest_reserve_mib);
  CHECK(fc::vm_memory_mib(256ull << 20) == 256 + fc::guest_reserve_mib);
  auto args = fc::boot_args(s);
  CHECK(args.starts_with("console=ttyS0 reboot=k panic=-1 pci=off quiet "));
  auto p = vm::parse_cmdline(args);
  REQUIRE_MESSAGE(p, p.err().message);
  CHECK(p->transport == "vsock");
  CHECK(p->workspace_device == "/dev/vda");
  CHECK(p->memory_bytes == s.memory_bytes);
  CHECK(p->workspace_bytes == s.workspace_bytes);
  CHECK(p->pids == 77);
  CHECK(p->heartbeat_ms == 500);
  CHECK(p->allow_faults);
  CHECK(p->agent_id == "a-7");
}

// Why spawn_firecracker_backend refuses these options.
static std::string refusal(const fc::backend_options& o) {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  io::io_thread io;
  auto r = fc::spawn_firecracker_backend(sys, io, o);
  REQUIRE_FALSE(r);
  return r.err().message;
}

TEST_CASE("spawn_firecracker_backend names what the host lacks") {
  fc::backend_options o;
  o.binary = "/nonexistent/firecracker";
  o.kernel = "/nonexistent/vmlinux";
  auto why = refusal(o);
  if (::access("/dev/kvm", R_OK | W_OK) != 0)
    CHECK_MESSAGE(contains(why, "/dev/kvm"), why);
  else
    CHECK_MESSAGE(contains(why, "/nonexistent/firecracker"), why);
}

TEST_CASE("firecracker snapshots with the jailer are refused at start-up, saying why") {
  fc::backend_options o;
  o.jailer = "jailer";
  o.snapshots = true;
  auto why = refusal(o);
  CHECK_MESSAGE(contains(why, "snapshots do not work with the jailer"), why);
}

TEST_CASE_FIXTURE(snapshot_fixture, "snapshots: a shape's first spawn boots cold beside a parked "
                                    "template; later spawns restore its snapshot") {
  namespace fs = std::filesystem;
  const std::string shape = "196m-16777216"; // spec(): 100 MiB + 96, 16 MiB disk
  const std::string tdir = opts.state_dir + "/templates/t/" + shape;
  const std::string template_id = "@template-" + shape;
  auto a = spawn(spec("vm-a"));
  REQUIRE_MESSAGE(a, render(a.error()));
  CHECK(line(a->channel) == R"({"fake":"hello"})");
  // The template is snapshotted, then its VM ends.
  for (int i = 0; i < 500 && !(fs::exists(tdir + "/snapshot") && !fs::exists(vm_dir(template_id))); ++i)
    std::this_thread::sleep_for(10ms);
  REQUIRE(fs::exists(tdir + "/snapshot"));
  REQUIRE(fs::exists(tdir + "/memory"));
  REQUIRE_FALSE(fs::exists(vm_dir(template_id)));

  // The template: parked, with paths relative to its VM's directory (so a
  // restore finds its own), paused, then snapshotted.
  auto reqs = read_lines(log_path);
  auto tspec = spec(template_id);
  auto tparams = microvm::boot_params_for(tspec, "vsock");
  tparams.park = true;
  CHECK(any_line(reqs, "PUT /boot-source "
                         + fc::api::put_boot_source("/boot/vmlinuz-fake", fc::boot_args(tparams),
                                                    "/boot/initrd-fake").body));
  CHECK(any_line(reqs, "PUT /drives/workspace " + fc::api::put_drive("workspace", "workspace.ext4").body));
  CHECK(any_line(reqs, "PUT /vsock " + fc::api::put_vsock(3, "v.sock").body));
  CHECK(any_line(reqs, "PATCH /vm " + fc::api::pause_vm().body));
  CHECK(any_line(reqs, "PUT /snapshot/create "
                         + fc::api::create_snapshot(tdir + "/snapshot", tdir + "/memory").body));

  // The next spawn of that shape is one API call: the fake restored guest
  // exits 8 unless `start` carries the agent's own params.
  auto before = read_lines(log_path).size();
  auto b = spawn(spec("vm-b"));
  REQUIRE_MESSAGE(b, render(b.error()));
  CHECK(line(b->channel) == R"({"fake":"hello"})");
  reqs = read_lines(log_path);
  REQUIRE(reqs.size() == before + 1);
  CHECK(reqs.back() == "PUT /snapshot/load "
                         + fc::api::load_snapshot(tdir + "/snapshot", tdir + "/memory", true).body);

  // Another shape gets a template of its own; its first spawn boots cold.
  auto big = spec("vm-big");
  big.memory_bytes = 200ull << 20;
  auto c = spawn(big);
  REQUIRE_MESSAGE(c, render(c.error()));
  CHECK(line(c->channel) == R"({"fake":"hello"})");

  for (const auto& id : {"vm-a", "vm-b", "vm-big"}) {
    self->send(backend, stop_atom::value, std::string{id}, uint32_t{2000});
    CHECK(exited(id).exit_code == 0);
  }

  SUBCASE("a snapshot that cannot be restored fails that spawn, and its shape boots cold after") {
    fs::remove(tdir + "/snapshot");
    auto d = spawn(spec("vm-d"));
    REQUIRE_FALSE(d);
    CHECK(contains(render(d.error()), "Cannot open the snapshot file"));
    CHECK_FALSE(fs::exists(vm_dir("vm-d")));
    CHECK_FALSE(fs::exists(tdir));
    auto n = read_lines(log_path).size();
    auto e = spawn(spec("vm-d"));
    REQUIRE_MESSAGE(e, render(e.error()));
    reqs = read_lines(log_path);
    CHECK(reqs.back() == R"(PUT /actions {"action_type":"InstanceStart"})");
    CHECK(reqs.size() == n + 5); // a cold boot, no new template
    self->send(backend, stop_atom::value, std::string{"vm-d"}, uint32_t{2000});
    CHECK(exited("vm-d").exit_code == 0);
  }

  // The snapshots go with the backend.
  self->send_exit(backend, caf::exit_reason::user_shutdown);
  self->wait_for(backend);
  CHECK_FALSE(fs::exists(opts.state_dir + "/templates/t"));
}

TEST_CASE("the control codec: parked, start with the agent's params, and bad params refused") {
  std::string line;
  vm::encode(vm::guest_event{vm::parked{}}, line);
  CHECK(line == "{\"type\":\"parked\"}\n");
  auto ev = vm::decode_guest_event(line);
  REQUIRE_MESSAGE(ev, ev.err().message);
  CHECK(std::holds_alternative<vm::parked>(*ev));

  agent_spec s;
  s.id = "a-9";
  s.memory_bytes = 64ull << 20;
  s.pids = 33;
  auto p = microvm::boot_params_for(s, "vsock");
  vm::start st{{"K=V"}, vm::to_cmdline(p)};
  line.clear();
  vm::encode(vm::host_request{st}, line);
  auto back = vm::decode_host_request(line);
  REQUIRE_MESSAGE(back, back.err().message);
  REQUIRE(std::holds_alternative<vm::start>(*back));
  CHECK(std::get<vm::start>(*back) == st);
  auto params = vm::parse_cmdline(std::get<vm::start>(*back).params);
  REQUIRE(params);
  CHECK(*params == p);

  // Without params (a cold boot) the field is left out.
  line.clear();
  vm::encode(vm::host_request{vm::start{{"K=V"}, {}}}, line);
  CHECK_FALSE(contains(line, "params"));

  // park survives the command line; an agent's params may not park it.
  auto parked = p;
  parked.park = true;
  CHECK(vm::parse_cmdline(vm::to_cmdline(parked))->park);
  auto bad = vm::decode_host_request(
    R"({"type":"start","env":[],"params":")" + vm::to_cmdline(parked) + "\"}");
  REQUIRE_FALSE(bad);
  CHECK(contains(bad.err().message, "start.params: agentvisor.park"));
  bad = vm::decode_host_request(R"({"type":"start","env":[],"params":" agentvisor.bogus=1"})");
  REQUIRE_FALSE(bad);
  CHECK(contains(bad.err().message, "start.params: kernel command line: unknown key agentvisor.bogus"));
  bad = vm::decode_host_request(R"({"type":"start","env":[],"params":7})");
  REQUIRE_FALSE(bad);
  CHECK(contains(bad.err().message, "params"));
}

TEST_CASE_FIXTURE(fixture, "two spawn faults aimed at one agent both happen, in the order armed") {
  // A chaos run may arm a failure and a delay for one agent within a few ms;
  // the second must not replace the first.
  for (auto f : {spawn_fault{1, true, 0, {}, "vm-two"}, spawn_fault{1, false, 200, {}, "vm-two"}}) {
    uint32_t armed = 0;
    self->request(backend, caf::infinite, spawn_fault_atom::value, f)
      .receive([&](uint32_t n) { armed = n; }, [&](caf::error& e) { FAIL(render(e)); });
    CHECK(armed == 1);
  }
  auto first = spawn(spec("vm-two"));
  REQUIRE_FALSE(first);
  CHECK(contains(render(first.error()), "agent vm-two: spawn failure injected"));
  auto t0 = std::chrono::steady_clock::now();
  auto second = spawn(spec("vm-two"));
  REQUIRE_MESSAGE(second, render(second.error()));
  // Held for its delay (a lower bound: no upper one on a shared machine).
  CHECK(std::chrono::steady_clock::now() - t0 >= 200ms);
  self->send(backend, kill_atom::value, std::string{"vm-two"});
  exited("vm-two");
  // Both met: the next spawn is plain.
  auto third = spawn(spec("vm-two"));
  REQUIRE_MESSAGE(third, render(third.error()));
  self->send(backend, kill_atom::value, std::string{"vm-two"});
  exited("vm-two");
}

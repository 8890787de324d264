// The sandbox backend's parts, end to end with real processes: the template
// process clones real sandboxes into real cgroups, the guest inside answers
// over the real channel, the kernel's OOM killer and signals do the rest.

#include "harness.hpp"

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <set>
#include <fstream>
#include <sstream>

using namespace harness;

namespace {

std::string instance_name() {
  return "test-sandbox-" + std::to_string(::getpid());
}

std::string file_bytes(const char* path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Copies the probe into the workspace (base64 over write_file) and makes it
// executable, so tests can run it inside the sandbox.
void install_probe(agent& a) {
  auto bin = file_bytes(PROBE_PATH);
  REQUIRE(!bin.empty());
  std::string args;
  agentvisor::json::writer w{args};
  w.begin_object().field("path", "probe").field("encoding", "base64").key("content")
    .value_base64(bin).end_object();
  auto r = a.call("write_file", args);
  REQUIRE_MESSAGE(r.ok, r.error.message);
  auto c = a.call("execute_command", R"({"argv":["/bin/chmod","755","/workspace/probe"]})");
  REQUIRE_MESSAGE(c.ok, c.error.message);
}

// Runs the probe with arguments and returns its stdout.
std::string probe(agent& a, std::initializer_list<std::string> args) {
  std::string body;
  agentvisor::json::writer w{body};
  w.begin_object().key("argv").begin_array().value("/workspace/probe");
  for (const auto& x : args)
    w.value(x);
  w.end_array().field("timeout_ms", 20000).end_object();
  auto r = a.call("execute_command", body, std::chrono::seconds(30));
  REQUIRE_MESSAGE(r.ok, r.error.message);
  return r.result_json;
}

struct fixture {
  fixture() {
    if (auto why = sandbox_host::unavailable_reason()) {
      std::fprintf(stderr, "SKIP: %s\n", why->c_str());
      std::exit(77);
    }
    host = std::make_unique<sandbox_host>(GUEST_PATH, instance_name());
  }
  ~fixture() {
    for (auto& a : agents)
      CHECK_MESSAGE(sandbox_host::destroy(*a).empty(), "cgroup of ", a->id, " not removed");
  }
  agent& spawn(const std::string& id, sandbox_host::options o = {}) {
    agents.push_back(host->spawn(id, o));
    auto& a = *agents.back();
    REQUIRE_MESSAGE(sandbox_host::handshake(a), "no hello/ready from ", id);
    return a;
  }
  std::unique_ptr<sandbox_host> host;
  std::vector<std::unique_ptr<agent>> agents;
};

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

} // namespace

TEST_CASE_FIXTURE(fixture, "a sandbox starts, says hello and ready, runs every tool, and stops on shutdown") {
  auto& a = spawn("a1");
  auto w = a.call("write_file", R"({"path":"notes/todo.txt","content":"buy milk\nfix bug 42\n"})");
  REQUIRE_MESSAGE(w.ok, w.error.message);
  auto r = a.call("read_file", R"({"path":"notes/todo.txt"})");
  REQUIRE(r.ok);
  CHECK(contains(r.result_json, "fix bug 42"));
  auto l = a.call("list_directory", R"({"path":"notes"})");
  REQUIRE(l.ok);
  CHECK(contains(l.result_json, "todo.txt"));
  auto s = a.call("search", R"({"pattern":"bug","path":"."})");
  REQUIRE(s.ok);
  CHECK(contains(s.result_json, "fix bug 42"));
  auto e = a.call("execute_command", R"({"argv":["/bin/sh","-c","echo $(id -u) $(hostname) $$"]})");
  REQUIRE_MESSAGE(e.ok, e.error.message);
  CHECK(contains(e.result_json, "20000 a1"));
  a.send(agentvisor::guest::encode(agentvisor::guest::shutdown{}));
  auto bye = a.next_message();
  REQUIRE(bye);
  CHECK(std::holds_alternative<agentvisor::guest::bye>(*bye));
  REQUIRE(a.wait_exit());
  CHECK(a.exit_code == 0);
  CHECK_FALSE(a.oom_fired());
}

TEST_CASE_FIXTURE(fixture, "the guest is PID 1 of its own namespaces and sees only its own root") {
  auto& a = spawn("a2");
  auto e = a.call("execute_command",
                  R"({"argv":["/bin/sh","-c","cat /proc/1/comm; ls /; cat /etc/passwd; ls /home 2>&1; cat /etc/shadow 2>&1"]})");
  REQUIRE(e.ok);
  CHECK(contains(e.result_json, "workspace"));
  CHECK_FALSE(contains(e.result_json, "home\\n")); // no /home in the root listing
  CHECK(contains(e.result_json, "agent:x:20000"));
  CHECK(contains(e.result_json, "No such file")); // /home and /etc/shadow are absent
  // Only our processes are visible: PID 1 (the guest) and this one shell
  // (echo is a builtin, so nothing else runs).
  auto ps = a.call("execute_command", R"({"argv":["/bin/sh","-c","echo /proc/[0-9]*; cat /proc/1/comm"]})");
  REQUIRE(ps.ok);
  INFO(ps.result_json);
  CHECK(contains(ps.result_json, R"("stdout":"/proc/1 /proc/)"));
  CHECK(std::count(ps.result_json.begin(), ps.result_json.end(), '/') == 4); // /proc/1 /proc/N /proc/1/comm
  CHECK(contains(ps.result_json, "agentvisor-gues"));
}

TEST_CASE_FIXTURE(fixture, "escape attempts from inside fail") {
  auto& a = spawn("a3", {.pids = 64});
  install_probe(a);

  // A host file outside the bind set, by absolute path.
  auto secret = host->state_dir() / "host-secret";
  { std::ofstream(secret) << "secret"; }
  CHECK(contains(probe(a, {"read", secret.string()}), "denied"));
  // Writing anywhere but /workspace and /tmp.
  for (auto path : {"/usr/evil", "/etc/evil", "/evil", "/proc/evil"})
    CHECK_MESSAGE(contains(probe(a, {"write", path}), "denied"), path);
  CHECK(contains(probe(a, {"write", "/workspace/fine"}), "ok"));
  // Mounting, ptrace, new namespaces, raw sockets: refused.
  CHECK(contains(probe(a, {"mount"}), "denied"));
  CHECK(contains(probe(a, {"ptrace"}), "denied"));
  CHECK(contains(probe(a, {"unshare"}), "denied"));
  CHECK(contains(probe(a, {"raw_socket"}), "denied"));

  // A TCP port listening on the host's 127.0.0.1 is unreachable.
  int ls = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(ls, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(::listen(ls, 4) == 0);
  socklen_t len = sizeof addr;
  ::getsockname(ls, reinterpret_cast<sockaddr*>(&addr), &len);
  auto port = std::to_string(ntohs(addr.sin_port));
  CHECK(contains(probe(a, {"connect", port}), "denied: Connection refused"));
  ::close(ls);

  // A fork bomb stops at the pids limit and the host keeps working.
  auto bomb = probe(a, {"forkbomb"});
  CHECK(contains(bomb, "forked"));
  CHECK(contains(bomb, "Resource temporarily unavailable"));
  int forked = std::atoi(bomb.substr(bomb.find("forked ") + 7).c_str());
  CHECK(forked < 64);
  pid_t p = ::fork();
  if (p == 0)
    ::_exit(0);
  REQUIRE(p > 0);
  ::waitpid(p, nullptr, 0);
  // The agent survives its command's bomb.
  CHECK(a.call("list_directory", R"({"path":"."})").ok);
}

// The template hands out pre-made network namespaces (netns_pool); that path
// must give what clone gave.
TEST_CASE_FIXTURE(fixture, "every sandbox has a network namespace of its own with only lo, up, pooled or not") {
  char host_ns[64] = {};
  REQUIRE(::readlink("/proc/self/ns/net", host_ns, sizeof host_ns - 1) > 0);
  // Without the pool: clone makes each.
  sandbox_host plain{GUEST_PATH, instance_name() + "-plain", {"--netns-pool", "0"}};
  std::vector<std::unique_ptr<agent>> plain_agents;
  std::vector<agent*> all;
  // More spawns than the pool holds, back to back: some pooled, some not.
  for (int i = 0; i < 6; ++i)
    all.push_back(&spawn("n" + std::to_string(i)));
  for (int i = 0; i < 2; ++i) {
    plain_agents.push_back(plain.spawn("p" + std::to_string(i), {}));
    REQUIRE(sandbox_host::handshake(*plain_agents.back()));
    all.push_back(plain_agents.back().get());
  }
  std::set<std::string> seen{host_ns};
  for (agent* a : all) {
    INFO(a->id);
    auto ns = a->call("execute_command", R"({"argv":["/bin/readlink","/proc/self/ns/net"]})");
    REQUIRE(ns.ok);
    auto at = ns.result_json.find("net:[");
    REQUIRE(at != std::string::npos);
    auto link = ns.result_json.substr(at, ns.result_json.find(']', at) + 1 - at);
    CHECK_MESSAGE(seen.insert(link).second, link, " is the host's or another sandbox's");
    // Only lo (2 header lines, then one line per interface).
    auto dev = a->call("execute_command", R"({"argv":["/bin/cat","/proc/net/dev"]})");
    REQUIRE(dev.ok);
    CHECK(contains(dev.result_json, "lo:"));
    auto out = dev.result_json.substr(dev.result_json.find("\"stdout\""));
    size_t lines = 0;
    for (size_t p = out.find("\\n"); p != std::string::npos && p < out.find("\"stderr\"");
         p = out.find("\\n", p + 2))
      ++lines;
    CHECK(lines == 3);
    // lo is up: a connection to a closed port is refused, not unreachable.
    install_probe(*a);
    CHECK(contains(probe(*a, {"connect", "1"}), "Connection refused"));
  }
  for (auto& a : plain_agents)
    CHECK(sandbox_host::destroy(*a).empty());
}

TEST_CASE_FIXTURE(fixture, "a command allocating past a 32 MiB limit is OOM-killed and the guest survives") {
  auto& a = spawn("a4", {.memory_bytes = 32ull << 20});
  install_probe(a);
  auto out = probe(a, {"alloc"});
  CHECK(contains(out, "\"signal\":9"));
  CHECK(a.oom_fired(std::chrono::seconds(5)));
  // The counter catches up with the event a few ms later.
  uint64_t kills = 0;
  for (int i = 0; i < 200 && kills == 0; ++i) {
    kills = a.cgroup.oom_kills().value();
    ::usleep(5000);
  }
  CHECK(kills >= 1);
  CHECK(a.call("list_directory", R"({"path":"."})").ok);
}

TEST_CASE_FIXTURE(fixture, "a guest that allocates past its limit dies by the OOM killer, seen as an OOM event") {
  auto& a = spawn("a5", {.memory_bytes = 32ull << 20, .allow_faults = true});
  a.send(R"({"type":"fault","kind":"oom"})");
  REQUIRE(a.wait_exit(std::chrono::seconds(20)));
  CHECK(a.exit_signal == SIGKILL);
  CHECK(a.oom_fired(std::chrono::seconds(5)));
}

TEST_CASE_FIXTURE(fixture, "SIGKILL from outside ends the agent without an OOM event") {
  auto& a = spawn("a6");
  REQUIRE(::syscall(SYS_pidfd_send_signal, a.pidfd, SIGKILL, nullptr, 0) == 0);
  REQUIRE(a.wait_exit());
  CHECK(a.exit_signal == SIGKILL);
  CHECK_FALSE(a.oom_fired(std::chrono::milliseconds(100)));
  CHECK(a.cgroup.oom_kills().value() == 0);
}

TEST_CASE_FIXTURE(fixture, "a spawn with an unusable rootfs fails with the step and errno, and leaves nothing") {
  sandbox_host::options o;
  std::filesystem::remove_all(host->state_dir() / "rootfs");
  try {
    host->spawn("a7", o);
    FAIL("spawn should have failed");
  } catch (const std::runtime_error& e) {
    CHECK(contains(e.what(), "sandbox a7 setup failed: mount tmpfs on"));
    CHECK(contains(e.what(), "No such file or directory"));
  }
  std::filesystem::create_directories(host->state_dir() / "rootfs");
}

TEST_CASE("stale cgroups of a dead instance are removed, and another instance's are not touched") {
  if (auto why = sandbox_host::unavailable_reason()) {
    std::fprintf(stderr, "SKIP: %s\n", why->c_str());
    std::exit(77);
  }
  namespace sb = agentvisor::sandbox;
  auto layout = sb::detect_cgroups().value();
  auto mine = sb::cgroup_instance::open(layout, instance_name() + "-stale").value();
  auto other = sb::cgroup_instance::open(layout, instance_name() + "-other").value();
  auto leftover = sb::agent_cgroup::create(mine, "left-behind", {64ull << 20, 16, 100}).value();
  auto theirs = sb::agent_cgroup::create(other, "theirs", {64ull << 20, 16, 100}).value();
  // A process left in the stale cgroup, as a crashed supervisor would leave it.
  pid_t p = ::fork();
  if (p == 0) {
    for (const auto& d : leftover.dirs()) {
      std::ofstream(d + "/cgroup.procs") << 0;
    }
    ::pause();
    ::_exit(0);
  }
  for (int i = 0; i < 200; ++i) {
    auto procs = sb::read_file(leftover.memory_dir() + "/cgroup.procs").value();
    if (!procs.empty())
      break;
    ::usleep(5000);
  }
  auto removed = mine.remove_stale();
  REQUIRE_MESSAGE(removed, removed.err().message);
  CHECK(*removed == 1);
  int st = 0;
  REQUIRE(::waitpid(p, &st, 0) == p);
  CHECK(WIFSIGNALED(st));
  CHECK(!std::filesystem::exists(leftover.memory_dir()));
  CHECK(std::filesystem::exists(theirs.memory_dir()));
  CHECK(theirs.remove());
  mine.remove();
  other.remove();
}

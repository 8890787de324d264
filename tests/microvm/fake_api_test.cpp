// fake_firecracker_api: the API client's requests, checked against a small
// fake of Firecracker's API server on a Unix socket (a thread of this test)
// that records every request (parsed with our own HTTP request parser) and
// answers with what the test scripted: 204 by default, or an error with a
// fault_message.

#include "api.hpp"

#include "io/http.hpp"

#include <doctest/doctest.h>
#include <simdjson.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <deque>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace agentvisor;
using namespace std::chrono_literals;
namespace api = agentvisor::firecracker::api;

namespace {

struct fake_api_server {
  std::string path;
  int listen_fd = -1;
  std::thread th;
  std::mutex mu;
  std::vector<http::request> seen;
  std::deque<std::string> answers; ///< raw responses; empty: 204

  fake_api_server() {
    path = (std::filesystem::temp_directory_path()
            / ("fc-fake-api-" + std::to_string(::getpid()) + ".sock")).string();
    ::unlink(path.c_str());
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    listen_fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(::bind(listen_fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(listen_fd, 8) == 0);
    th = std::thread([this] { serve(); });
  }
  ~fake_api_server() {
    ::shutdown(listen_fd, SHUT_RDWR);
    th.join();
    ::close(listen_fd);
    ::unlink(path.c_str());
  }

  void serve() {
    for (;;) {
      int c = ::accept(listen_fd, nullptr, nullptr);
      if (c < 0)
        return;
      http::request_parser parser;
      char buf[4096];
      bool open = true;
      while (open) {
        auto n = ::read(c, buf, sizeof buf);
        if (n <= 0)
          break;
        auto r = parser.feed({buf, static_cast<size_t>(n)});
        for (auto& req : r.requests) {
          std::string answer = "HTTP/1.1 204 No Content\r\n\r\n";
          {
            std::lock_guard lk{mu};
            seen.push_back(req);
            if (!answers.empty()) {
              answer = answers.front();
              answers.pop_front();
            }
          }
          if (::write(c, answer.data(), answer.size()) < 0)
            open = false;
        }
        if (r.error)
          open = false;
      }
      ::close(c);
    }
  }

  http::request last() {
    std::lock_guard lk{mu};
    REQUIRE(!seen.empty());
    return seen.back();
  }
};

std::string header(const http::request& r, std::string_view name) {
  auto* h = r.header(name);
  return h ? *h : std::string{"<absent>"};
}

// Runs `req` against the fake and checks what reached it.
void check_call(fake_api_server& fake, const api::request& req, const std::string& method,
                const std::string& path, const std::string& body) {
  auto res = api::call_unix(fake.path, req, 2s);
  REQUIRE_MESSAGE(res, res.err().message);
  CHECK(res->status == 204);
  CHECK(api::check(*res, api::describe(req)));
  auto seen = fake.last();
  CHECK(seen.method == method);
  CHECK(seen.path == path);
  CHECK(header(seen, "host") == "localhost");
  CHECK(header(seen, "accept") == "application/json");
  CHECK(header(seen, "content-type") == "application/json");
  CHECK(header(seen, "content-length") == std::to_string(body.size()));
  CHECK(seen.body == body);
  // And the body is JSON.
  simdjson::ondemand::parser p;
  simdjson::padded_string padded{seen.body};
  auto doc = p.iterate(padded);
  simdjson::ondemand::object obj;
  CHECK(doc.get_object().get(obj) == simdjson::SUCCESS);
}

} // namespace

TEST_CASE("every API call reaches a Firecracker API server as the documented HTTP request") {
  fake_api_server fake;
  check_call(fake, api::put_machine_config(2, 192), "PUT", "/machine-config",
             R"({"vcpu_count":2,"mem_size_mib":192,"smt":false})");
  check_call(fake, api::put_boot_source("/img/vmlinux", "console=ttyS0 agentvisor.id=a-1", "/img/initrd"),
             "PUT", "/boot-source",
             R"({"kernel_image_path":"/img/vmlinux","boot_args":"console=ttyS0 agentvisor.id=a-1","initrd_path":"/img/initrd"})");
  check_call(fake, api::put_boot_source("/img/vmlinux", "quiet"), "PUT", "/boot-source",
             R"({"kernel_image_path":"/img/vmlinux","boot_args":"quiet"})");
  check_call(fake, api::put_drive("workspace", "/vms/a-1/workspace.ext4"), "PUT", "/drives/workspace",
             R"({"drive_id":"workspace","path_on_host":"/vms/a-1/workspace.ext4","is_root_device":false,"is_read_only":false})");
  check_call(fake, api::put_drive("rootfs", "/r.ext4", true, true), "PUT", "/drives/rootfs",
             R"({"drive_id":"rootfs","path_on_host":"/r.ext4","is_root_device":true,"is_read_only":true})");
  check_call(fake, api::put_vsock(3, "/vms/a-1/v.sock"), "PUT", "/vsock",
             R"({"guest_cid":3,"uds_path":"/vms/a-1/v.sock"})");
  check_call(fake, api::instance_start(), "PUT", "/actions", R"({"action_type":"InstanceStart"})");
  check_call(fake, api::pause_vm(), "PATCH", "/vm", R"({"state":"Paused"})");
  check_call(fake, api::resume_vm(), "PATCH", "/vm", R"({"state":"Resumed"})");
  check_call(fake, api::create_snapshot("/pool/s1.snap", "/pool/s1.mem"), "PUT", "/snapshot/create",
             R"({"snapshot_type":"Full","snapshot_path":"/pool/s1.snap","mem_file_path":"/pool/s1.mem"})");
  check_call(fake, api::load_snapshot("/pool/s1.snap", "/pool/s1.mem"), "PUT", "/snapshot/load",
             R"({"snapshot_path":"/pool/s1.snap","mem_backend":{"backend_type":"File","backend_path":"/pool/s1.mem"},"resume_vm":true})");
  check_call(fake, api::load_snapshot("/s", "/m", false), "PUT", "/snapshot/load",
             R"({"snapshot_path":"/s","mem_backend":{"backend_type":"File","backend_path":"/m"},"resume_vm":false})");
}

TEST_CASE("strings in API bodies are JSON-escaped") {
  fake_api_server fake;
  check_call(fake, api::put_boot_source("/a \"b\"\\c", "x\ty"), "PUT", "/boot-source",
             R"({"kernel_image_path":"/a \"b\"\\c","boot_args":"x\ty"})");
}

TEST_CASE("a 400 with a fault_message comes back as an error carrying that message") {
  fake_api_server fake;
  std::string body = R"x({"fault_message":"Invalid kernel path: /nope (No such file or directory)"})x";
  fake.answers.push_back("HTTP/1.1 400 Bad Request\r\nServer: Firecracker API\r\n"
                         "Content-Type: application/json\r\nContent-Length: "
                         + std::to_string(body.size()) + "\r\n\r\n" + body);
  auto req = api::put_boot_source("/nope", "quiet");
  auto res = api::call_unix(fake.path, req, 2s);
  REQUIRE_MESSAGE(res, res.err().message);
  CHECK(res->status == 400);
  CHECK(res->body == body);
  auto ok = api::check(*res, api::describe(req));
  REQUIRE_FALSE(ok);
  CHECK(ok.err().message
        == "PUT /boot-source: HTTP 400: Invalid kernel path: /nope (No such file or directory)");
}

TEST_CASE("an error answer without a fault_message names the status and the body") {
  fake_api_server fake;
  fake.answers.push_back("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops");
  auto res = api::call_unix(fake.path, api::instance_start(), 2s);
  REQUIRE_MESSAGE(res, res.err().message);
  auto ok = api::check(*res, "PUT /actions");
  REQUIRE_FALSE(ok);
  CHECK(ok.err().message == "PUT /actions: HTTP 500: oops");
}

TEST_CASE("a server that never answers is an error after the timeout, not a hang") {
  fake_api_server fake;
  fake.answers.push_back(""); // the fake writes nothing...
  // ...and the connection stays open: call() gives up at its timeout.
  auto res = api::call_unix(fake.path, api::instance_start(), 200ms);
  REQUIRE_FALSE(res);
  CHECK(res.err().message.find("no response within 200 ms") != std::string::npos);
}

TEST_CASE("connecting to a missing API socket names the path") {
  auto res = api::call_unix("/nonexistent/fc.sock", api::instance_start(), 200ms);
  REQUIRE_FALSE(res);
  CHECK(res.err().message.find("connect /nonexistent/fc.sock") != std::string::npos);
}

TEST_CASE("the response parser takes a response split at any byte") {
  std::string body = R"({"fault_message":"bad"})";
  std::string raw = "HTTP/1.1 400 Bad Request\r\nContent-Length: " + std::to_string(body.size())
                    + "\r\n\r\n" + body;
  for (size_t cut = 0; cut <= raw.size(); ++cut) {
    api::response_parser p;
    auto a = p.feed(std::string_view{raw}.substr(0, cut));
    REQUIRE(a);
    auto b = p.feed(std::string_view{raw}.substr(cut));
    REQUIRE(b);
    REQUIRE(*b);
    CHECK(p.get().status == 400);
    CHECK(p.get().body == body);
  }
  api::response_parser p204;
  CHECK(*p204.feed("HTTP/1.1 204 No Content\r\n\r\n"));
  CHECK(p204.get().status == 204);
  CHECK(p204.get().body.empty());
  // A body that runs to the close is complete only at EOF.
  api::response_parser eof;
  CHECK_FALSE(*eof.feed("HTTP/1.1 200 OK\r\n\r\n{\"state\":"));
  CHECK_FALSE(*eof.feed("\"Running\"}"));
  REQUIRE(eof.finish());
  CHECK(eof.get().body == R"({"state":"Running"})");
  api::response_parser cut;
  CHECK_FALSE(*cut.feed("HTTP/1.1 400 Bad Request\r\nContent-Length: 10\r\n\r\nabc"));
  CHECK_FALSE(cut.finish());
  api::response_parser bad;
  CHECK_FALSE(bad.feed("SMTP/1.0 nonsense\r\n\r\n"));
}

TEST_CASE("the firecracker and jailer command lines") {
  CHECK(api::firecracker_argv("/usr/bin/firecracker", "/s/vms/i/a-1/api.sock", "a-1")
        == std::vector<std::string>{"/usr/bin/firecracker", "--api-sock", "/s/vms/i/a-1/api.sock",
                                    "--id", "a-1"});
  CHECK(api::jailer_argv("/usr/bin/jailer", "/usr/bin/firecracker", "a-1", 20000, 20001,
                         "/s/vms/i/a-1/jail")
        == std::vector<std::string>{"/usr/bin/jailer", "--id", "a-1", "--exec-file",
                                    "/usr/bin/firecracker", "--uid", "20000", "--gid", "20001",
                                    "--chroot-base-dir", "/s/vms/i/a-1/jail", "--",
                                    "--api-sock", "/run/firecracker.socket"});
  CHECK(api::vm_id("agent_1.x") == "agent-1-x");
  CHECK(api::vm_id(std::string(80, 'a')).size() == 64);
}

TEST_CASE("a VM's paths, direct and inside the jailer's chroot") {
  api::layout_options o;
  o.vm_dir = "/s/vms/i/a-1";
  o.id = "a-1";
  o.kernel = "/img/vmlinux";
  o.initrd = "/img/initrd";
  auto d = api::layout(o);
  CHECK(d.api_socket == "/s/vms/i/a-1/api.sock");
  CHECK(d.vsock_host == "/s/vms/i/a-1/v.sock");
  CHECK(d.vsock_vm == d.vsock_host);
  CHECK(d.workspace_vm == "/s/vms/i/a-1/workspace.ext4");
  CHECK(d.kernel_vm == "/img/vmlinux");
  CHECK(d.initrd_vm == "/img/initrd");
  CHECK(d.chroot_root.empty());

  o.jailed = true;
  o.firecracker = "/usr/bin/firecracker";
  auto j = api::layout(o);
  CHECK(j.chroot_root == "/s/vms/i/a-1/jail/firecracker/a-1/root");
  CHECK(j.api_socket == j.chroot_root + "/run/firecracker.socket");
  CHECK(j.vsock_vm == "/v.sock");
  CHECK(j.vsock_host == j.chroot_root + "/v.sock");
  CHECK(j.workspace_vm == "/workspace.ext4");
  CHECK(j.workspace_host == j.chroot_root + "/workspace.ext4");
  CHECK(j.kernel_vm == "/kernel");
  CHECK(j.initrd_vm == "/initrd");
  CHECK(j.kernel_host == "/img/vmlinux");
}

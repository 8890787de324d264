// A stand-in for the firecracker binary, for the backend's tests on a host
// with no KVM: it serves the API on --api-sock (recording each request to
// $FAKE_VMM_LOG, one line "METHOD PATH BODY"), and on InstanceStart plays
// firecracker's vsock forwarding and the guest's init at once: it connects
// to <uds_path>_1024 and <uds_path>_1025 and speaks the control protocol.
// What it does is chosen by the VM id's prefix:
//   (none)   boots; a stop ends it with exited{code 0}
//   oom-     boots, reports an OOM kill and the agent's death by it
//   hang-    boots, ignores stop
//   noboot-  answers the API, never connects
//   fault-   answers PUT /boot-source with 400 and a fault_message
//   crash-   exits 3 right after InstanceStart
//   initfail- boots into init_failed
// Snapshots, as firecracker's, roughly: a boot-source whose boot_args hold
// agentvisor.park=1 boots a parked init (it connects, reports `parked`,
// keeps serving the API); PUT /snapshot/create writes the snapshot file
// (the vsock uds_path, as configured, relative paths staying relative)
// and a memory file; PUT /snapshot/load in a fresh fake reads it back and
// plays the restored guest: it connects to that uds_path (from its own
// working directory), expects `start` with the agent's params first (exit
// 8 without), then boots as above.

#include "agentvisor/vm_control.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

using namespace agentvisor;

namespace {

std::string id, api_sock, uds_path;
bool park = false;

bool starts(const std::string& s, const char* p) {
  return s.rfind(p, 0) == 0;
}

void log_request(const std::string& line) {
  if (const char* p = std::getenv("FAKE_VMM_LOG")) {
    if (FILE* f = std::fopen(p, "a")) {
      std::fprintf(f, "%s\n", line.c_str());
      std::fclose(f);
    }
  }
}

int connect_to(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    std::perror(("fake_vmm: connect " + path).c_str());
    std::exit(5);
  }
  return fd;
}

void send_all(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    auto n = ::write(fd, s.data() + off, s.size() - off);
    if (n <= 0)
      return;
    off += static_cast<size_t>(n);
  }
}

void send_event(int fd, const vm::guest_event& e) {
  std::string line;
  vm::encode(e, line);
  send_all(fd, line);
}

// Reads one HTTP request (headers, then Content-Length bytes of body).
bool read_request(int fd, std::string& method, std::string& path, std::string& body) {
  std::string buf;
  char c[4096];
  size_t hdr_end;
  while ((hdr_end = buf.find("\r\n\r\n")) == std::string::npos) {
    auto n = ::read(fd, c, sizeof c);
    if (n <= 0)
      return false;
    buf.append(c, static_cast<size_t>(n));
  }
  size_t len = 0;
  auto cl = buf.find("Content-Length: ");
  if (cl != std::string::npos && cl < hdr_end)
    len = std::strtoul(buf.c_str() + cl + 16, nullptr, 10);
  while (buf.size() < hdr_end + 4 + len) {
    auto n = ::read(fd, c, sizeof c);
    if (n <= 0)
      return false;
    buf.append(c, static_cast<size_t>(n));
  }
  auto sp1 = buf.find(' ');
  auto sp2 = buf.find(' ', sp1 + 1);
  method = buf.substr(0, sp1);
  path = buf.substr(sp1 + 1, sp2 - sp1 - 1);
  body = buf.substr(hdr_end + 4, len);
  return true;
}

std::string json_string(const std::string& body, const std::string& key) {
  auto k = body.find("\"" + key + "\":\"");
  if (k == std::string::npos)
    return {};
  k += key.size() + 4;
  return body.substr(k, body.find('"', k) - k);
}

int connect_port(uint32_t port) {
  return connect_to(uds_path + "_" + std::to_string(port));
}

// A restored guest's first control line: start, with the agent's params.
void expect_restored_start(int control) {
  std::string line;
  char c;
  while (::read(control, &c, 1) == 1 && c != '\n')
    line += c;
  auto r = vm::decode_host_request(line);
  auto* st = r ? std::get_if<vm::start>(&*r) : nullptr;
  if (!st || st->params.find(" agentvisor.id=" + id) == std::string::npos
      || st->params.find("agentvisor.park") != std::string::npos) {
    std::fprintf(stderr, "fake_vmm: restored guest got no agent params: %s\n", line.c_str());
    std::exit(8);
  }
}

[[noreturn]] void run_guest(bool restored) {
  if (starts(id, "crash-"))
    std::exit(3);
  if (starts(id, "noboot-"))
    for (;;)
      ::pause();
  int channel = connect_port(vm::vsock_channel_port);
  int control = connect_port(vm::vsock_control_port);
  if (restored)
    expect_restored_start(control);
  if (starts(id, "initfail-")) {
    send_event(control, vm::init_failed{"mount /dev/vda: no such device"});
    for (;;)
      ::pause();
  }
  send_all(channel, "{\"fake\":\"hello\"}\n");
  send_event(control, vm::booted{"6.1.0-fake", 128ull << 20, 42});
  send_event(control, vm::usage{12345, 23456, 3, 999, 0});
  if (starts(id, "oom-")) {
    // As init does, the agent (and so its OOM) comes after the host's start.
    char c1;
    while (::read(control, &c1, 1) == 1 && c1 != '\n') {
    }
    send_event(control, vm::oom{64ull << 20, 64ull << 20});
    send_event(control, vm::exited{0, 9, true, 64ull << 20});
    std::exit(0);
  }
  std::string buf;
  char c[512];
  bool got_start = restored;
  for (;;) {
    auto n = ::read(control, c, sizeof c);
    if (n <= 0)
      std::exit(0); // the host closed the control channel
    buf.append(c, static_cast<size_t>(n));
    size_t nl;
    while ((nl = buf.find('\n')) != std::string::npos) {
      auto line = buf.substr(0, nl);
      buf.erase(0, nl + 1);
      auto r = vm::decode_host_request(line);
      if (!r)
        std::exit(6);
      // The host's first line is `start`, as init expects.
      if (!got_start && !std::holds_alternative<vm::start>(*r))
        std::exit(7);
      got_start = true;
      if (std::holds_alternative<vm::stop>(*r) && !starts(id, "hang-")) {
        send_event(control, vm::exited{0, 0, false, 23456});
        std::exit(0);
      }
    }
  }
}

} // namespace

int main(int argc, char** argv) {
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--api-sock")
      api_sock = argv[i + 1];
    else if (k == "--id")
      id = argv[i + 1];
  }
  if (api_sock.empty())
    return 2;
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, api_sock.c_str(), sizeof a.sun_path - 1);
  int l = ::socket(AF_UNIX, SOCK_STREAM, 0);
  // Like firecracker: the socket appears a little after exec.
  ::usleep(20000);
  if (::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(l, 8) != 0)
    return 4;
  for (;;) {
    int c = ::accept(l, nullptr, nullptr);
    if (c < 0)
      return 4;
    std::string method, path, body;
    while (read_request(c, method, path, body)) {
      log_request(method + " " + path + " " + body);
      if (path == "/vsock")
        uds_path = json_string(body, "uds_path");
      if (path == "/boot-source")
        park = body.find("agentvisor.park=1") != std::string::npos;
      if (path == "/snapshot/create") {
        // The snapshot holds the vsock path; memory is a stand-in.
        FILE* f = std::fopen(json_string(body, "snapshot_path").c_str(), "w");
        FILE* m = std::fopen(json_string(body, "mem_file_path").c_str(), "w");
        if (!f || !m)
          return 9;
        std::fprintf(f, "%s\n", uds_path.c_str());
        std::fprintf(m, "fake guest memory\n");
        std::fclose(f);
        std::fclose(m);
      }
      if (path == "/snapshot/load") {
        char line[4096] = {};
        FILE* f = std::fopen(json_string(body, "snapshot_path").c_str(), "r");
        if (!f || !std::fgets(line, sizeof line, f)) {
          std::string b = R"({"fault_message":"Cannot open the snapshot file"})";
          send_all(c, "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                      "Content-Length: " + std::to_string(b.size()) + "\r\n\r\n" + b);
          continue;
        }
        std::fclose(f);
        uds_path = std::string(line, std::strcspn(line, "\n"));
        send_all(c, "HTTP/1.1 204 No Content\r\n\r\n");
        ::close(c);
        ::close(l);
        run_guest(true);
      }
      if (starts(id, "fault-") && path == "/boot-source") {
        std::string b = R"({"fault_message":"Invalid kernel path: no such file"})";
        send_all(c, "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: "
                      + std::to_string(b.size()) + "\r\n\r\n" + b);
        continue;
      }
      send_all(c, "HTTP/1.1 204 No Content\r\n\r\n");
      if (path == "/actions" && body.find("InstanceStart") != std::string::npos && park) {
        // A parked init: connected, waiting; the API stays up for the
        // snapshot (the host kills us after it).
        connect_port(vm::vsock_channel_port);
        send_event(connect_port(vm::vsock_control_port), vm::parked{});
      } else if (path == "/actions" && body.find("InstanceStart") != std::string::npos) {
        ::close(c);
        ::close(l);
        run_guest(false);
      }
    }
    ::close(c);
  }
}

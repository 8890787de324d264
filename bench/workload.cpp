// What `agentvisor bench baseline` and `concurrent` share (workload.hpp).

#include "workload.hpp"

#include "cgroup.hpp"

#include "agentvisor/json.hpp"
#include "agentvisor/log.hpp"

#include <signal.h>
#include <unistd.h>

#include <stdexcept>

namespace agentvisor::bench {

using namespace std::chrono_literals;

void prepare_process(void (*on_stop)(int)) {
  struct sigaction sa{};
  sa.sa_handler = on_stop;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  raise_fd_limit();
  log::init(log_level::error, log_format::plain);
}

std::optional<std::string> sandboxes_unavailable() {
  if (::geteuid() != 0)
    return "must run as root (it creates cgroups, mounts and namespaces)";
  auto layout = sandbox::detect_cgroups();
  if (!layout)
    return "no usable cgroups: " + layout.err().message;
  return std::nullopt;
}

tool_result call_tool(caf::scoped_actor& self, const caf::actor& sp, const std::string& agent,
                      const std::string& tool, const std::string& args_json) {
  tool_result out;
  std::string err;
  self->request(sp, caf::duration{60s}, call_atom::value, agent, tool_call{tool, args_json, false, 0})
    .receive([&](tool_result& r) { out = std::move(r); },
             [&](caf::error& e) { err = view(e).message; });
  if (!err.empty())
    throw std::runtime_error("agent " + agent + ": " + tool + " " + args_json.substr(0, 100) + ": "
                             + err);
  if (!out.ok)
    throw std::runtime_error("agent " + agent + ": " + tool + " " + args_json.substr(0, 100)
                             + " failed: " + out.error_code + ": " + out.error_message);
  return out;
}

agent_usage usage_of(caf::scoped_actor& self, const backend_actor& backend,
                     const std::string& machine) {
  agent_usage out;
  std::string err;
  self->request(backend, caf::duration{10s}, usage_atom::value, machine)
    .receive([&](agent_usage& u) { out = std::move(u); },
             [&](caf::error& e) { err = view(e).message; });
  if (!err.empty())
    throw std::runtime_error("usage of machine " + machine + ": " + err);
  return out;
}

std::string write_args(const std::string& path, const std::string& content) {
  std::string s;
  json::writer w{s};
  w.begin_object().field("path", path).field("content", content).end_object();
  return s;
}

void write_fixture(caf::scoped_actor& self, const caf::actor& sp, const std::string& agent) {
  std::string small;
  while (small.size() < 512)
    small += "the quick brown fox jumps over the lazy dog " + std::to_string(small.size()) + "\n";
  small.resize(512);
  call_tool(self, sp, agent, "write_file", write_args("bench/small.txt", small));
  for (int d = 0; d < 4; ++d)
    for (int f = 0; f < 8; ++f) {
      std::string body;
      for (int l = 0; l < 20; ++l)
        body += (l == f ? "int needle_" : "int value_") + std::to_string(d) + "_" + std::to_string(f)
                + "_" + std::to_string(l) + " = 0;\n";
      call_tool(self, sp, agent, "write_file",
                write_args("tree/d" + std::to_string(d) + "/f" + std::to_string(f) + ".c", body));
    }
}

std::vector<tool_case> baseline_tools() {
  return {
    {"read_file", R"({"path":"bench/small.txt"})", {}},
    {"write_file", write_args("bench/out.txt", std::string(64, 'x')), {}},
    {"search", R"({"pattern":"needle","path":"tree"})", {}},
    {"list_directory", R"({"path":"tree/d0"})", {}},
    {"execute_command", R"({"argv":["/bin/true"]})", {}},
  };
}

void check_tool_result(const tool_case& c, const tool_result& r) {
  auto has = [&](std::string_view x) { return r.result_json.find(x) != std::string::npos; };
  bool good = true;
  if (c.name == "read_file")
    good = has("\"size\":512") && has("quick brown fox");
  else if (c.name == "search")
    good = has("needle_3_7_7") && has("\"truncated\":false");
  else if (c.name == "list_directory")
    good = has("f7.c");
  else if (c.name == "write_file")
    good = has("\"bytes_written\":64");
  else if (c.name == "execute_command")
    good = has("\"exit_code\":0");
  if (!good)
    throw std::runtime_error(c.name + " returned an unexpected result: " + r.result_json.substr(0, 300));
}

} // namespace agentvisor::bench

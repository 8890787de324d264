// Host detection from procfs (include/agentvisor/host.hpp).

#include "agentvisor/host.hpp"
#include "agentvisor/small_file.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <optional>

#include <fcntl.h>
#include <unistd.h>

namespace agentvisor {
namespace {

constexpr uint64_t mib = uint64_t{1} << 20;
// The smallest budget config.cpp accepts for host.memory_mb.
constexpr uint64_t min_budget_bytes = 64 * mib;
constexpr uint64_t pid_max_limit = 4194304;
// procfs files are small; anything bigger is not the file we expect.
constexpr size_t max_proc_file = 1 << 20;

result<std::string> read_file(const std::string& path) {
  return read_small_file(path, max_proc_file, "");
}

std::string_view trim(std::string_view s) { return trim_space(s); }

std::optional<uint64_t> to_u64(std::string_view s) {
  uint64_t x = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), x);
  if (ec != std::errc{} || end != s.data() + s.size() || s.empty())
    return std::nullopt;
  return x;
}

// "   24683620 kB" -> bytes. The kernel always writes kB (KiB) here.
std::optional<uint64_t> meminfo_bytes(std::string_view value) {
  value = trim(value);
  uint64_t scale = 1;
  if (value.ends_with(" kB")) {
    value.remove_suffix(3);
    scale = 1024;
  }
  auto n = to_u64(trim(value));
  if (!n || *n > UINT64_MAX / scale)
    return std::nullopt;
  return *n * scale;
}

result<uint64_t> read_u64_file(const std::string& path) {
  auto text = read_file(path);
  if (!text)
    return std::move(text).err();
  auto n = to_u64(trim(*text));
  if (!n)
    return error{path + ": expected an integer, got \"" + std::string{trim(*text)} + "\"", 0};
  return *n;
}

} // namespace

result<meminfo> parse_meminfo(std::string_view text) {
  std::optional<uint64_t> total;
  std::optional<uint64_t> available;
  while (!text.empty()) {
    auto eol = text.find('\n');
    auto line = text.substr(0, eol);
    text = eol == std::string_view::npos ? std::string_view{} : text.substr(eol + 1);
    auto colon = line.find(':');
    if (colon == std::string_view::npos)
      continue;
    auto key = line.substr(0, colon);
    if (key != "MemTotal" && key != "MemAvailable")
      continue;
    auto bytes = meminfo_bytes(line.substr(colon + 1));
    if (!bytes)
      return error{"meminfo: cannot read the value of " + std::string{key} + ": \""
                     + std::string{trim(line.substr(colon + 1))} + "\"",
                   0};
    (key == "MemTotal" ? total : available) = *bytes;
  }
  if (!total)
    return error{"meminfo: no MemTotal line", 0};
  if (!available)
    return error{"meminfo: no MemAvailable line (Linux before 3.14?)", 0};
  return meminfo{*total, *available};
}

result<meminfo> read_meminfo(const std::string& proc_root) {
  auto path = proc_root + "/meminfo";
  auto text = read_file(path);
  if (!text)
    return std::move(text).err();
  auto r = parse_meminfo(*text);
  if (!r)
    return error{path + ": " + r.err().message, 0};
  return r;
}

result<uint32_t> parse_online_cpus(std::string_view proc_stat) {
  uint32_t n = 0;
  while (!proc_stat.empty()) {
    auto eol = proc_stat.find('\n');
    auto line = proc_stat.substr(0, eol);
    proc_stat = eol == std::string_view::npos ? std::string_view{}
                                              : proc_stat.substr(eol + 1);
    // "cpu  ..." is the sum over all CPUs; "cpu3 ..." is one online CPU.
    if (line.size() > 3 && line.starts_with("cpu") && line[3] >= '0' && line[3] <= '9')
      ++n;
  }
  if (n == 0)
    return error{"stat: no cpuN lines", 0};
  return n;
}

result<uint32_t> read_pid_budget(const std::string& proc_root) {
  auto pid_max = read_u64_file(proc_root + "/sys/kernel/pid_max");
  if (!pid_max)
    return std::move(pid_max).err();
  auto threads_max = read_u64_file(proc_root + "/sys/kernel/threads-max");
  if (!threads_max)
    return std::move(threads_max).err();
  return static_cast<uint32_t>(std::min({*pid_max, *threads_max, pid_max_limit}));
}

result<host_budget> detect_budget(const host_config& cfg, const std::string& proc_root) {
  host_budget b;
  b.memory_bytes = cfg.memory_mb * mib;
  b.cpus = cfg.cpus;
  b.agents = cfg.max_agents;
  b.pids = cfg.pids;
  if (b.memory_bytes == 0) {
    auto mem = read_meminfo(proc_root);
    if (!mem)
      return std::move(mem).err();
    uint64_t reserve = cfg.reserve_mb * mib;
    if (mem->total_bytes < reserve + min_budget_bytes)
      return error{"host.reserve_mb: " + std::to_string(cfg.reserve_mb)
                     + " MiB leaves less than 64 MiB of the host's "
                     + std::to_string(mem->total_bytes / mib)
                     + " MiB (MemTotal) to agents; lower it or set host.memory_mb",
                   0};
    b.memory_bytes = mem->total_bytes - reserve;
  }
  if (b.cpus == 0) {
    auto path = proc_root + "/stat";
    auto text = read_file(path);
    if (!text)
      return std::move(text).err();
    auto n = parse_online_cpus(*text);
    if (!n)
      return error{path + ": " + n.err().message, 0};
    b.cpus = *n;
  }
  if (b.pids == 0) {
    auto n = read_pid_budget(proc_root);
    if (!n)
      return std::move(n).err();
    b.pids = *n;
  }
  return b;
}

} // namespace agentvisor

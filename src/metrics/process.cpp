// The process collector every Prometheus exporter has, after the Go client's
// (client_golang's process collector over procfs): the same names, types and
// meanings, read from procfs at scrape time.
#include "agentvisor/metrics.hpp"
#include "agentvisor/small_file.hpp"

#include <unistd.h>

#include <array>
#include <charconv>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>
#include <system_error>

namespace agentvisor::metrics {

namespace {

/// procfs files are small; a bound keeps a wrong proc_root from making us
/// read something large. /proc/stat grows with CPUs and interrupt lines
/// (its "intr" line alone can pass 64 KiB on large hosts), and btime comes
/// after it.
constexpr std::size_t max_proc_file = 64 * 1024;
constexpr std::size_t max_kernel_stat = 4 * 1024 * 1024;

/// The fields of /proc/<pid>/stat we use (proc(5)), in the units there.
struct proc_stat {
  uint64_t utime_ticks = 0;
  uint64_t stime_ticks = 0;
  uint64_t starttime_ticks = 0; ///< since boot
  uint64_t vsize_bytes = 0;
  uint64_t rss_pages = 0;
};

bool parse_u64(std::string_view s, uint64_t& out) noexcept {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc{} && end == s.data() + s.size() && !s.empty();
}

/// The fields after the command name: the name is in parentheses and may
/// hold spaces and ')' itself, so the fields start after the last ')'.
std::optional<proc_stat> parse_stat(std::string_view text) {
  auto close = text.rfind(')');
  if (close == std::string_view::npos)
    return std::nullopt;
  text.remove_prefix(close + 1);
  // fields[0] is field 3 of proc(5) (state); field N is fields[N - 3].
  std::array<std::string_view, 22> fields{};
  std::size_t n = 0;
  while (n < fields.size()) {
    while (!text.empty() && (text.front() == ' ' || text.front() == '\n'))
      text.remove_prefix(1);
    if (text.empty())
      break;
    auto end = text.find_first_of(" \n");
    fields[n++] = text.substr(0, end);
    text.remove_prefix(end == std::string_view::npos ? text.size() : end);
  }
  if (n < fields.size())
    return std::nullopt;
  proc_stat s;
  // rss (field 24) is a signed long in the kernel but never negative.
  if (!parse_u64(fields[14 - 3], s.utime_ticks) || !parse_u64(fields[15 - 3], s.stime_ticks)
      || !parse_u64(fields[22 - 3], s.starttime_ticks) || !parse_u64(fields[23 - 3], s.vsize_bytes)
      || !parse_u64(fields[24 - 3], s.rss_pages))
    return std::nullopt;
  return s;
}

/// /proc/stat's "btime" line: the boot time in seconds since the epoch.
std::optional<uint64_t> parse_btime(std::string_view text) {
  while (!text.empty()) {
    auto end = text.find('\n');
    auto line = text.substr(0, end);
    text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
    if (line.substr(0, 6) == "btime ") {
      uint64_t v = 0;
      if (parse_u64(trim_space(line.substr(6)), v))
        return v;
      return std::nullopt;
    }
  }
  return std::nullopt;
}

/// The soft limit of "Max open files" in /proc/<pid>/limits; "unlimited" is
/// +Inf (the Go client reports the same limit as 2^64-1).
std::optional<double> parse_max_fds(std::string_view text) {
  constexpr std::string_view key = "Max open files";
  while (!text.empty()) {
    auto end = text.find('\n');
    auto line = text.substr(0, end);
    text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
    if (line.substr(0, key.size()) != key)
      continue;
    auto rest = trim_space(line.substr(key.size()));
    auto soft = rest.substr(0, rest.find_first_of(" \t"));
    if (soft == "unlimited")
      return std::numeric_limits<double>::infinity();
    uint64_t v = 0;
    if (parse_u64(soft, v))
      return static_cast<double>(v);
    return std::nullopt;
  }
  return std::nullopt;
}

/// Entries of /proc/<pid>/fd, the way the Go client counts them (reading
/// /proc/self/fd counts the directory's own descriptor too).
std::optional<double> count_fds(const std::string& dir) {
  std::error_code ec;
  std::filesystem::directory_iterator it(dir, ec);
  if (ec)
    return std::nullopt;
  double n = 0;
  for (std::filesystem::directory_iterator end; it != end; it.increment(ec)) {
    if (ec)
      return std::nullopt;
    ++n;
  }
  if (ec)
    return std::nullopt;
  return n;
}

prometheus::MetricFamily one(std::string name, std::string help, prometheus::MetricType type,
                             double value) {
  prometheus::MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  prometheus::ClientMetric m;
  if (type == prometheus::MetricType::Counter)
    m.counter.value = value;
  else
    m.gauge.value = value;
  f.metric.push_back(std::move(m));
  return f;
}

} // namespace

std::vector<prometheus::MetricFamily> process_families(std::string_view proc_root,
                                                       std::string_view pid) {
  using prometheus::MetricType;
  const std::string root{proc_root};
  const std::string dir = root + "/" + std::string{pid};
  std::vector<prometheus::MetricFamily> out;

  std::optional<proc_stat> stat;
  if (auto text = read_small_file(dir + "/stat", max_proc_file, "process stat"))
    stat = parse_stat(*text);
  // Both are fixed for the life of the machine; a failure (-1) leaves the
  // metrics that need them out.
  const long ticks_per_second = ::sysconf(_SC_CLK_TCK);
  const long page_size = ::sysconf(_SC_PAGESIZE);

  if (stat && ticks_per_second > 0)
    out.push_back(one("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
                      MetricType::Counter,
                      static_cast<double>(stat->utime_ticks + stat->stime_ticks)
                        / static_cast<double>(ticks_per_second)));
  if (auto fds = count_fds(dir + "/fd"))
    out.push_back(one("process_open_fds", "Number of open file descriptors.", MetricType::Gauge, *fds));
  if (auto text = read_small_file(dir + "/limits", max_proc_file, "process limits"))
    if (auto max = parse_max_fds(*text))
      out.push_back(one("process_max_fds", "Maximum number of open file descriptors.",
                        MetricType::Gauge, *max));
  if (stat)
    out.push_back(one("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                      MetricType::Gauge, static_cast<double>(stat->vsize_bytes)));
  if (stat && page_size > 0)
    out.push_back(one("process_resident_memory_bytes", "Resident memory size in bytes.",
                      MetricType::Gauge,
                      static_cast<double>(stat->rss_pages) * static_cast<double>(page_size)));
  if (stat && ticks_per_second > 0)
    if (auto text = read_small_file(root + "/stat", max_kernel_stat, "kernel stat"))
      if (auto btime = parse_btime(*text))
        out.push_back(one("process_start_time_seconds",
                          "Start time of the process since unix epoch in seconds.", MetricType::Gauge,
                          static_cast<double>(*btime)
                            + static_cast<double>(stat->starttime_ticks)
                                / static_cast<double>(ticks_per_second)));
  return out;
}

} // namespace agentvisor::metrics

// Shared by agentvisor's benchmark programs: order statistics, the
// progress line, and the parts of every JSON report (machine, load,
// metrics with their targets). docs/performance.md describes the format.

#include "report.hpp"

#include <sys/resource.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <sstream>
#include <cstdlib>

namespace agentvisor::bench {

double ms_between(clock_type::time_point a, clock_type::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// --- statistics ---------------------------------------------------------------


stats summarize(std::vector<double> v) {
  stats s;
  s.count = v.size();
  if (v.empty())
    return s;
  std::sort(v.begin(), v.end());
  auto rank = [&](double p) {
    auto k = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
    return v[std::clamp<size_t>(k, 1, v.size()) - 1];
  };
  s.min = v.front();
  s.max = v.back();
  double sum = 0;
  for (double x : v)
    sum += x;
  s.mean = sum / static_cast<double>(v.size());
  s.p50 = rank(50);
  s.p95 = rank(95);
  s.p99 = rank(99);
  return s;
}

double round_to(double x, int decimals) {
  double f = std::pow(10.0, decimals);
  return std::round(x * f) / f;
}

void write_stats(json::writer& w, const stats& s, int decimals) {
  w.field("count", s.count)
    .field("p50", round_to(s.p50, decimals))
    .field("p95", round_to(s.p95, decimals))
    .field("p99", round_to(s.p99, decimals))
    .field("min", round_to(s.min, decimals))
    .field("max", round_to(s.max, decimals))
    .field("mean", round_to(s.mean, decimals));
}



std::string file_line_value(const char* path, std::string_view key) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line))
    if (line.starts_with(key)) {
      auto colon = line.find(':');
      if (colon == std::string::npos)
        continue;
      auto v = line.substr(colon + 1);
      v.erase(0, v.find_first_not_of(" \t"));
      return v;
    }
  return {};
}


cpu_sample sample_cpu() {
  cpu_sample c;
  std::ifstream in("/proc/stat");
  std::string cpu;
  double user = 0, nice = 0, sys = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
  in >> cpu >> user >> nice >> sys >> idle >> iowait >> irq >> softirq >> steal;
  double hz = static_cast<double>(::sysconf(_SC_CLK_TCK));
  c.busy_s = (user + nice + sys + irq + softirq) / hz;
  c.steal_s = steal / hz;
  auto seconds = [](const rusage& r) {
    return static_cast<double>(r.ru_utime.tv_sec + r.ru_stime.tv_sec)
           + static_cast<double>(r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6;
  };
  rusage self{}, children{};
  ::getrusage(RUSAGE_SELF, &self);
  ::getrusage(RUSAGE_CHILDREN, &children);
  c.own_s = seconds(self) + seconds(children);
  double load[1] = {};
  ::getloadavg(load, 1);
  c.load1 = load[0];
  return c;
}

std::string iso8601_utc_now() {
  auto t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

void write_machine(json::writer& w, std::string_view cgroup_version, const cpu_sample& start,
                   const cpu_sample& end, double wall_s) {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  utsname u{};
  ::uname(&u);
  struct sysinfo si{};
  ::sysinfo(&si);
  w.key("machine").begin_object()
    .field("hostname", host)
    .field("kernel", std::string{u.sysname} + " " + u.release)
    .field("arch", u.machine)
    .field("cpu_model", file_line_value("/proc/cpuinfo", "model name"))
    .field("cpus", ::sysconf(_SC_NPROCESSORS_ONLN))
    .field("memory_bytes", static_cast<uint64_t>(si.totalram) * si.mem_unit)
    .field("cgroup_version", cgroup_version)
    .end_object();
  // How busy the machine was while we measured: others' work shows as
  // busy beyond our own share.
  double cpus = static_cast<double>(::sysconf(_SC_NPROCESSORS_ONLN));
  double capacity = wall_s * cpus;
  w.key("load").begin_object()
    .field("loadavg_1m_start", round_to(start.load1, 2))
    .field("loadavg_1m_end", round_to(end.load1, 2))
    .field("cpu_busy_fraction", round_to((end.busy_s - start.busy_s) / capacity, 3))
    .field("own_cpu_fraction", round_to((end.own_s - start.own_s) / capacity, 3))
    .field("steal_fraction", round_to((end.steal_s - start.steal_s) / capacity, 3))
    .end_object();
}


void write_metric(json::writer& w, const metric& m) {
  w.begin_object().field("name", m.name).field("value", m.value).field("unit", m.unit).key("target");
  if (m.target)
    w.value(*m.target);
  else
    w.value(nullptr);
  w.field("target_expr", m.target_expr).key("pass");
  if (m.pass)
    w.value(*m.pass);
  else
    w.value(nullptr);
  w.end_object();
}


void write_metrics(json::writer& w, const std::vector<metric>& metrics) {
  int with_target = 0, passed = 0;
  w.key("metrics").begin_array();
  for (const auto& m : metrics) {
    write_metric(w, m);
    if (m.pass) {
      ++with_target;
      passed += *m.pass ? 1 : 0;
    }
  }
  w.end_array();
  w.key("summary").begin_object()
    .field("targets", with_target).field("passed", passed).field("failed", with_target - passed)
    .end_object();
}

uint64_t rss_bytes() {
  auto v = file_line_value("/proc/self/status", "VmRSS");
  return std::strtoull(v.c_str(), nullptr, 10) * 1024; // "123456 kB"
}

uint64_t peak_rss_bytes() {
  auto v = file_line_value("/proc/self/status", "VmHWM");
  return std::strtoull(v.c_str(), nullptr, 10) * 1024;
}

bool reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  return static_cast<bool>(f << "5" << std::flush);
}

double process_cpu_seconds() {
  std::ifstream in("/proc/self/stat");
  std::string line;
  std::getline(in, line);
  // The command name (field 2) may hold spaces and parentheses: fields are
  // counted from the last ')'. utime and stime are fields 14 and 15.
  auto close = line.rfind(')');
  if (close == std::string::npos)
    return 0;
  std::istringstream rest(line.substr(close + 1));
  std::string field;
  double utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14)
      utime = std::strtod(field.c_str(), nullptr);
    else if (i == 15)
      stime = std::strtod(field.c_str(), nullptr);
  }
  return (utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

uint64_t mem_available_bytes() {
  auto v = file_line_value("/proc/meminfo", "MemAvailable");
  return std::strtoull(v.c_str(), nullptr, 10) * 1024;
}

uint64_t pss_bytes(int pid) {
  auto path = "/proc/" + std::to_string(pid) + "/smaps_rollup";
  auto v = file_line_value(path.c_str(), "Pss:");
  return std::strtoull(v.c_str(), nullptr, 10) * 1024;
}

bool write_output(const std::string& path, const std::string& text) {
  if (path.empty())
    return std::fwrite(text.data(), 1, text.size(), stdout) == text.size() && std::fflush(stdout) == 0;
  auto tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!(f << text) || !f.flush())
      return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

} // namespace agentvisor::bench

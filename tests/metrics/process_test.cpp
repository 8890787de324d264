// The process collector: on this process's real /proc entries, and on a fake
// proc tree the test writes, where each file can be taken away.

#include "agentvisor/metrics.hpp"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace am = agentvisor::metrics;
namespace fs = std::filesystem;
using prometheus::MetricFamily;
using prometheus::MetricType;

namespace {

/// Pointers into `fs`, which must outlive the map.
std::map<std::string, const MetricFamily*> by_name(const std::vector<MetricFamily>& fs) {
  std::map<std::string, const MetricFamily*> out;
  for (const auto& f : fs)
    out[f.name] = &f;
  return out;
}

double value(const MetricFamily& f) {
  REQUIRE(f.metric.size() == 1);
  CHECK(f.metric[0].label.empty());
  return f.type == MetricType::Counter ? f.metric[0].counter.value : f.metric[0].gauge.value;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

/// A proc tree under a fresh temporary directory: <root>/stat and
/// <root>/<pid>/{stat,limits,fd/}.
struct fake_proc {
  fs::path root;
  std::string pid = "4242";

  fake_proc() {
    std::string tmpl = (fs::temp_directory_path() / "agentvisor-fake-proc-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    root = tmpl;
    fs::create_directories(root / pid / "fd");
    write("stat", "cpu  1 2 3 4\ncpu0 1 2 3 4\nintr 12345 0 0\nctxt 999\nbtime 1700000000\n"
                  "processes 42\n");
    // A command name holding spaces and ')' (proc(5): the name may be
    // anything), then fields 3..: utime 250, stime 150, starttime 12345,
    // vsize 987654321, rss 2500 pages.
    write(pid + "/stat",
          "4242 (we)ird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 3 0 12345 "
          "987654321 2500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n");
    write(pid + "/limits",
          "Limit                     Soft Limit           Hard Limit           Units     \n"
          "Max cpu time              unlimited            unlimited            seconds   \n"
          "Max open files            4096                 524288               files     \n"
          "Max locked memory         8388608              8388608              bytes     \n");
    for (int i = 0; i < 7; ++i)
      write(pid + "/fd/" + std::to_string(i), "");
  }
  ~fake_proc() {
    std::error_code ec;
    fs::remove_all(root, ec);
  }

  void write(const std::string& rel, const std::string& text) {
    std::ofstream out(root / rel);
    out << text;
    REQUIRE(out.good());
  }

  std::vector<MetricFamily> collect() const { return am::process_families(root.string(), pid); }
};

} // namespace

TEST_CASE("process metrics of this process read from the real /proc") {
  if (!fs::exists("/proc/self/stat")) {
    std::fprintf(stderr, "SKIP: no procfs at /proc\n");
    std::exit(77);
  }
  // Burn a little CPU so the counter has something to show.
  volatile double x = 0;
  for (int i = 0; i < 20000000; ++i)
    x = x + std::sqrt(static_cast<double>(i));

  const auto fams = am::process_families();
  auto m = by_name(fams);
  for (const char* name : {"process_resident_memory_bytes", "process_virtual_memory_bytes",
                           "process_cpu_seconds_total", "process_open_fds", "process_max_fds",
                           "process_start_time_seconds"}) {
    INFO(name);
    REQUIRE(m.count(name) == 1);
    CHECK(!m.at(name)->help.empty());
  }
  CHECK(m.at("process_cpu_seconds_total")->type == MetricType::Counter);
  CHECK(m.at("process_resident_memory_bytes")->type == MetricType::Gauge);

  double rss = value(*m.at("process_resident_memory_bytes"));
  double vsize = value(*m.at("process_virtual_memory_bytes"));
  CHECK(rss > 0);
  CHECK(vsize >= rss);
  CHECK(value(*m.at("process_cpu_seconds_total")) > 0);

  // Open fds: the same count a directory listing gives (both listings see
  // their own directory descriptor).
  std::size_t listed = 0;
  for (auto it = fs::directory_iterator("/proc/self/fd"); it != fs::directory_iterator(); ++it)
    ++listed;
  CHECK(value(*m.at("process_open_fds")) == static_cast<double>(listed));
  // ... and one more after we open a file.
  int fd = ::open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  const auto again = am::process_families();
  auto more = by_name(again);
  CHECK(value(*more.at("process_open_fds")) == static_cast<double>(listed + 1));
  ::close(fd);

  CHECK(value(*m.at("process_max_fds")) == static_cast<double>(::sysconf(_SC_OPEN_MAX)));

  // Started within the last few minutes (this test program), not in the
  // future; the kernel counts in clock ticks, so allow one tick and a
  // second of btime rounding.
  double start = value(*m.at("process_start_time_seconds"));
  double now = now_seconds();
  CHECK(start <= now + 1.5);
  CHECK(start > now - 600);
}

TEST_CASE("process metrics of a fake proc tree, computed from its files") {
  fake_proc p;
  const auto fams = p.collect();
  auto m = by_name(fams);
  REQUIRE(m.size() == 6);
  const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
  CHECK(value(*m.at("process_cpu_seconds_total")) == doctest::Approx((250 + 150) / tick));
  CHECK(value(*m.at("process_virtual_memory_bytes")) == 987654321.0);
  CHECK(value(*m.at("process_resident_memory_bytes")) == 2500 * page);
  CHECK(value(*m.at("process_open_fds")) == 7);
  CHECK(value(*m.at("process_max_fds")) == 4096);
  CHECK(value(*m.at("process_start_time_seconds"))
        == doctest::Approx(1700000000 + 12345 / tick).epsilon(1e-12));
}

TEST_CASE("a missing or unreadable proc file leaves only its metrics out") {
  SUBCASE("no limits: no max fds") {
    fake_proc p;
    fs::remove(p.root / p.pid / "limits");
    const auto fams = p.collect();
    auto m = by_name(fams);
    CHECK(m.count("process_max_fds") == 0);
    CHECK(m.size() == 5);
  }
  SUBCASE("no fd directory: no open fds") {
    fake_proc p;
    fs::remove_all(p.root / p.pid / "fd");
    const auto fams = p.collect();
    auto m = by_name(fams);
    CHECK(m.count("process_open_fds") == 0);
    CHECK(m.size() == 5);
  }
  SUBCASE("no kernel stat: no start time") {
    fake_proc p;
    fs::remove(p.root / "stat");
    const auto fams = p.collect();
    auto m = by_name(fams);
    CHECK(m.count("process_start_time_seconds") == 0);
    CHECK(m.size() == 5);
  }
  SUBCASE("no btime line: no start time") {
    fake_proc p;
    p.write("stat", "cpu  1 2 3 4\nctxt 999\n");
    const auto fams = p.collect();
    auto m = by_name(fams);
    CHECK(m.count("process_start_time_seconds") == 0);
    CHECK(m.size() == 5);
  }
  SUBCASE("no process stat: none of the four it feeds") {
    fake_proc p;
    fs::remove(p.root / p.pid / "stat");
    const auto fams = p.collect();
    auto m = by_name(fams);
    CHECK(m.size() == 2);
    CHECK(m.count("process_open_fds") == 1);
    CHECK(m.count("process_max_fds") == 1);
  }
  SUBCASE("a truncated process stat counts as missing") {
    fake_proc p;
    p.write(p.pid + "/stat", "4242 (x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 150\n");
    const auto fams = p.collect();
    auto m = by_name(fams);
    CHECK(m.size() == 2);
  }
  SUBCASE("a garbled field counts as missing") {
    fake_proc p;
    p.write(p.pid + "/stat",
            "4242 (x) S 1 4242 4242 0 -1 4194560 100 0 0 0 2x0 150 0 0 20 0 3 0 12345 "
            "987654321 2500 0\n");
    const auto fams = p.collect();
    CHECK(by_name(fams).count("process_cpu_seconds_total") == 0);
  }
  SUBCASE("a pid that does not exist: nothing but the kernel's own facts") {
    fake_proc p;
    CHECK(am::process_families(p.root.string(), "999999").empty());
  }
  SUBCASE("an unlimited open-files limit is +Inf") {
    fake_proc p;
    p.write(p.pid + "/limits", "Max open files            unlimited            unlimited            files\n");
    const auto fams = p.collect();
    auto m = by_name(fams);
    REQUIRE(m.count("process_max_fds") == 1);
    CHECK(std::isinf(value(*m.at("process_max_fds"))));
  }
}

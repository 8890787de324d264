#pragma once
// Shared by agentvisor's benchmark programs: order statistics, the
// progress line, and the parts of every JSON report (machine, load,
// metrics with their targets). docs/performance.md describes the format.

#include "agentvisor/json.hpp"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace agentvisor::bench {

using clock_type = std::chrono::steady_clock;

double ms_between(clock_type::time_point a, clock_type::time_point b);

/// Order statistics of one series. Percentiles use the nearest-rank method:
/// pN is the smallest sample with at least N % of the samples at or below it.
struct stats {
  size_t count = 0;
  double min = 0, max = 0, mean = 0, p50 = 0, p95 = 0, p99 = 0;
};

stats summarize(std::vector<double> v);

/// Rounds to `decimals` places so the JSON reads as measured, not as noise.
double round_to(double x, int decimals);

/// count, p50, p95, p99, min, max, mean as fields of the open object.
void write_stats(json::writer& w, const stats& s, int decimals);

/// One line on stderr, rewritten in place, only when stderr is a terminal.
class progress {
public:
  explicit progress(bool quiet) : on_(!quiet && ::isatty(2) == 1), start_(clock_type::now()) {}
  ~progress() { clear(); }

  void update(const char* phase, int done, int total) {
    if (!on_)
      return;
    auto now = clock_type::now();
    if (done != total && now - last_ < std::chrono::milliseconds(100))
      return;
    last_ = now;
    std::fprintf(stderr, "\r\033[K%s %d/%d  elapsed %.1f s", phase, done, total,
                 ms_between(start_, now) / 1000.0);
    std::fflush(stderr);
    shown_ = true;
  }

  void clear() {
    if (on_ && shown_) {
      std::fputs("\r\033[K", stderr);
      std::fflush(stderr);
      shown_ = false;
    }
  }

private:
  bool on_;
  bool shown_ = false;
  clock_type::time_point start_;
  clock_type::time_point last_{};
};

/// The value after "key:" on the first line of `path` that starts with key.
std::string file_line_value(const char* path, std::string_view key);

/// What the whole machine and this process tree did with the CPUs, read at
/// the start and at the end of the run: the machine may be shared, and the
/// figures are only as good as its quiet.
struct cpu_sample {
  double busy_s = 0;  ///< all CPUs, not idle nor iowait (/proc/stat)
  double steal_s = 0; ///< time the hypervisor gave to others
  double own_s = 0;   ///< this process and its reaped children (sandboxes, peers)
  double load1 = 0;
};

cpu_sample sample_cpu();

std::string iso8601_utc_now();

/// The "machine" and "load" members of a report.
void write_machine(json::writer& w, std::string_view cgroup_version, const cpu_sample& start,
                   const cpu_sample& end, double wall_s);

/// A headline figure beside its target. Pass or fail is judged on the
/// figures as written (rounded), so a reader always agrees with it.
struct metric {
  std::string name;
  double value;
  const char* unit;
  std::optional<double> target;
  std::string target_expr;
  std::optional<bool> pass;
};

void write_metric(json::writer& w, const metric& m);

/// The "metrics" array and the "summary" (targets, passed, failed).
void write_metrics(json::writer& w, const std::vector<metric>& metrics);

// --- this process ---------------------------------------------------------------

/// VmRSS of this process, in bytes.
uint64_t rss_bytes();

/// VmHWM (peak RSS) of this process since it started or since the last
/// reset_peak_rss(), in bytes.
uint64_t peak_rss_bytes();

/// Resets VmHWM to the current RSS (clear_refs 5), so a phase can read its
/// own peak. False when the kernel refuses.
bool reset_peak_rss();

/// The CPU time every thread of this process used so far (utime + stime of
/// /proc/self/stat), in seconds; reaped children are not in it.
double process_cpu_seconds();

/// MemAvailable of /proc/meminfo, in bytes: what the whole host still has,
/// kernel objects (namespaces, page tables, tmpfs pages) included.
uint64_t mem_available_bytes();

/// The proportional set size of process `pid` (smaps_rollup Pss), in
/// bytes; 0 when it cannot be read.
uint64_t pss_bytes(int pid);

/// Writes `text` to `path` (through a temporary file, renamed), or to
/// stdout when `path` is empty. False with errno set on failure.
bool write_output(const std::string& path, const std::string& text);

} // namespace agentvisor::bench

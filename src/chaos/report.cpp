// The report of a chaos run: latency statistics per fault kind, report.json
// and report.html (one self-contained page: inline CSS and SVG, no script,
// no link). docs/chaos.md ("The report") describes both.

#include "agentvisor/chaos.hpp"
#include "agentvisor/json.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <set>

namespace agentvisor::chaos {
namespace {

// --- Statistics. ---

// Nearest-rank percentile of sorted values: the smallest value with at
// least p of them at or below it. Always one of the samples.
double nearest_rank(const std::vector<double>& sorted, double p) {
  if (sorted.empty())
    return 0;
  auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(sorted.size())));
  rank = std::clamp<std::size_t>(rank, 1, sorted.size());
  return sorted[rank - 1];
}

latency_stats stats_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  latency_stats s;
  s.n = v.size();
  if (v.empty())
    return s;
  s.p50 = nearest_rank(v, 0.50);
  s.p95 = nearest_rank(v, 0.95);
  s.p99 = nearest_rank(v, 0.99);
  s.max = v.back();
  return s;
}

// Faults that were injected and expected to take their target down.
bool expects_down(const fault_record& r) {
  return !r.skipped && !r.expected_reasons.empty();
}

// Detection and recovery samples in ms, by kind.
std::map<fault_kind, std::vector<double>> detection_samples(const run_log& log) {
  std::map<fault_kind, std::vector<double>> out;
  for (const auto& r : log.faults)
    if (expects_down(r) && r.detected_s)
      out[r.fault.kind].push_back((*r.detected_s - r.injected_s) * 1000);
  return out;
}

std::map<fault_kind, std::vector<double>> recovery_samples(const run_log& log) {
  std::map<fault_kind, std::vector<double>> out;
  for (const auto& r : log.faults)
    if (expects_down(r) && r.recovered_s)
      out[r.fault.kind].push_back((*r.recovered_s - r.injected_s) * 1000);
  return out;
}

std::map<fault_kind, latency_stats> stats_by_kind(
  std::map<fault_kind, std::vector<double>> samples) {
  std::map<fault_kind, latency_stats> out;
  for (auto& [k, v] : samples)
    out[k] = stats_of(std::move(v));
  return out;
}

struct kind_counts {
  uint64_t planned = 0, injected = 0, skipped = 0, went_down = 0, recovered = 0;
};

std::map<fault_kind, kind_counts> counts_by_kind(const run_log& log) {
  std::map<fault_kind, kind_counts> out;
  for (const auto& r : log.faults) {
    auto& c = out[r.fault.kind];
    ++c.planned;
    if (r.skipped) {
      ++c.skipped;
      continue;
    }
    ++c.injected;
    if (r.down_reason)
      ++c.went_down;
    if (expects_down(r) && r.recovered_s)
      ++c.recovered;
  }
  return out;
}

const char* status_of(const invariant_result& i) {
  return !i.checked ? "not checked (remote)" : i.passed ? "passed" : "failed";
}

// --- report.json pieces. ---

void write_stats(json::writer& w, const std::map<fault_kind, latency_stats>& m) {
  w.begin_object();
  for (const auto& [k, s] : m) {
    w.key(to_string(k)).begin_object();
    w.field("n", static_cast<uint64_t>(s.n))
      .field("p50", s.p50)
      .field("p95", s.p95)
      .field("p99", s.p99)
      .field("max", s.max);
    w.end_object();
  }
  w.end_object();
}

// --- HTML and SVG pieces. ---

void append_html(std::string& out, std::string_view s) {
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
}

std::string html(std::string_view s) {
  std::string out;
  append_html(out, s);
  return out;
}

std::string fixed(double x, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, std::isfinite(x) ? x : 0.0);
  return buf;
}

// One colour per kind (a categorical palette; adjacent kinds differ).
constexpr std::array<std::string_view, fault_kind_count> kind_colours{
  "#d62728", // kill
  "#ff7f0e", // crash
  "#9467bd", // hang
  "#8c564b", // oom
  "#1f77b4", // partition
  "#e377c2", // spawn_failure
  "#7f7f7f", // slow_spawn
  "#bcbd22", // cpu_hog
  "#17becf", // disk_fill
  "#2ca02c", // fork_bomb
  "#393b79", // governor_pressure
};

std::string_view colour(fault_kind k) {
  auto i = static_cast<std::size_t>(k);
  return i < kind_colours.size() ? kind_colours[i] : std::string_view{"#000000"};
}

// A "nice" axis: ticks at 1, 2 or 5 times a power of ten, covering [0, hi].
struct axis {
  double hi = 1;
  double step = 1;
};

axis nice_axis(double hi, int ticks = 5) {
  if (!(hi > 0) || !std::isfinite(hi))
    hi = 1;
  double raw = hi / ticks;
  double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * mag;
    if (step >= raw)
      break;
  }
  return {std::ceil(hi / step - 1e-9) * step, step};
}

std::string tick_label(double v, double step) {
  int decimals = step >= 1 ? 0 : static_cast<int>(std::ceil(-std::log10(step)));
  return fixed(v, decimals);
}

// Recovery-time distribution: one row per kind, every sample a dot, a box
// from the first to the third quartile with the median, whiskers to the
// extremes and a tick at p95.
std::string recovery_svg(const run_log& log) {
  auto samples = recovery_samples(log);
  constexpr double width = 760, left = 170, right = 20, top = 16, row = 40,
                   bottom = 52;
  double plot_w = width - left - right;
  std::string o;
  if (samples.empty()) {
    o += "<svg width=\"760\" height=\"60\" viewBox=\"0 0 760 60\" role=\"img\" "
         "aria-label=\"recovery time per fault kind: no data\">"
         "<text x=\"10\" y=\"35\" class=\"note\">No recovery times: no injected "
         "fault was expected to take its agent down.</text></svg>\n";
    return o;
  }
  double hi = 0;
  for (const auto& [k, v] : samples)
    for (double x : v)
      hi = std::max(hi, x);
  auto ax = nice_axis(hi * 1.05);
  double height = top + row * static_cast<double>(samples.size()) + bottom;
  auto sx = [&](double ms) { return left + plot_w * std::clamp(ms / ax.hi, 0.0, 1.0); };
  o += "<svg width=\"760\" height=\"" + fixed(height, 0) + "\" viewBox=\"0 0 760 "
       + fixed(height, 0)
       + "\" role=\"img\" aria-label=\"recovery time per fault kind, in ms\">\n";
  double plot_bottom = top + row * static_cast<double>(samples.size());
  // Grid and x axis.
  for (double t = 0; t <= ax.hi + ax.step / 2; t += ax.step) {
    auto x = fixed(sx(t), 1);
    o += "<line x1=\"" + x + "\" y1=\"" + fixed(top, 1) + "\" x2=\"" + x + "\" y2=\""
         + fixed(plot_bottom, 1) + "\" class=\"grid\"/>";
    o += "<text x=\"" + x + "\" y=\"" + fixed(plot_bottom + 16, 1)
         + "\" text-anchor=\"middle\" class=\"tick\">" + tick_label(t, ax.step) + "</text>\n";
  }
  o += "<line x1=\"" + fixed(left, 1) + "\" y1=\"" + fixed(plot_bottom, 1) + "\" x2=\""
       + fixed(width - right, 1) + "\" y2=\"" + fixed(plot_bottom, 1) + "\" class=\"axis\"/>";
  o += "<text x=\"" + fixed(left + plot_w / 2, 1) + "\" y=\"" + fixed(height - 10, 1)
       + "\" text-anchor=\"middle\" class=\"label\">recovery time, injection to "
         "serving again (ms)</text>\n";
  std::size_t rowi = 0;
  for (auto& [k, v] : samples) {
    std::sort(v.begin(), v.end());
    double cy = top + row * (static_cast<double>(rowi) + 0.5);
    auto c = std::string{colour(k)};
    o += "<text x=\"" + fixed(left - 8, 1) + "\" y=\"" + fixed(cy + 4, 1)
         + "\" text-anchor=\"end\" class=\"tick\">" + html(to_string(k)) + " (n="
         + std::to_string(v.size()) + ")</text>";
    double q1 = nearest_rank(v, 0.25), q2 = nearest_rank(v, 0.5),
           q3 = nearest_rank(v, 0.75), p95 = nearest_rank(v, 0.95);
    // Whisker, box, median, p95.
    o += "<line x1=\"" + fixed(sx(v.front()), 1) + "\" y1=\"" + fixed(cy, 1) + "\" x2=\""
         + fixed(sx(v.back()), 1) + "\" y2=\"" + fixed(cy, 1) + "\" stroke=\"" + c
         + "\" stroke-width=\"1\"/>";
    o += "<rect x=\"" + fixed(sx(q1), 1) + "\" y=\"" + fixed(cy - row * 0.3, 1)
         + "\" width=\"" + fixed(std::max(sx(q3) - sx(q1), 1.0), 1) + "\" height=\""
         + fixed(row * 0.6, 1) + "\" fill=\"" + c + "\" fill-opacity=\"0.15\" stroke=\""
         + c + "\"/>";
    o += "<line x1=\"" + fixed(sx(q2), 1) + "\" y1=\"" + fixed(cy - row * 0.3, 1)
         + "\" x2=\"" + fixed(sx(q2), 1) + "\" y2=\"" + fixed(cy + row * 0.3, 1)
         + "\" stroke=\"" + c + "\" stroke-width=\"3\"><title>median "
         + fixed(q2, 1) + " ms</title></line>";
    o += "<path d=\"M" + fixed(sx(p95), 1) + " " + fixed(cy - row * 0.4, 1) + " v"
         + fixed(row * 0.8, 1) + "\" stroke=\"" + c
         + "\" stroke-dasharray=\"3 2\"><title>p95 " + fixed(p95, 1)
         + " ms</title></path>\n";
    // The dots, spread vertically by a fixed low-discrepancy sequence so
    // the page is the same for the same log.
    for (std::size_t i = 0; i < v.size(); ++i) {
      double jitter = std::fmod(static_cast<double>(i) * 0.6180339887, 1.0) - 0.5;
      o += "<circle cx=\"" + fixed(sx(v[i]), 1) + "\" cy=\""
           + fixed(cy + jitter * row * 0.5, 1) + "\" r=\"2.5\" fill=\"" + c
           + "\" fill-opacity=\"0.55\"/>";
    }
    o += "\n";
    ++rowi;
  }
  o += "</svg>\n";
  return o;
}

// Agents ready over time as a step line, every injected fault a vertical
// line in its kind's colour, and a legend of the kinds.
std::string ready_svg(const scenario& s, const run_log& log) {
  constexpr double width = 760, left = 56, right = 20, top = 16, plot_h = 220;
  double plot_w = width - left - right;
  double end_s = std::max(log.elapsed_s, s.duration_s);
  uint32_t most = s.agent_count;
  for (const auto& r : log.ready) {
    end_s = std::max(end_s, r.t_s);
    most = std::max(most, r.ready);
  }
  std::set<fault_kind> kinds;
  for (const auto& f : log.faults)
    if (!f.skipped)
      kinds.insert(f.fault.kind);
  constexpr std::size_t legend_cols = 4;
  std::size_t legend_rows = (kinds.size() + legend_cols - 1) / legend_cols;
  double plot_bottom = top + plot_h;
  double legend_top = plot_bottom + 48;
  double height = legend_top + 20 * static_cast<double>(legend_rows) + 10;
  auto xa = nice_axis(end_s, 8);
  // One agent of headroom so a full house does not run along the frame.
  auto ya = nice_axis(most + 1.0, static_cast<int>(std::min<uint32_t>(most + 1, 5)));
  auto sx = [&](double t) { return left + plot_w * std::clamp(t / xa.hi, 0.0, 1.0); };
  auto sy = [&](double n) { return plot_bottom - plot_h * std::clamp(n / ya.hi, 0.0, 1.0); };

  std::string o;
  o += "<svg width=\"760\" height=\"" + fixed(height, 0) + "\" viewBox=\"0 0 760 "
       + fixed(height, 0) + "\" role=\"img\" aria-label=\"agents ready over time, faults marked\">\n";
  for (double t = 0; t <= xa.hi + xa.step / 2; t += xa.step) {
    auto x = fixed(sx(t), 1);
    o += "<line x1=\"" + x + "\" y1=\"" + fixed(top, 1) + "\" x2=\"" + x + "\" y2=\""
         + fixed(plot_bottom, 1) + "\" class=\"grid\"/><text x=\"" + x + "\" y=\""
         + fixed(plot_bottom + 16, 1) + "\" text-anchor=\"middle\" class=\"tick\">"
         + tick_label(t, xa.step) + "</text>\n";
  }
  for (double n = 0; n <= ya.hi + ya.step / 2; n += ya.step) {
    auto y = fixed(sy(n), 1);
    o += "<line x1=\"" + fixed(left, 1) + "\" y1=\"" + y + "\" x2=\"" + fixed(width - right, 1)
         + "\" y2=\"" + y + "\" class=\"grid\"/><text x=\"" + fixed(left - 6, 1) + "\" y=\""
         + fixed(sy(n) + 4, 1) + "\" text-anchor=\"end\" class=\"tick\">"
         + tick_label(n, ya.step) + "</text>\n";
  }
  o += "<text x=\"" + fixed(left + plot_w / 2, 1) + "\" y=\"" + fixed(plot_bottom + 36, 1)
       + "\" text-anchor=\"middle\" class=\"label\">time since the run began (s)</text>";
  o += "<text x=\"14\" y=\"" + fixed(top + plot_h / 2, 1) + "\" transform=\"rotate(-90 14 "
       + fixed(top + plot_h / 2, 1)
       + ")\" text-anchor=\"middle\" class=\"label\">agents ready</text>\n";
  // Fault markers under the line, so the line stays readable.
  for (const auto& f : log.faults) {
    if (f.skipped)
      continue;
    auto x = fixed(sx(f.injected_s), 1);
    o += "<line x1=\"" + x + "\" y1=\"" + fixed(top, 1) + "\" x2=\"" + x + "\" y2=\""
         + fixed(plot_bottom, 1) + "\" stroke=\"" + std::string{colour(f.fault.kind)}
         + "\" stroke-opacity=\"0.6\"><title>#" + std::to_string(f.fault.id) + " "
         + html(to_string(f.fault.kind)) + (f.agent_id.empty() ? "" : " on " + html(f.agent_id))
         + " at " + fixed(f.injected_s, 3) + " s</title></line>\n";
  }
  if (!log.ready.empty()) {
    std::string d = "M" + fixed(sx(log.ready.front().t_s), 1) + " "
                    + fixed(sy(log.ready.front().ready), 1);
    for (std::size_t i = 1; i < log.ready.size(); ++i)
      d += " H" + fixed(sx(log.ready[i].t_s), 1) + " V" + fixed(sy(log.ready[i].ready), 1);
    d += " H" + fixed(sx(std::max(log.elapsed_s, log.ready.back().t_s)), 1);
    o += "<path d=\"" + d + "\" fill=\"none\" stroke=\"#111111\" stroke-width=\"2\"/>\n";
  } else {
    o += "<text x=\"" + fixed(left + 10, 1) + "\" y=\"" + fixed(top + 20, 1)
         + "\" class=\"note\">no ready samples in the run log</text>\n";
  }
  o += "<rect x=\"" + fixed(left, 1) + "\" y=\"" + fixed(top, 1) + "\" width=\""
       + fixed(plot_w, 1) + "\" height=\"" + fixed(plot_h, 1) + "\" class=\"frame\"/>\n";
  // Legend.
  std::size_t i = 0;
  for (auto k : kinds) {
    double lx = left + static_cast<double>(i % legend_cols) * (plot_w / legend_cols);
    double ly = legend_top + 20 * static_cast<double>(i / legend_cols);
    o += "<rect x=\"" + fixed(lx, 1) + "\" y=\"" + fixed(ly - 10, 1)
         + "\" width=\"12\" height=\"12\" fill=\"" + std::string{colour(k)} + "\"/><text x=\""
         + fixed(lx + 18, 1) + "\" y=\"" + fixed(ly, 1) + "\" class=\"tick\">"
         + html(to_string(k)) + "</text>\n";
    ++i;
  }
  o += "</svg>\n";
  return o;
}

void stats_cells(std::string& o, const latency_stats* s) {
  if (s == nullptr || s->n == 0) {
    o += "<td>–</td><td>–</td><td>–</td><td>–</td>";
    return;
  }
  for (double x : {s->p50, s->p95, s->p99, s->max})
    o += "<td class=\"num\">" + fixed(x, 1) + "</td>";
}

constexpr std::string_view page_style = R"(
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 62em; color: #111; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pass { color: #176b1d; font-weight: bold; } .fail { color: #b00020; font-weight: bold; } .skip { color: #6b6b6b; font-style: italic; }
.verdict { font-size: 1.2em; padding: 0.3em 0.6em; border-radius: 4px; display: inline-block; }
.verdict.pass { background: #e3f4e4; } .verdict.fail { background: #fde4e7; }
svg { display: block; margin: 0.5em 0; }
svg .grid { stroke: #e4e4e4; } svg .axis { stroke: #555; }
svg .frame { fill: none; stroke: #999; }
svg .tick { font-size: 11px; fill: #333; } svg .label { font-size: 12px; fill: #111; }
svg .note { font-size: 13px; fill: #555; }
)";

} // namespace

std::map<fault_kind, latency_stats> detection_by_kind(const run_log& log) {
  return stats_by_kind(detection_samples(log));
}

std::map<fault_kind, latency_stats> recovery_by_kind(const run_log& log) {
  return stats_by_kind(recovery_samples(log));
}

std::string report_json(const scenario& s, const run_log& log,
                        const std::vector<invariant_result>& inv) {
  std::string out;
  json::writer w(out);
  w.begin_object();
  w.field("scenario", log.scenario_name.empty() ? s.name : log.scenario_name)
    .field("description", s.description)
    .field("seed", log.seed)
    .field("started_at", log.started_at)
    .field("elapsed_s", log.elapsed_s)
    .field("duration_s", s.duration_s)
    .field("backend", log.backend.empty() ? s.backend : log.backend)
    .field("agents", s.agent_count)
    .field("passed", all_passed(inv));

  auto counts = counts_by_kind(log);
  kind_counts total;
  for (const auto& [k, c] : counts) {
    total.planned += c.planned;
    total.injected += c.injected;
    total.skipped += c.skipped;
    total.went_down += c.went_down;
    total.recovered += c.recovered;
  }
  auto write_counts = [&](const kind_counts& c) {
    w.begin_object()
      .field("planned", c.planned)
      .field("injected", c.injected)
      .field("skipped", c.skipped)
      .field("went_down", c.went_down)
      .field("recovered", c.recovered)
      .end_object();
  };
  w.key("faults").begin_object();
  w.key("total");
  write_counts(total);
  w.key("by_kind").begin_object();
  for (const auto& [k, c] : counts) {
    w.key(to_string(k));
    write_counts(c);
  }
  w.end_object().end_object();

  w.key("detection_ms");
  write_stats(w, detection_by_kind(log));
  w.key("recovery_ms");
  write_stats(w, recovery_by_kind(log));

  const auto& c = log.calls;
  w.key("calls").begin_object()
    .field("sent", c.sent)
    .field("ok", c.ok)
    .field("failed", c.failed)
    .field("retried", c.retried)
    .field("unanswered", c.unanswered)
    .field("supervisor_received", c.supervisor_received)
    .field("supervisor_answered", c.supervisor_answered)
    .end_object();

  w.key("supervision").begin_object()
    .field("restarts", static_cast<uint64_t>(log.restarts.size()))
    .field("escalated", log.escalated)
    .field("max_restarts", log.max_restarts)
    .field("period_ms", log.period_ms)
    .field("min_backoff_ms", log.min_backoff_ms)
    .field("max_backoff_ms", log.max_backoff_ms)
    .end_object();

  w.key("invariants").begin_array();
  for (const auto& i : inv)
    w.begin_object()
      .field("name", i.name)
      .field("passed", i.passed)
      .field("checked", i.checked)
      .field("status", status_of(i))
      .field("evidence", i.evidence)
      .end_object();
  w.end_array();

  w.key("leftovers").begin_array();
  for (const auto& l : log.leftovers)
    w.value(l);
  w.end_array();
  w.field("healthy_at_end", log.healthy_at_end);
  w.field("events_lost", log.events_lost);

  // Every fault and every restart as the runner saw them, so that a
  // violation can be traced to what else happened to its agent.
  w.key("fault_records").begin_array();
  for (const auto& r : log.faults) {
    w.begin_object()
      .field("id", r.fault.id)
      .field("kind", to_string(r.fault.kind))
      .field("agent", r.agent_id)
      .field("at_s", r.fault.at_s)
      .field("duration_ms", r.fault.duration_ms);
    if (r.skipped)
      w.field("skipped", r.skipped_reason);
    else
      w.field("injected_s", r.injected_s);
    w.key("expected").begin_array();
    for (const auto& e : r.expected_reasons)
      w.value(e);
    w.end_array();
    if (r.down_reason)
      w.field("down_reason", *r.down_reason);
    if (r.detected_s)
      w.field("detected_s", *r.detected_s);
    if (r.recovered_s)
      w.field("recovered_s", *r.recovered_s);
    w.end_object();
  }
  w.end_array();
  w.key("restarts").begin_array();
  for (const auto& r : log.restarts)
    w.begin_object()
      .field("agent", r.agent_id)
      .field("reason", r.reason)
      .field("down_s", r.down_s)
      .field("ready_s", r.ready_s)
      .field("failures", r.failures)
      .end_object();
  w.end_array();
  w.end_object();
  out += '\n';
  return out;
}

std::string report_html(const scenario& s, const run_log& log,
                        const std::vector<invariant_result>& inv) {
  auto name = log.scenario_name.empty() ? s.name : log.scenario_name;
  bool passed = all_passed(inv);
  std::string o;
  o.reserve(64 * 1024);
  o += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>chaos run: ";
  append_html(o, name);
  o += "</title>\n<style>";
  o += page_style;
  o += "</style>\n</head>\n<body>\n<h1>Chaos run: ";
  append_html(o, name);
  o += "</h1>\n";
  if (!s.description.empty())
    o += "<p>" + html(s.description) + "</p>\n";
  o += std::string{"<p><span class=\"verdict "} + (passed ? "pass\">PASSED" : "fail\">FAILED")
       + "</span></p>\n";
  o += "<table>\n<tr><th>seed</th><td>" + std::to_string(log.seed) + "</td></tr>\n";
  o += "<tr><th>started</th><td>" + html(log.started_at) + "</td></tr>\n";
  o += "<tr><th>elapsed</th><td>" + fixed(log.elapsed_s, 1) + " s (scenario "
       + fixed(s.duration_s, 1) + " s)</td></tr>\n";
  o += "<tr><th>backend</th><td>" + html(log.backend.empty() ? s.backend : log.backend)
       + "</td></tr>\n";
  o += "<tr><th>agents</th><td>" + std::to_string(s.agent_count) + "</td></tr>\n</table>\n";

  o += "<h2>Invariants</h2>\n<table>\n<tr><th>invariant</th><th>result</th><th>evidence</th></tr>\n";
  for (const auto& i : inv)
    o += "<tr><td>" + html(i.name) + "</td><td class=\""
         + (!i.checked ? "skip\">not checked" : i.passed ? "pass\">pass" : "fail\">FAIL")
         + "</td><td>" + html(i.evidence) + "</td></tr>\n";
  o += "</table>\n";

  o += "<h2>Recovery time per fault kind</h2>\n<p>Each dot is one fault that "
       "was expected to take its agent down: the time from its injection until "
       "the agent (or its replacement) served again. Box: quartiles and median; "
       "dashed tick: p95; whiskers: fastest and slowest.</p>\n";
  o += recovery_svg(log);
  o += "<h2>Agents ready over time</h2>\n<p>The line counts agents ready to "
       "serve; each vertical line is an injected fault, coloured by kind.</p>\n";
  o += ready_svg(s, log);

  o += "<h2>Faults by kind</h2>\n<table>\n<tr><th rowspan=\"2\">kind</th><th rowspan=\"2\">planned</th>"
       "<th rowspan=\"2\">injected</th><th rowspan=\"2\">skipped</th><th rowspan=\"2\">went down</th>"
       "<th rowspan=\"2\">recovered</th><th colspan=\"4\">detection (ms)</th><th colspan=\"4\">recovery (ms)</th></tr>\n"
       "<tr><th>p50</th><th>p95</th><th>p99</th><th>max</th><th>p50</th><th>p95</th><th>p99</th><th>max</th></tr>\n";
  auto detection = detection_by_kind(log);
  auto recovery = recovery_by_kind(log);
  for (const auto& [k, c] : counts_by_kind(log)) {
    o += "<tr><td><span style=\"color:" + std::string{colour(k)} + "\">&#9632;</span> "
         + html(to_string(k)) + "</td>";
    for (uint64_t x : {c.planned, c.injected, c.skipped, c.went_down, c.recovered})
      o += "<td class=\"num\">" + std::to_string(x) + "</td>";
    auto d = detection.find(k);
    auto r = recovery.find(k);
    stats_cells(o, d == detection.end() ? nullptr : &d->second);
    stats_cells(o, r == recovery.end() ? nullptr : &r->second);
    o += "</tr>\n";
  }
  o += "</table>\n";

  const auto& c = log.calls;
  o += "<h2>Tool calls</h2>\n<table>\n<tr><th>sent</th><th>ok</th><th>failed</th><th>retried</th>"
       "<th>unanswered</th><th>supervisor received</th><th>supervisor answered</th></tr>\n<tr>";
  for (uint64_t x : {c.sent, c.ok, c.failed, c.retried, c.unanswered, c.supervisor_received,
                     c.supervisor_answered})
    o += "<td class=\"num\">" + std::to_string(x) + "</td>";
  o += "</tr>\n</table>\n";

  o += "<h2>Supervision</h2>\n<table>\n<tr><th>restarts</th><td class=\"num\">"
       + std::to_string(log.restarts.size()) + "</td></tr>\n<tr><th>escalated</th><td>"
       + (log.escalated ? "yes" : "no") + "</td></tr>\n<tr><th>intensity</th><td>"
       + std::to_string(log.max_restarts) + " per " + std::to_string(log.period_ms)
       + " ms</td></tr>\n<tr><th>backoff</th><td>" + std::to_string(log.min_backoff_ms) + "–"
       + std::to_string(log.max_backoff_ms) + " ms</td></tr>\n<tr><th>healthy at end</th><td>"
       + (log.healthy_at_end ? "yes" : "no") + "</td></tr>\n</table>\n";

  std::size_t skipped = 0;
  for (const auto& f : log.faults)
    skipped += f.skipped ? 1 : 0;
  if (skipped > 0) {
    o += "<h2>Skipped faults</h2>\n<table>\n<tr><th>fault</th><th>kind</th><th>at (s)</th><th>why</th></tr>\n";
    std::size_t shown = 0;
    for (const auto& f : log.faults) {
      if (!f.skipped)
        continue;
      if (++shown > 50) {
        o += "<tr><td colspan=\"4\">and " + std::to_string(skipped - 50) + " more</td></tr>\n";
        break;
      }
      o += "<tr><td class=\"num\">#" + std::to_string(f.fault.id) + "</td><td>"
           + html(to_string(f.fault.kind)) + "</td><td class=\"num\">" + fixed(f.fault.at_s, 3)
           + "</td><td>" + html(f.skipped_reason) + "</td></tr>\n";
    }
    o += "</table>\n";
  }
  if (!log.leftovers.empty()) {
    o += "<h2>Left after the run</h2>\n<ul>\n";
    for (const auto& l : log.leftovers)
      o += "<li>" + html(l) + "</li>\n";
    o += "</ul>\n";
  }
  o += "</body>\n</html>\n";
  return o;
}

} // namespace agentvisor::chaos

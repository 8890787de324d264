#include "agentvisor/log.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <fmt/chrono.h>

#include <chrono>

namespace agentvisor::log {

namespace {

spdlog::level::level_enum to_spdlog(log_level x) {
  switch (x) {
    case log_level::trace: return spdlog::level::trace;
    case log_level::debug: return spdlog::level::debug;
    case log_level::info: return spdlog::level::info;
    case log_level::warn: return spdlog::level::warn;
    case log_level::error: return spdlog::level::err;
    case log_level::off: return spdlog::level::off;
  }
  return spdlog::level::info;
}

// JSON string escaping for log messages (RFC 8259: quote, backslash and
// control characters; other bytes pass through).
void append_json_string(spdlog::memory_buf_t& out, std::string_view s) {
  out.push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"': out.append(std::string_view{"\\\""}); break;
      case '\\': out.append(std::string_view{"\\\\"}); break;
      case '\n': out.append(std::string_view{"\\n"}); break;
      case '\r': out.append(std::string_view{"\\r"}); break;
      case '\t': out.append(std::string_view{"\\t"}); break;
      default:
        if (c < 0x20)
          fmt::format_to(std::back_inserter(out), "\\u{:04x}", c);
        else
          out.push_back(static_cast<char>(c));
    }
  }
  out.push_back('"');
}

void append_timestamp(spdlog::memory_buf_t& out, spdlog::log_clock::time_point t) {
  auto ms = std::chrono::time_point_cast<std::chrono::milliseconds>(t);
  fmt::format_to(std::back_inserter(out), "{:%Y-%m-%dT%H:%M:%S}.{:03}Z",
                 fmt::gmtime(std::chrono::system_clock::to_time_t(t)),
                 ms.time_since_epoch().count() % 1000);
}

// One formatter for both formats: spdlog's pattern flags cannot escape JSON,
// and the agent id comes from our thread-local scope, not from the message.
class record_formatter final : public spdlog::formatter {
public:
  explicit record_formatter(log_format format) : format_(format) {}

  void format(const spdlog::details::log_msg& msg,
              spdlog::memory_buf_t& out) override {
    auto level = spdlog::level::to_string_view(msg.level);
    std::string_view text{msg.payload.data(), msg.payload.size()};
    if (format_ == log_format::json) {
      out.append(std::string_view{"{\"ts\":\""});
      append_timestamp(out, msg.time);
      out.append(std::string_view{"\",\"level\":"});
      append_json_string(out, {level.data(), level.size()});
      if (!detail::current_agent.empty()) {
        out.append(std::string_view{",\"agent\":"});
        append_json_string(out, detail::current_agent);
      }
      out.append(std::string_view{",\"msg\":"});
      append_json_string(out, text);
      out.append(std::string_view{"}\n"});
      return;
    }
    append_timestamp(out, msg.time);
    fmt::format_to(std::back_inserter(out), " {:<5} ",
                   std::string_view{level.data(), level.size()});
    if (!detail::current_agent.empty())
      fmt::format_to(std::back_inserter(out), "agent={} ", detail::current_agent);
    out.append(text);
    out.push_back('\n');
  }

  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<record_formatter>(format_);
  }

private:
  log_format format_;
};

} // namespace

std::unique_ptr<spdlog::formatter> make_formatter(log_format format) {
  return std::make_unique<record_formatter>(format);
}

void init(log_level level, log_format format) {
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  auto logger = std::make_shared<spdlog::logger>("agentvisor", std::move(sink));
  logger->set_formatter(make_formatter(format));
  logger->set_level(to_spdlog(level));
  // Warnings and errors matter most when something is going wrong: flush them
  // at once (stderr is unbuffered anyway, this keeps it so for other sinks).
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(std::move(logger));
}

} // namespace agentvisor::log

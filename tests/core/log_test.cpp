// Logging: records in plain text and JSON lines, with the agent id as a
// field on records about an agent.

#include "agentvisor/log.hpp"

#include <doctest/doctest.h>
#include <simdjson.h>

#include <spdlog/sinks/ostream_sink.h>

#include <sstream>

using namespace agentvisor;

namespace {

// Installs a default logger writing into `out` with our formatter.
void capture(std::ostringstream& out, log_format format,
             spdlog::level::level_enum level = spdlog::level::trace) {
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_st>(out);
  auto lg = std::make_shared<spdlog::logger>("test", sink);
  lg->set_formatter(log::make_formatter(format));
  lg->set_level(level);
  spdlog::set_default_logger(lg);
}

std::string json_field(const std::string& line, const char* key) {
  simdjson::dom::parser p;
  simdjson::dom::element doc;
  REQUIRE_MESSAGE(p.parse(line).get(doc) == simdjson::SUCCESS, "not JSON: ", line);
  std::string_view v;
  if (doc[key].get_string().get(v) != simdjson::SUCCESS)
    return "<absent>";
  return std::string{v};
}

} // namespace

TEST_CASE("a JSON record is one valid JSON object per line with ts, level, agent and msg") {
  std::ostringstream out;
  capture(out, log_format::json);
  log::agent("a-7").info("spawned in {} ms", 3);
  auto line = out.str();
  REQUIRE(line.back() == '\n');
  line.pop_back();
  CHECK(line.find('\n') == std::string::npos);
  CHECK(json_field(line, "level") == "info");
  CHECK(json_field(line, "agent") == "a-7");
  CHECK(json_field(line, "msg") == "spawned in 3 ms");
  CHECK(json_field(line, "ts").size() == 24); // 2026-11-23T10:00:00.000Z
}

TEST_CASE("JSON records escape quotes, backslashes, newlines and control characters") {
  std::ostringstream out;
  capture(out, log_format::json);
  log::agent("x\"y").warn("path \"{}\" \\ line1\nline2\t\x01end", "/w");
  auto line = out.str();
  line.pop_back();
  CHECK(line.find('\n') == std::string::npos);
  CHECK(json_field(line, "msg") == "path \"/w\" \\ line1\nline2\t\x01end");
  CHECK(json_field(line, "agent") == "x\"y");
}

TEST_CASE("a record about no agent has no agent field, and the agent scope ends with the call") {
  std::ostringstream out;
  capture(out, log_format::json);
  log::agent("a1").info("first");
  spdlog::info("second");
  std::istringstream lines{out.str()};
  std::string first, second;
  std::getline(lines, first);
  std::getline(lines, second);
  CHECK(json_field(first, "agent") == "a1");
  CHECK(json_field(second, "agent") == "<absent>");
}

TEST_CASE("a plain record carries the level and agent=<id>") {
  std::ostringstream out;
  capture(out, log_format::plain);
  log::agent("a9").error("oom at {} bytes", 42);
  auto line = out.str();
  CHECK(line.find(" error agent=a9 oom at 42 bytes\n") != std::string::npos);
  CHECK(line.find('Z') == 23); // ISO-8601 UTC timestamp first
}

TEST_CASE("records below the configured level are not written") {
  std::ostringstream out;
  capture(out, log_format::plain, spdlog::level::warn);
  log::agent("a1").info("quiet");
  spdlog::debug("quiet too");
  log::agent("a1").warn("loud");
  CHECK(out.str().find("quiet") == std::string::npos);
  CHECK(out.str().find("loud") != std::string::npos);
}

TEST_CASE("init sets the level from the config") {
  log::init(log_level::error, log_format::json);
  CHECK(spdlog::default_logger()->level() == spdlog::level::err);
  log::init(log_level::debug, log_format::plain);
  CHECK(spdlog::default_logger()->level() == spdlog::level::debug);
}

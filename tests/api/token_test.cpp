// Tests of the API token (include/agentvisor/token.hpp): real files in a
// scratch directory under /tmp.

#include "agentvisor/token.hpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <sys/stat.h>
#include <unistd.h>

using namespace agentvisor;
namespace fs = std::filesystem;

namespace {

/// A fresh directory, removed at the end.
struct scratch {
  fs::path dir;
  scratch() {
    char tmpl[] = "/tmp/agentvisor-token-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    dir = tmpl;
  }
  ~scratch() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

void write_file(const fs::path& p, const std::string& text, mode_t mode = 0600) {
  std::ofstream(p) << text;
  ::chmod(p.c_str(), mode);
}

} // namespace

TEST_CASE("a generated token is 64 hex digits in a 0600 file and reused") {
  scratch s;
  auto state = (s.dir / "state").string(); // does not exist yet
  auto first = load_or_create_token("", state);
  REQUIRE_MESSAGE(first, (first ? "" : first.err().message));
  CHECK(first->generated);
  CHECK(first->path == state + "/api.token");
  CHECK(first->value.size() == 64);
  CHECK(first->value.find_first_not_of("0123456789abcdef") == std::string::npos);
  struct stat st{};
  REQUIRE(::stat(first->path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  // No temporary file is left behind.
  CHECK(std::distance(fs::directory_iterator(state), fs::directory_iterator()) == 1);
  auto second = load_or_create_token("", state);
  REQUIRE(second);
  CHECK_FALSE(second->generated);
  CHECK(second->value == first->value);
  auto other = generate_token();
  REQUIRE(other);
  CHECK(*other != first->value);
}

TEST_CASE("a generated token file readable by others is refused") {
  scratch s;
  write_file(s.dir / "api.token", "abc\n", 0644);
  auto t = load_or_create_token("", s.dir.string());
  REQUIRE_FALSE(t);
  CHECK(t.err().message.find((s.dir / "api.token").string()) != std::string::npos);
}

TEST_CASE("a configured token file is read and trimmed") {
  scratch s;
  write_file(s.dir / "tok", "  secret-token\n");
  auto t = load_or_create_token((s.dir / "tok").string(), "/nonexistent-state");
  REQUIRE(t);
  CHECK(t->value == "secret-token");
  CHECK_FALSE(t->generated);
  CHECK(t->path == (s.dir / "tok").string());
}

TEST_CASE("an unreadable or empty configured token file is an error naming it") {
  scratch s;
  auto missing = (s.dir / "missing").string();
  auto t = load_or_create_token(missing, s.dir.string());
  REQUIRE_FALSE(t);
  CHECK(t.err().message.find(missing) != std::string::npos);
  CHECK(t.err().sys_errno == ENOENT);
  write_file(s.dir / "empty", " \n");
  auto e = load_or_create_token((s.dir / "empty").string(), s.dir.string());
  REQUIRE_FALSE(e);
  CHECK(e.err().message.find((s.dir / "empty").string()) != std::string::npos);
  CHECK(e.err().message.find("empty") != std::string::npos);
}

TEST_CASE("token comparison and bearer parsing") {
  CHECK(token_equals("abc", "abc"));
  CHECK_FALSE(token_equals("abc", "abd"));
  CHECK_FALSE(token_equals("abc", "abcd"));
  CHECK_FALSE(token_equals("", "a"));
  CHECK(bearer_token("Bearer xyz") == "xyz");
  CHECK(bearer_token("bearer   xyz ") == "xyz");
  CHECK(bearer_token("Basic xyz").empty());
  CHECK(bearer_token("Bearer").empty());
  CHECK(bearer_token("Bearer ").empty());
}

#include "agentvisor/small_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace agentvisor {

result<std::string> read_small_file(const std::string& path, std::size_t max_bytes,
                                    std::string_view what) {
  auto named = std::string(what) + (what.empty() ? "" : " ") + path;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return error::from_errno("cannot read " + named, errno);
  std::string text;
  char buf[8192];
  for (;;) {
    auto n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return error::from_errno("cannot read " + named, err);
    }
    if (n == 0)
      break;
    text.append(buf, static_cast<std::size_t>(n));
    if (text.size() > max_bytes) {
      ::close(fd);
      return error{named + " is over " + std::to_string(max_bytes) + " bytes"};
    }
  }
  ::close(fd);
  return text;
}

std::string_view trim_space(std::string_view s) noexcept {
  auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  while (!s.empty() && blank(s.front()))
    s.remove_prefix(1);
  while (!s.empty() && blank(s.back()))
    s.remove_suffix(1);
  return s;
}

} // namespace agentvisor

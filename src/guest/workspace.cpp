#include "workspace.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>

namespace agentvisor::guest {

void unique_fd::reset(int fd) noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

tool_errc errc_for_errno(int err) noexcept {
  switch (err) {
    case EXDEV:
    case ELOOP:
      return tool_errc::path_escape;
    case ENOENT:
    case ENOTDIR:
      return tool_errc::not_found;
    case EFBIG:
      return tool_errc::too_large;
    default:
      return tool_errc::io_error;
  }
}

tool_error errno_error(std::string_view what, int err) {
  std::string m;
  m.reserve(what.size() + 48);
  m += what;
  m += ": ";
  if (err == EXDEV)
    m += "escapes the workspace";
  else if (err == ELOOP)
    m += "escapes the workspace or has too many symbolic links";
  else
    m += std::strerror(err);
  return tool_error{errc_for_errno(err), std::move(m)};
}

std::string quoted_path(std::string_view path) {
  std::string m;
  m.reserve(path.size() + 8);
  m += "path \"";
  m += path;
  m += '"';
  return m;
}

result<workspace> workspace::open(const std::string& root) {
  char* real = ::realpath(root.c_str(), nullptr);
  if (real == nullptr) {
    int e = errno;
    return error{"workspace " + root + ": " + std::strerror(e), e};
  }
  std::string canon(real);
  std::free(real);
  int fd = ::open(canon.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    return error{"workspace " + canon + ": " + std::strerror(e), e};
  }
  return workspace(std::move(canon), unique_fd(fd));
}

result<void> workspace::check_ready() const {
  struct stat st {};
  if (::fstat(fd_.get(), &st) != 0) {
    int e = errno;
    return error{"workspace " + root_ + ": " + std::strerror(e), e};
  }
  if (!S_ISDIR(st.st_mode)) return error{"workspace " + root_ + " is not a directory", ENOTDIR};
  if (::faccessat(fd_.get(), ".", W_OK | X_OK, AT_EACCESS) != 0) {
    int e = errno;
    return error{"workspace " + root_ + " is not writable: " + std::strerror(e), e};
  }
  return {};
}

outcome<std::string_view> workspace::relative(std::string_view path) const {
  if (path.find('\0') != std::string_view::npos)
    return tool_error{tool_errc::invalid_args, "path contains a NUL byte"};
  if (path.empty()) return std::string_view{"."};
  if (path.front() != '/') return path;
  std::string_view rest;
  if (root_ == "/") {
    rest = path;
  } else if (path.starts_with(root_) &&
             (path.size() == root_.size() || path[root_.size()] == '/')) {
    rest = path.substr(root_.size());
  } else {
    return tool_error{tool_errc::path_escape,
                      quoted_path(path) + " is outside the workspace " + root_};
  }
  while (!rest.empty() && rest.front() == '/') rest.remove_prefix(1);
  if (rest.empty()) return std::string_view{"."};
  return rest;
}

outcome<unique_fd> workspace::open_path(std::string_view path, int flags, mode_t mode) const {
  auto rel = relative(path);
  if (!rel) return std::move(rel.err());
  return open_relative(*rel, path, flags, mode);
}

outcome<unique_fd> workspace::open_relative(std::string_view rel, std::string_view shown,
                                            int flags, mode_t mode) const {
  // openat2 needs a NUL-terminated string; paths are short, so use the stack.
  char buf[PATH_MAX];
  if (rel.size() >= sizeof buf)
    return tool_error{tool_errc::invalid_args, quoted_path(shown) + " is too long"};
  std::memcpy(buf, rel.data(), rel.size());
  buf[rel.size()] = '\0';
  open_how how{};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  how.mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  // EAGAIN: a concurrent rename raced a ".." lookup; retry a few times.
  long fd;
  int tries = 0;
  do {
    fd = ::syscall(SYS_openat2, fd_.get(), buf, &how, sizeof how);
  } while (fd < 0 && (errno == EINTR || (errno == EAGAIN && ++tries < 8)));
  if (fd < 0) return errno_error(quoted_path(shown), errno);
  return unique_fd(static_cast<int>(fd));
}

status workspace::make_parents(std::string_view rel, std::string_view shown) const {
  std::size_t pos = 0;
  while (true) {
    std::size_t slash = rel.find('/', pos);
    if (slash == std::string_view::npos) return std::nullopt; // last is the file
    std::string_view name = rel.substr(pos, slash - pos);
    std::size_t next = slash + 1;
    if (name.empty() || name == "." || name == "..") {
      pos = next;
      continue;
    }
    std::string_view prefix = rel.substr(0, slash);
    auto dir = open_relative(prefix, shown, O_PATH | O_DIRECTORY);
    if (!dir) {
      if (dir.err().code != tool_errc::not_found) return std::move(dir.err());
      std::string_view parent = pos == 0 ? std::string_view{"."} : rel.substr(0, pos);
      auto pfd = open_relative(parent, shown, O_PATH | O_DIRECTORY);
      if (!pfd) return std::move(pfd.err());
      std::string n(name);
      if (::mkdirat(pfd->get(), n.c_str(), 0755) != 0 && errno != EEXIST)
        return errno_error(quoted_path(shown) + ": creating directory \"" +
                             std::string(prefix) + "\"",
                           errno);
    }
    pos = next;
  }
}

} // namespace agentvisor::guest

#pragma once
/// The guest's workspace: the one directory tree tools may touch. Every path
/// is resolved with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS) from a
/// directory fd of the root, so `..`, absolute symlinks and symlinks that
/// climb out are refused by the kernel, without check-then-use races.

#include "agentvisor/error.hpp"
#include "agentvisor/guest_protocol.hpp"

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace agentvisor::guest {

/// An owned file descriptor; closes on destruction.
class unique_fd {
public:
  unique_fd() noexcept = default;
  explicit unique_fd(int fd) noexcept : fd_(fd) {}
  unique_fd(unique_fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  unique_fd& operator=(unique_fd&& o) noexcept {
    if (this != &o) reset(std::exchange(o.fd_, -1));
    return *this;
  }
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;
  ~unique_fd() { reset(); }

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd = -1) noexcept;

private:
  int fd_ = -1;
};

/// A tool's failure: nothing (success) or the error to send back.
using status = std::optional<tool_error>;

/// Either a T or the tool_error to answer with.
template <class T>
class outcome {
public:
  outcome(T value) : v_(std::in_place_index<0>, std::move(value)) {}
  outcome(tool_error err) : v_(std::in_place_index<1>, std::move(err)) {}

  explicit operator bool() const noexcept { return v_.index() == 0; }
  T& operator*() & { return std::get<0>(v_); }
  T* operator->() { return &std::get<0>(v_); }
  tool_error& err() & { return std::get<1>(v_); }

private:
  std::variant<T, tool_error> v_;
};

/// The code a failed syscall maps to: EXDEV and ELOOP -> path_escape,
/// ENOENT and ENOTDIR -> not_found, EFBIG -> too_large, else io_error.
tool_errc errc_for_errno(int err) noexcept;

/// `what: strerror(err)` with the code errc_for_errno gives.
tool_error errno_error(std::string_view what, int err);

/// `path "<path>"`, the subject of most error messages.
std::string quoted_path(std::string_view path);

class workspace {
public:
  /// Opens `root` (made absolute and canonical). Fails if it cannot be
  /// opened as a directory.
  static result<workspace> open(const std::string& root);

  /// Checks what `ready` promises: a directory the guest can write to.
  result<void> check_ready() const;

  /// The canonical absolute root, without a trailing slash (unless "/").
  const std::string& root() const noexcept { return root_; }
  int root_fd() const noexcept { return fd_.get(); }

  /// `path` relative to the root: "" becomes ".", an absolute path inside
  /// the root loses the root's prefix, one outside is path_escape; a path
  /// with a NUL byte is invalid_args.
  outcome<std::string_view> relative(std::string_view path) const;

  /// openat2 beneath the root. `path` as given by the agent (relative() is
  /// applied); O_CLOEXEC is added.
  outcome<unique_fd> open_path(std::string_view path, int flags, mode_t mode = 0) const;

  /// Same, for a path already made relative.
  outcome<unique_fd> open_relative(std::string_view rel, std::string_view shown,
                                   int flags, mode_t mode = 0) const;

  /// Creates the missing parent directories of `rel` (already relative),
  /// each resolved beneath the root.
  status make_parents(std::string_view rel, std::string_view shown) const;

private:
  workspace(std::string root, unique_fd fd) : root_(std::move(root)), fd_(std::move(fd)) {}

  std::string root_;
  unique_fd fd_;
};

} // namespace agentvisor::guest

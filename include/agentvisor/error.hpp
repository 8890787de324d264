#pragma once
/// Errors as values for the parts of agentvisor that link no CAF (config,
/// sandbox builder, guest). Actors use caf::error; this type converts at the
/// boundary by its message.

#include <cstring>
#include <string>
#include <utility>
#include <variant>

namespace agentvisor {

/// A failure with context: what was being done, on what, and the errno if a
/// syscall failed (0 otherwise).
struct error {
  std::string message;
  int sys_errno = 0;

  /// "what: strerror(errno)" for a failed syscall. Inline so that the
  /// parts that link nothing of ours (sandbox builder, guest) can use it.
  static error from_errno(std::string what, int err) {
    what += ": ";
    what += std::strerror(err);
    return error{std::move(what), err};
  }
};

/// Either a T or an error. Deliberately tiny: C++20 has no std::expected.
template <class T>
class [[nodiscard]] result {
public:
  result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
  result(error err) : v_(std::in_place_index<1>, std::move(err)) {}

  explicit operator bool() const noexcept { return v_.index() == 0; }
  bool has_value() const noexcept { return v_.index() == 0; }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const error& err() const& { return std::get<1>(v_); }
  error&& err() && { return std::get<1>(std::move(v_)); }

private:
  std::variant<T, error> v_;
};

template <>
class [[nodiscard]] result<void> {
public:
  result() = default;
  result(error err) : err_(std::move(err)), ok_(false) {}

  explicit operator bool() const noexcept { return ok_; }
  bool has_value() const noexcept { return ok_; }
  const error& err() const& { return err_; }
  error&& err() && { return std::move(err_); }

private:
  error err_;
  bool ok_ = true;
};

} // namespace agentvisor

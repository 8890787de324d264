#pragma once
/// The control API's bearer token: read from api.token_file when one is
/// configured, otherwise generated once (32 random bytes, hex) into
/// <state_dir>/api.token with mode 0600 and reused on later starts.
/// docs/api.md, "Token".

#include "agentvisor/error.hpp"

#include <string>
#include <string_view>

namespace agentvisor {

struct api_token {
  std::string value;
  /// Where it came from, for the start-up log line.
  std::string path;
  /// True when this call created the file.
  bool generated = false;
};

/// `token_file` non-empty: its content without surrounding whitespace; an
/// unreadable or empty file is an error naming it. Empty: the token in
/// `<state_dir>/api.token`, created (with the directory) if missing. The
/// file is created under a temporary name with O_EXCL and mode 0600, then
/// linked into place, so it is never readable by others nor seen half
/// written.
result<api_token> load_or_create_token(const std::string& token_file,
                                       const std::string& state_dir);

/// 32 bytes from getrandom(2), as 64 lowercase hex digits.
result<std::string> generate_token();

/// Compares in time that depends on the lengths only, never on where the
/// first difference is.
bool token_equals(std::string_view a, std::string_view b) noexcept;

/// The token of an `Authorization: Bearer <token>` value (scheme matched
/// case-insensitively); empty when the value is not a bearer credential.
std::string_view bearer_token(std::string_view authorization) noexcept;

} // namespace agentvisor

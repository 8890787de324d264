#pragma once
/// Reading the small text files agentvisor trusts no further than their
/// size: procfs entries, the API token. Plain code, no CAF.

#include "agentvisor/error.hpp"

#include <cstddef>
#include <string>
#include <string_view>

namespace agentvisor {

/// All of `path`, at most `max_bytes`. Errors name `what` and the path:
/// "cannot read API token file /x: Permission denied (errno 13)", or
/// "API token file /x is over 4096 bytes".
result<std::string> read_small_file(const std::string& path, std::size_t max_bytes,
                                    std::string_view what);

/// `s` without leading and trailing spaces, tabs, CRs and LFs.
std::string_view trim_space(std::string_view s) noexcept;

} // namespace agentvisor

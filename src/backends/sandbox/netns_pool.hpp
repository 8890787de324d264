#pragma once
/// Network namespaces made ahead of time by the template process, so that a
/// sandbox joins one with setns (about 10 us here) instead of having clone
/// create it (CLONE_NEWNET: about 0.5 ms, the costliest namespace), and a
/// spawn does not pay for it. Links no CAF.
///
/// Each namespace holds only a loopback interface, already up: exactly what
/// clone would have made. Each is handed out once and never reused; when
/// its sandbox ends, the kernel frees it. Only a process that may create
/// network namespaces (root) can fill a pool; for the others it stays
/// disabled and sandboxes get CLONE_NEWNET as before.

#include "agentvisor/error.hpp"

#include <cstddef>
#include <vector>

namespace agentvisor::sandbox {

/// A few ready network namespaces as fds. Not thread-safe: a pool belongs to
/// one single-threaded process (the template), which it moves between
/// namespaces while filling.
class netns_pool {
public:
  /// An empty pool that holds up to `capacity` namespaces; 0 disables it.
  explicit netns_pool(std::size_t capacity);
  ~netns_pool();
  netns_pool(const netns_pool&) = delete;
  netns_pool& operator=(const netns_pool&) = delete;

  /// False once filling failed (not privileged, or a namespace operation
  /// failed); take() then returns -1 for good.
  bool enabled() const noexcept { return enabled_; }
  bool full() const noexcept { return fds_.size() >= capacity_; }
  std::size_t size() const noexcept { return fds_.size(); }

  /// Creates one namespace (unshare, loopback up, back to our own) and adds
  /// it. On failure the pool is disabled and the error says why; the
  /// calling process is back in its own namespace either way, or the error
  /// says it is not.
  result<void> fill_one();

  /// A namespace fd the caller owns (close-on-exec), or -1 when the pool is
  /// empty or disabled.
  int take();

private:
  std::size_t capacity_;
  bool enabled_;
  int home_ = -1; ///< our own network namespace, to return to
  std::vector<int> fds_;
};

} // namespace agentvisor::sandbox

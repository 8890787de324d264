#include "netns_pool.hpp"

#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace agentvisor::sandbox {

namespace {

/// Brings `lo` up in the calling thread's network namespace.
result<void> loopback_up() {
  int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0)
    return error::from_errno("netns pool: socket for lo", errno);
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  result<void> r;
  if (::ioctl(s, SIOCGIFFLAGS, &ifr) != 0) {
    r = error::from_errno("netns pool: SIOCGIFFLAGS lo", errno);
  } else {
    ifr.ifr_flags |= IFF_UP;
    if (::ioctl(s, SIOCSIFFLAGS, &ifr) != 0)
      r = error::from_errno("netns pool: SIOCSIFFLAGS lo", errno);
  }
  ::close(s);
  return r;
}

} // namespace

netns_pool::netns_pool(std::size_t capacity) : capacity_(capacity), enabled_(capacity > 0) {
  if (!enabled_)
    return;
  home_ = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (home_ < 0)
    enabled_ = false;
}

netns_pool::~netns_pool() {
  for (int fd : fds_)
    ::close(fd);
  if (home_ >= 0)
    ::close(home_);
}

result<void> netns_pool::fill_one() {
  if (!enabled_)
    return error{"netns pool: disabled"};
  auto give_up = [this](error e) -> result<void> {
    enabled_ = false;
    return e;
  };
  if (::unshare(CLONE_NEWNET) != 0)
    return give_up(error::from_errno("netns pool: unshare(CLONE_NEWNET)", errno));
  int fd = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  int open_errno = errno;
  auto up = fd >= 0 ? loopback_up() : result<void>{};
  // Home first, whatever happened: the template must not stay in a
  // namespace it made for a sandbox.
  if (::setns(home_, CLONE_NEWNET) != 0) {
    int err = errno;
    if (fd >= 0)
      ::close(fd);
    return give_up(error::from_errno("netns pool: setns back to our own namespace "
                                     "(the process is left in a new one)", err));
  }
  if (fd < 0)
    return give_up(error::from_errno("netns pool: open /proc/thread-self/ns/net", open_errno));
  if (!up) {
    ::close(fd);
    return give_up(up.err());
  }
  fds_.push_back(fd);
  return {};
}

int netns_pool::take() {
  if (!enabled_ || fds_.empty())
    return -1;
  int fd = fds_.back();
  fds_.pop_back();
  return fd;
}

} // namespace agentvisor::sandbox

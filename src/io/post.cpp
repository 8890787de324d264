#include "post.hpp"

#include <caf/send.hpp>

#include <utility>

namespace agentvisor::io::detail {

namespace {

template <class T>
void anon_post(const caf::actor& to, T&& msg) {
  if (to)
    caf::anon_send(to, std::forward<T>(msg));
}

} // namespace

void post(const caf::actor& to, io_failed msg) {
  anon_post(to, std::move(msg));
}
void post(const caf::actor& to, process_started msg) {
  anon_post(to, std::move(msg));
}
void post(const caf::actor& to, process_exited msg) {
  anon_post(to, std::move(msg));
}
void post(const caf::actor& to, timer_fired msg) {
  anon_post(to, std::move(msg));
}
void post(const caf::actor& to, fd_ready msg) {
  anon_post(to, std::move(msg));
}
void post(const caf::actor& to, signal_received msg) {
  anon_post(to, std::move(msg));
}
void post(const caf::actor& to, tcp_listening msg) {
  anon_post(to, std::move(msg));
}
void post(const caf::actor& to, tcp_accepted msg) {
  anon_post(to, std::move(msg));
}
void post(const caf::actor& to, tcp_connected msg) {
  anon_post(to, std::move(msg));
}
void post(const caf::actor& to, stream_data msg) {
  anon_post(to, std::move(msg));
}
void post(const caf::actor& to, stream_line msg) {
  anon_post(to, std::move(msg));
}
void post(const caf::actor& to, stream_closed msg) {
  anon_post(to, std::move(msg));
}

} // namespace agentvisor::io::detail

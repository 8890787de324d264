#pragma once
/// Sending the I/O thread's messages to actors. Kept in its own translation
/// unit (post.cpp): instantiating CAF's message machinery for the eleven
/// message types is most of the I/O library's compile time, and io_thread.cpp
/// then needs no caf/send.hpp.

#include "agentvisor/io.hpp"

namespace agentvisor::io::detail {

/// caf::anon_send(to, msg); a null `to` is ignored.
void post(const caf::actor& to, io_failed msg);
void post(const caf::actor& to, process_started msg);
void post(const caf::actor& to, process_exited msg);
void post(const caf::actor& to, timer_fired msg);
void post(const caf::actor& to, fd_ready msg);
void post(const caf::actor& to, signal_received msg);
void post(const caf::actor& to, tcp_listening msg);
void post(const caf::actor& to, tcp_accepted msg);
void post(const caf::actor& to, tcp_connected msg);
void post(const caf::actor& to, stream_data msg);
void post(const caf::actor& to, stream_line msg);
void post(const caf::actor& to, stream_closed msg);

} // namespace agentvisor::io::detail

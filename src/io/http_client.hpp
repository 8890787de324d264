#pragma once
/// HTTP/1.1 for clients: request encoding and an incremental response parser
/// over http-parser (HTTP_RESPONSE mode), and the `http://HOST:PORT` URLs the
/// CLI takes. Plain C++ (no CAF, no libuv): whoever owns the connection (the
/// remote chaos transport, over io_thread::connect_tcp) feeds it the bytes.
///
/// The parser reads responses with a Content-Length, chunked responses and
/// responses delimited by the connection's end (finish() completes those);
/// several responses in one feed (keep-alive) come out in order. A response
/// cut short by the end of the connection is an error, never a short body.
/// It assumes no request was HEAD (a HEAD answer carries no body).

#include "agentvisor/error.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace agentvisor::http {

/// A request to send.
struct client_request {
  std::string method = "GET";
  std::string target = "/"; ///< path and query, as sent
  std::string host;         ///< the Host header ("127.0.0.1:7878")
  /// Extra headers (Authorization, ...), written as given.
  std::vector<std::pair<std::string, std::string>> headers;
  /// Sent with Content-Type: application/json and its Content-Length when
  /// not empty (a POST or PUT always gets a Content-Length).
  std::string body;
  bool keep_alive = false; ///< false: Connection: close
};

/// Request line, Host, the extra headers, Content-Type and Content-Length
/// (when there is a body, or for POST/PUT), Connection, the body.
std::string encode(const client_request& r);

/// One complete response.
struct client_response {
  int status = 0;
  /// Names lowercased, values trimmed, in arrival order.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body; ///< de-chunked
  bool keep_alive = false;

  /// The first value of header `lowercase_name`, if present.
  const std::string* header(std::string_view lowercase_name) const noexcept;
};

struct response_feed {
  std::vector<client_response> responses;
  /// Set once (malformed input, a body over the limit); nothing more is
  /// parsed afterwards.
  std::optional<std::string> error;
};

class response_parser {
public:
  explicit response_parser(uint64_t max_body_bytes = 64 << 20);
  ~response_parser();
  response_parser(response_parser&&) noexcept;
  response_parser& operator=(response_parser&&) noexcept;
  response_parser(const response_parser&) = delete;
  response_parser& operator=(const response_parser&) = delete;

  /// Parses the next bytes of the connection.
  response_feed feed(std::string_view bytes);

  /// The connection ended: completes a response delimited by the end, or
  /// reports a response cut short ("truncated response: ...").
  response_feed finish();

  /// A response has begun and is not complete.
  bool in_response() const noexcept;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// `http://HOST:PORT[/prefix]`: HOST an IPv4 literal, `[IPv6]` or
/// `localhost` (taken as 127.0.0.1); PORT defaults to 80. https is refused.
/// The prefix (without a trailing slash) goes before every route.
struct url {
  std::string host; ///< a literal, no brackets
  uint16_t port = 80;
  std::string prefix;
  /// "127.0.0.1:7878" or "[::1]:7878" for the Host header.
  std::string authority() const;
};
result<url> parse_url(std::string_view text);

} // namespace agentvisor::http

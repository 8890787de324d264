#pragma once
/// HTTP/1.1 for the control API: an incremental request parser over
/// http-parser and a response serializer. Plain C++ (no CAF, no libuv): the
/// api actor feeds it the bytes of one connection as they arrive.
///
/// The parser handles keep-alive and pipelining (several requests in one
/// feed, or one request split at any byte), chunked bodies, and the limits
/// that keep a peer from making us buffer without bound: the header section
/// (431) and the body (413, decided from Content-Length before any body
/// byte is read, or as chunks arrive). Malformed input is a 400 naming
/// http-parser's error (HPE_...); a method http-parser does not know is 501.
/// After an error, or after a request that does not keep the connection
/// alive, the parser ignores everything else: the caller answers and closes.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace agentvisor::http {

/// One complete request.
struct request {
  std::string method; ///< "GET", "POST", ... as sent
  std::string path;   ///< the target up to '?', not percent-decoded
  std::string query;  ///< after '?', without it; empty when absent
  /// In arrival order, names lowercased, values with surrounding blanks
  /// trimmed; a repeated header appears once per occurrence.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool keep_alive = true;
  bool head = false; ///< method HEAD: the response carries no body

  /// The first value of header `lowercase_name`, if present.
  const std::string* header(std::string_view lowercase_name) const noexcept;
};

/// Why the input cannot be served; `status` is the answer to send (400,
/// 413, 431, 501) before closing.
struct parse_error {
  int status = 400;
  std::string message;
};

struct limits {
  /// Request line plus header fields.
  std::size_t max_header_bytes = 16 * 1024;
  uint64_t max_body_bytes = 1 << 20;
};

/// What one feed() produced.
struct feed_result {
  /// Requests completed by these bytes, in order.
  std::vector<request> requests;
  /// Set once; requests completed before it are still valid.
  std::optional<parse_error> error;
  /// Requests that announced `Expect: 100-continue` with an acceptable body
  /// size: the caller may send "100 Continue" (see continue_response()).
  std::size_t continues = 0;
};

class request_parser {
public:
  explicit request_parser(limits lim = {});
  ~request_parser();
  request_parser(request_parser&&) noexcept;
  request_parser& operator=(request_parser&&) noexcept;
  request_parser(const request_parser&) = delete;
  request_parser& operator=(const request_parser&) = delete;

  /// Parses `bytes`, the next bytes of the connection.
  feed_result feed(std::string_view bytes);

  /// True while a request has started (some of its bytes arrived) but is
  /// not complete: what an idle timeout must not mistake for quiet.
  bool in_request() const noexcept;

  /// True after an error or a request without keep-alive: nothing more will
  /// be parsed on this connection.
  bool done() const noexcept;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// The standard reason phrase ("Not Found"), or "Unknown".
std::string_view reason_phrase(int status) noexcept;

/// A response to serialize.
struct response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  /// Extra headers (Allow, WWW-Authenticate, ...), written as given.
  std::vector<std::pair<std::string, std::string>> headers;
};

/// Status line, the extra headers, Content-Type (when there is a body),
/// Content-Length, Connection (keep-alive or close), then the body unless
/// `head` (HEAD: the same headers, no body).
std::string serialize(const response& r, bool keep_alive, bool head = false);

/// "HTTP/1.1 100 Continue\r\n\r\n".
std::string_view continue_response() noexcept;

} // namespace agentvisor::http

// HTTP/1.1 request parsing over http-parser 2.9, and response writing.
//
// http-parser drives callbacks with pieces of the input: a URL or header
// may arrive in several pieces across feeds, so every piece is appended and
// a header is complete only when the next field (or the end of the header
// section) begins.

#include "http.hpp"

#include <http_parser.h>

#include <algorithm>
#include <cctype>

namespace agentvisor::http {

const std::string* request::header(std::string_view lowercase_name) const noexcept {
  for (const auto& [name, value] : headers)
    if (name == lowercase_name)
      return &value;
  return nullptr;
}

namespace {

// CRLF and ": " of each header line, which the callbacks never see but the
// peer made us read.
constexpr std::size_t header_line_overhead = 4;

std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

bool iequals(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size()
         && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
              return std::tolower(static_cast<unsigned char>(x))
                     == std::tolower(static_cast<unsigned char>(y));
            });
}

} // namespace

struct request_parser::impl {
  http_parser parser{};
  http_parser_settings settings{};
  limits lim;
  request cur;
  std::string url;
  std::string field;
  std::string value;
  bool in_value = false;
  std::size_t header_bytes = 0;
  bool in_msg = false;
  bool done = false;
  feed_result* out = nullptr;
  /// Set by a callback before it fails the parse with a status of ours.
  std::optional<parse_error> own_error;

  explicit impl(limits l) : lim(l) {
    http_parser_init(&parser, HTTP_REQUEST);
    parser.data = this;
    settings.on_message_begin = on_message_begin;
    settings.on_url = on_url;
    settings.on_header_field = on_header_field;
    settings.on_header_value = on_header_value;
    settings.on_headers_complete = on_headers_complete;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;
  }

  static impl& self(http_parser* p) {
    return *static_cast<impl*>(p->data);
  }

  int fail(int status, std::string message) {
    own_error = parse_error{status, std::move(message)};
    return 1; // any non-zero return makes http-parser stop with HPE_CB_*
  }

  int count_header_bytes(std::size_t n) {
    header_bytes += n;
    if (header_bytes > lim.max_header_bytes)
      return fail(431, "request header section over " + std::to_string(lim.max_header_bytes)
                         + " bytes");
    return 0;
  }

  void flush_header() {
    if (field.empty() && value.empty())
      return;
    std::transform(field.begin(), field.end(), field.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    cur.headers.emplace_back(std::move(field), std::string{trim(value)});
    field.clear();
    value.clear();
    in_value = false;
  }

  static int on_message_begin(http_parser* p) {
    auto& s = self(p);
    s.cur = request{};
    s.url.clear();
    s.field.clear();
    s.value.clear();
    s.in_value = false;
    s.header_bytes = 0;
    s.in_msg = true;
    return 0;
  }

  static int on_url(http_parser* p, const char* at, std::size_t n) {
    auto& s = self(p);
    s.url.append(at, n);
    return s.count_header_bytes(n);
  }

  static int on_header_field(http_parser* p, const char* at, std::size_t n) {
    auto& s = self(p);
    if (s.in_value)
      s.flush_header();
    s.field.append(at, n);
    return s.count_header_bytes(n + (s.field.size() == n ? header_line_overhead : 0));
  }

  static int on_header_value(http_parser* p, const char* at, std::size_t n) {
    auto& s = self(p);
    s.in_value = true;
    s.value.append(at, n);
    return s.count_header_bytes(n);
  }

  static int on_headers_complete(http_parser* p) {
    auto& s = self(p);
    s.flush_header();
    auto q = s.url.find('?');
    s.cur.path = s.url.substr(0, q);
    if (q != std::string::npos)
      s.cur.query = s.url.substr(q + 1);
    s.cur.method = http_method_str(static_cast<http_method>(p->method));
    s.cur.head = p->method == HTTP_HEAD;
    // Refuse an oversized body before reading any of it.
    if ((p->flags & F_CONTENTLENGTH) != 0 && p->content_length > s.lim.max_body_bytes) {
      s.fail(413, "request body of " + std::to_string(p->content_length) + " bytes is over "
                    + std::to_string(s.lim.max_body_bytes) + " bytes");
      return -1; // 0, 1 and 2 mean "go on"; anything else fails the parse
    }
    auto* expect = s.cur.header("expect");
    if (expect != nullptr && iequals(*expect, "100-continue"))
      ++s.out->continues;
    return 0;
  }

  static int on_body(http_parser* p, const char* at, std::size_t n) {
    auto& s = self(p);
    // Chunked bodies have no Content-Length: count as they come.
    if (s.cur.body.size() + n > s.lim.max_body_bytes)
      return s.fail(413, "request body is over " + std::to_string(s.lim.max_body_bytes)
                           + " bytes");
    s.cur.body.append(at, n);
    return 0;
  }

  static int on_message_complete(http_parser* p) {
    auto& s = self(p);
    s.cur.keep_alive = http_should_keep_alive(p) != 0;
    s.in_msg = false;
    s.out->requests.push_back(std::move(s.cur));
    s.cur = request{};
    if (!s.out->requests.back().keep_alive) {
      // Nothing after a closing request is served; stop here.
      s.done = true;
      http_parser_pause(p, 1);
    }
    return 0;
  }

  feed_result feed(std::string_view bytes) {
    feed_result r;
    // An empty feed would tell http-parser "EOF".
    if (done || bytes.empty())
      return r;
    out = &r;
    http_parser_execute(&parser, &settings, bytes.data(), bytes.size());
    out = nullptr;
    if (done)
      return r;
    if (parser.upgrade != 0) {
      // CONNECT or Upgrade: we speak nothing but HTTP/1.1; answer what
      // completed, then close.
      done = true;
      if (!r.requests.empty())
        r.requests.back().keep_alive = false;
      else
        r.error = parse_error{400, "protocol upgrade is not supported"};
      return r;
    }
    auto err = HTTP_PARSER_ERRNO(&parser);
    if (err == HPE_OK)
      return r;
    done = true;
    if (own_error) {
      r.error = std::move(own_error);
    } else if (err == HPE_INVALID_METHOD) {
      r.error = parse_error{501, std::string{"unknown method ("} + http_errno_name(err) + ")"};
    } else if (err == HPE_HEADER_OVERFLOW) {
      r.error = parse_error{431, std::string{"request header section too large ("}
                                   + http_errno_name(err) + ")"};
    } else {
      r.error = parse_error{400, std::string{"malformed request: "} + http_errno_name(err)
                                   + " (" + http_errno_description(err) + ")"};
    }
    return r;
  }
};

request_parser::request_parser(limits lim) : impl_(std::make_unique<impl>(lim)) {
}

request_parser::~request_parser() = default;
request_parser::request_parser(request_parser&&) noexcept = default;
request_parser& request_parser::operator=(request_parser&&) noexcept = default;

feed_result request_parser::feed(std::string_view bytes) {
  return impl_->feed(bytes);
}

bool request_parser::in_request() const noexcept {
  return impl_->in_msg;
}

bool request_parser::done() const noexcept {
  return impl_->done;
}

std::string_view reason_phrase(int status) noexcept {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
  }
}

std::string serialize(const response& r, bool keep_alive, bool head) {
  std::string out;
  out.reserve(128 + r.body.size());
  out += "HTTP/1.1 ";
  out += std::to_string(r.status);
  out += ' ';
  out += reason_phrase(r.status);
  out += "\r\n";
  for (const auto& [name, value] : r.headers) {
    out += name;
    out += ": ";
    out += value;
    out += "\r\n";
  }
  if (!r.body.empty() && !r.content_type.empty()) {
    out += "Content-Type: ";
    out += r.content_type;
    out += "\r\n";
  }
  out += "Content-Length: ";
  out += std::to_string(r.body.size());
  out += "\r\nConnection: ";
  out += keep_alive ? "keep-alive" : "close";
  out += "\r\n\r\n";
  if (!head)
    out += r.body;
  return out;
}

std::string_view continue_response() noexcept {
  return "HTTP/1.1 100 Continue\r\n\r\n";
}

} // namespace agentvisor::http

// HTTP/1.1 client side (http_client.hpp): request encoding and response
// parsing over http-parser 2.9 in HTTP_RESPONSE mode.
//
// As in the request parser (http.cpp), headers arrive in pieces across
// feeds: a header is complete only when the next field (or the end of the
// header section) begins.

#include "http_client.hpp"

#include <http_parser.h>

#include <algorithm>
#include <cctype>
#include <charconv>

namespace agentvisor::http {

namespace {

std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

} // namespace

std::string encode(const client_request& r) {
  std::string out;
  out.reserve(128 + r.body.size());
  out += r.method;
  out += ' ';
  out += r.target.empty() ? std::string{"/"} : r.target;
  out += " HTTP/1.1\r\nHost: ";
  out += r.host;
  out += "\r\n";
  for (const auto& [name, value] : r.headers) {
    out += name;
    out += ": ";
    out += value;
    out += "\r\n";
  }
  if (!r.body.empty())
    out += "Content-Type: application/json\r\n";
  if (!r.body.empty() || r.method == "POST" || r.method == "PUT") {
    out += "Content-Length: ";
    out += std::to_string(r.body.size());
    out += "\r\n";
  }
  out += r.keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
  out += r.body;
  return out;
}

const std::string* client_response::header(std::string_view lowercase_name) const noexcept {
  for (const auto& [name, value] : headers)
    if (name == lowercase_name)
      return &value;
  return nullptr;
}

struct response_parser::impl {
  http_parser parser{};
  http_parser_settings settings{};
  uint64_t max_body;
  client_response cur;
  std::string field;
  std::string value;
  bool in_value = false;
  bool in_msg = false;
  bool failed = false;
  response_feed* out = nullptr;
  std::optional<std::string> own_error;

  explicit impl(uint64_t m) : max_body(m) {
    http_parser_init(&parser, HTTP_RESPONSE);
    parser.data = this;
    settings.on_message_begin = [](http_parser* p) {
      auto& s = self(p);
      s.cur = client_response{};
      s.field.clear();
      s.value.clear();
      s.in_value = false;
      s.in_msg = true;
      return 0;
    };
    settings.on_header_field = [](http_parser* p, const char* at, std::size_t n) {
      auto& s = self(p);
      if (s.in_value)
        s.flush_header();
      s.field.append(at, n);
      return 0;
    };
    settings.on_header_value = [](http_parser* p, const char* at, std::size_t n) {
      auto& s = self(p);
      s.in_value = true;
      s.value.append(at, n);
      return 0;
    };
    settings.on_headers_complete = [](http_parser* p) {
      auto& s = self(p);
      s.flush_header();
      s.cur.status = static_cast<int>(p->status_code);
      if ((p->flags & F_CONTENTLENGTH) != 0 && p->content_length > s.max_body) {
        s.own_error = "response body of " + std::to_string(p->content_length)
                      + " bytes is over " + std::to_string(s.max_body) + " bytes";
        return -1;
      }
      return 0;
    };
    settings.on_body = [](http_parser* p, const char* at, std::size_t n) {
      auto& s = self(p);
      if (s.cur.body.size() + n > s.max_body) {
        s.own_error = "response body is over " + std::to_string(s.max_body) + " bytes";
        return 1;
      }
      s.cur.body.append(at, n);
      return 0;
    };
    settings.on_message_complete = [](http_parser* p) {
      auto& s = self(p);
      s.cur.keep_alive = http_should_keep_alive(p) != 0;
      s.in_msg = false;
      s.out->responses.push_back(std::move(s.cur));
      s.cur = client_response{};
      return 0;
    };
  }

  static impl& self(http_parser* p) {
    return *static_cast<impl*>(p->data);
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

  /// `bytes` empty: the end of the connection.
  response_feed run(std::string_view bytes) {
    response_feed r;
    if (failed)
      return r;
    bool eof = bytes.empty();
    bool was_in_msg = in_msg;
    out = &r;
    http_parser_execute(&parser, &settings, bytes.data(), bytes.size());
    out = nullptr;
    auto err = HTTP_PARSER_ERRNO(&parser);
    if (eof && in_msg) {
      failed = true;
      r.error = "truncated response: the connection ended "
                + std::string{was_in_msg ? "inside a response" : "before a response"}
                + (cur.status != 0 ? " (status " + std::to_string(cur.status) + ", "
                                       + std::to_string(cur.body.size()) + " body bytes read)"
                                   : std::string{});
      return r;
    }
    if (err == HPE_OK)
      return r;
    failed = true;
    if (own_error)
      r.error = std::move(*own_error);
    else
      r.error = std::string{"malformed response: "} + http_errno_name(err) + " ("
                + http_errno_description(err) + ")";
    return r;
  }
};

response_parser::response_parser(uint64_t max_body_bytes)
  : impl_(std::make_unique<impl>(max_body_bytes)) {
}
response_parser::~response_parser() = default;
response_parser::response_parser(response_parser&&) noexcept = default;
response_parser& response_parser::operator=(response_parser&&) noexcept = default;

response_feed response_parser::feed(std::string_view bytes) {
  if (bytes.empty())
    return {}; // an empty feed would tell http-parser "EOF"
  return impl_->run(bytes);
}

response_feed response_parser::finish() {
  return impl_->run({});
}

bool response_parser::in_response() const noexcept {
  return impl_->in_msg;
}

std::string url::authority() const {
  auto h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return h + ":" + std::to_string(port);
}

result<url> parse_url(std::string_view text) {
  auto bad = [&](std::string why) {
    return error{"URL \"" + std::string{text} + "\": " + std::move(why)};
  };
  constexpr std::string_view scheme = "http://";
  if (text.rfind("https://", 0) == 0)
    return bad("https is not supported (the API speaks plain HTTP on loopback)");
  if (text.rfind(scheme, 0) != 0)
    return bad("expected http://HOST:PORT");
  auto rest = text.substr(scheme.size());
  auto slash = rest.find('/');
  auto authority = rest.substr(0, slash);
  url u;
  if (slash != std::string_view::npos) {
    u.prefix = std::string{rest.substr(slash)};
    while (!u.prefix.empty() && u.prefix.back() == '/')
      u.prefix.pop_back();
  }
  std::string_view port_text;
  if (!authority.empty() && authority.front() == '[') {
    auto close = authority.find(']');
    if (close == std::string_view::npos)
      return bad("unclosed '[' in the host");
    u.host = std::string{authority.substr(1, close - 1)};
    auto after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':')
        return bad("expected ':' after ']'");
      port_text = after.substr(1);
    }
  } else {
    auto colon = authority.rfind(':');
    u.host = std::string{authority.substr(0, colon)};
    if (colon != std::string_view::npos)
      port_text = authority.substr(colon + 1);
  }
  if (u.host.empty())
    return bad("no host");
  if (u.host == "localhost")
    u.host = "127.0.0.1";
  if (!port_text.empty()) {
    unsigned p = 0;
    auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), p);
    if (ec != std::errc{} || end != port_text.data() + port_text.size() || p == 0 || p > 65535)
      return bad("port \"" + std::string{port_text} + "\" is not in 1..65535");
    u.port = static_cast<uint16_t>(p);
  }
  return u;
}

} // namespace agentvisor::http

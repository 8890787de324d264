// The HTTP/1.1 client half (src/io/http_client.hpp): request encoding,
// response parsing (Content-Length, chunked, until EOF, keep-alive, split at
// every byte), truncated and malformed responses, and URLs.

#include "io/http_client.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace agentvisor::http;

namespace {

/// Feeds `bytes` in pieces of `step` bytes (0: all at once), then finish().
response_feed parse_all(const std::string& bytes, std::size_t step = 0) {
  response_parser p;
  response_feed all;
  auto take = [&](response_feed f) {
    for (auto& r : f.responses)
      all.responses.push_back(std::move(r));
    if (f.error && !all.error)
      all.error = f.error;
  };
  if (step == 0) {
    take(p.feed(bytes));
  } else {
    for (std::size_t i = 0; i < bytes.size(); i += step)
      take(p.feed(std::string_view{bytes}.substr(i, step)));
  }
  take(p.finish());
  return all;
}

} // namespace

TEST_CASE("encode writes the request line, Host, headers, a JSON body and Connection") {
  client_request r;
  r.method = "POST";
  r.target = "/v1/agents?x=1";
  r.host = "127.0.0.1:7878";
  r.headers.emplace_back("Authorization", "Bearer t0k");
  r.body = R"({"name":"a"})";
  auto s = encode(r);
  CHECK(s == "POST /v1/agents?x=1 HTTP/1.1\r\nHost: 127.0.0.1:7878\r\n"
             "Authorization: Bearer t0k\r\nContent-Type: application/json\r\n"
             "Content-Length: 12\r\nConnection: close\r\n\r\n{\"name\":\"a\"}");
  client_request g;
  g.host = "h";
  g.keep_alive = true;
  CHECK(encode(g) == "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n");
  client_request empty_post;
  empty_post.method = "POST";
  empty_post.host = "h";
  CHECK(encode(empty_post).find("Content-Length: 0\r\n") != std::string::npos);
}

TEST_CASE("a Content-Length response parses at every split size") {
  std::string wire = "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                     "X-Thing:   spaced  \r\nContent-Length: 11\r\nConnection: close\r\n\r\n"
                     "{\"id\":\"a\"}\n";
  for (std::size_t step : {0, 1, 2, 3, 7, 50}) {
    CAPTURE(step);
    auto f = parse_all(wire, step);
    REQUIRE_FALSE(f.error);
    REQUIRE(f.responses.size() == 1);
    CHECK(f.responses[0].status == 201);
    CHECK(f.responses[0].body == "{\"id\":\"a\"}\n");
    REQUIRE(f.responses[0].header("x-thing") != nullptr);
    CHECK(*f.responses[0].header("x-thing") == "spaced");
    CHECK_FALSE(f.responses[0].keep_alive);
  }
}

TEST_CASE("a chunked response is de-chunked, trailers and all") {
  std::string wire = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "5\r\nhello\r\n1;ext=1\r\n \r\nB\r\nchunked wor\r\n2\r\nld\r\n0\r\n"
                     "X-Trailer: t\r\n\r\n";
  for (std::size_t step : {0, 1, 4}) {
    CAPTURE(step);
    auto f = parse_all(wire, step);
    REQUIRE_FALSE(f.error);
    REQUIRE(f.responses.size() == 1);
    CHECK(f.responses[0].status == 200);
    CHECK(f.responses[0].body == "hello chunked world");
    CHECK(f.responses[0].keep_alive);
  }
}

TEST_CASE("keep-alive responses in one feed come out in order") {
  std::string wire = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"
                     "HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nbc"
                     "HTTP/1.1 204 No Content\r\n\r\n";
  auto f = parse_all(wire);
  REQUIRE_FALSE(f.error);
  REQUIRE(f.responses.size() == 3);
  CHECK(f.responses[0].body == "a");
  CHECK(f.responses[1].status == 404);
  CHECK(f.responses[1].body == "bc");
  CHECK(f.responses[2].status == 204);
  CHECK(f.responses[2].body.empty());
}

TEST_CASE("a response without length ends with the connection") {
  auto f = parse_all("HTTP/1.0 200 OK\r\n\r\nuntil the end");
  REQUIRE_FALSE(f.error);
  REQUIRE(f.responses.size() == 1);
  CHECK(f.responses[0].body == "until the end");
}

TEST_CASE("a truncated response is an error, never a short body") {
  SUBCASE("inside a Content-Length body") {
    auto f = parse_all("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort");
    CHECK(f.responses.empty());
    REQUIRE(f.error);
    CHECK(f.error->find("truncated") != std::string::npos);
    CHECK(f.error->find("status 200") != std::string::npos);
  }
  SUBCASE("inside a chunked body") {
    auto f = parse_all("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel");
    CHECK(f.responses.empty());
    REQUIRE(f.error);
    CHECK(f.error->find("truncated") != std::string::npos);
  }
  SUBCASE("inside the headers") {
    auto f = parse_all("HTTP/1.1 200 OK\r\nContent-Le");
    CHECK(f.responses.empty());
    REQUIRE(f.error);
    CHECK(f.error->find("truncated") != std::string::npos);
  }
  SUBCASE("nothing at all is no response and no error") {
    auto f = parse_all("");
    CHECK(f.responses.empty());
    CHECK_FALSE(f.error);
  }
}

TEST_CASE("malformed and oversized responses are errors") {
  auto f = parse_all("HTTP/1.1 abc OK\r\n\r\n");
  REQUIRE(f.error);
  CHECK(f.error->find("malformed response: HPE_") != std::string::npos);
  response_parser small(4);
  auto g = small.feed("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
  REQUIRE(g.error);
  CHECK(g.error->find("over 4 bytes") != std::string::npos);
  response_parser chunks(4);
  auto h = chunks.feed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
  REQUIRE(h.error);
  // Nothing is parsed after an error.
  CHECK(chunks.feed("HTTP/1.1 200 OK\r\n\r\n").responses.empty());
}

TEST_CASE("parse_url takes http://HOST:PORT with IPv4, [IPv6] or localhost") {
  auto a = parse_url("http://127.0.0.1:7878");
  REQUIRE(a);
  CHECK(a->host == "127.0.0.1");
  CHECK(a->port == 7878);
  CHECK(a->prefix.empty());
  CHECK(a->authority() == "127.0.0.1:7878");
  auto b = parse_url("http://[::1]:9/api/");
  REQUIRE(b);
  CHECK(b->host == "::1");
  CHECK(b->port == 9);
  CHECK(b->prefix == "/api");
  CHECK(b->authority() == "[::1]:9");
  auto c = parse_url("http://localhost");
  REQUIRE(c);
  CHECK(c->host == "127.0.0.1");
  CHECK(c->port == 80);
  CHECK_FALSE(parse_url("https://x:1"));
  CHECK(parse_url("https://x:1").err().message.find("https") != std::string::npos);
  CHECK_FALSE(parse_url("127.0.0.1:7878"));
  CHECK_FALSE(parse_url("http://h:0"));
  CHECK_FALSE(parse_url("http://h:99999"));
  CHECK_FALSE(parse_url("http://:80"));
}

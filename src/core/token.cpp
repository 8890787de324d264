// The API token: configured file, or generated once into the state dir.

#include "agentvisor/token.hpp"
#include "agentvisor/small_file.hpp"

#include <cerrno>
#include <cstddef>
#include <filesystem>
#include <system_error>

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

namespace agentvisor {
namespace {

constexpr std::size_t token_bytes = 32;
constexpr std::size_t max_token_file_bytes = 4096;

/// The trimmed content of `path`; errors name it.
result<std::string> read_token_file(const std::string& path) {
  auto text = read_small_file(path, max_token_file_bytes, "API token file");
  if (!text)
    return std::move(text.err());
  auto token = trim_space(*text);
  if (token.empty())
    return error{"API token file " + path + " is empty"};
  for (char c : token)
    if (c <= ' ' || c == 0x7f)
      return error{"API token file " + path
                   + " holds whitespace or control characters inside the token"};
  return std::string{token};
}

result<void> write_all(int fd, std::string_view s, const std::string& path) {
  while (!s.empty()) {
    auto n = ::write(fd, s.data(), s.size());
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return error::from_errno("cannot write API token file " + path, errno);
    s.remove_prefix(static_cast<std::size_t>(n));
  }
  if (::fsync(fd) != 0)
    return error::from_errno("cannot sync API token file " + path, errno);
  return {};
}

/// Writes `token` to a fresh 0600 file and links it to `path`; EEXIST from
/// link() means another start won the race, which is fine.
result<bool> create_token_file(const std::string& path, const std::string& token) {
  auto tmp = path + ".tmp." + std::to_string(::getpid());
  ::unlink(tmp.c_str()); // a leftover of ours from a crash
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0)
    return error::from_errno("cannot create API token file " + tmp, errno);
  // The umask can only remove bits; 0600 is what we asked, so nothing to fix.
  auto written = write_all(fd, token + "\n", tmp);
  ::close(fd);
  if (!written) {
    ::unlink(tmp.c_str());
    return std::move(written).err();
  }
  int rc = ::link(tmp.c_str(), path.c_str());
  int err = errno;
  ::unlink(tmp.c_str());
  if (rc == 0)
    return true;
  if (err == EEXIST)
    return false;
  return error::from_errno("cannot create API token file " + path, err);
}

} // namespace

result<std::string> generate_token() {
  unsigned char raw[token_bytes];
  std::size_t got = 0;
  while (got < sizeof raw) {
    auto n = ::getrandom(raw + got, sizeof raw - got, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return error::from_errno("getrandom", errno);
    got += static_cast<std::size_t>(n);
  }
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * sizeof raw);
  for (unsigned char b : raw) {
    out += hex[b >> 4];
    out += hex[b & 0xf];
  }
  return out;
}

result<api_token> load_or_create_token(const std::string& token_file,
                                       const std::string& state_dir) {
  if (!token_file.empty()) {
    auto value = read_token_file(token_file);
    if (!value)
      return std::move(value).err();
    return api_token{std::move(*value), token_file, false};
  }
  std::error_code ec;
  std::filesystem::create_directories(state_dir, ec);
  if (ec)
    return error{"cannot create state directory " + state_dir + ": " + ec.message()};
  auto path = state_dir + "/api.token";
  bool generated = false;
  struct stat st{};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno != ENOENT)
      return error::from_errno("cannot read API token file " + path, errno);
    auto token = generate_token();
    if (!token)
      return std::move(token).err();
    auto created = create_token_file(path, *token);
    if (!created)
      return std::move(created).err();
    generated = *created;
  } else if ((st.st_mode & 077) != 0) {
    // A token others can read is no secret: refuse rather than serve it.
    return error{"API token file " + path + " is readable by group or others; chmod 600 it"};
  }
  auto value = read_token_file(path);
  if (!value)
    return std::move(value).err();
  return api_token{std::move(*value), path, generated};
}

bool token_equals(std::string_view a, std::string_view b) noexcept {
  // Length is not secret (tokens are fixed size); contents are.
  if (a.size() != b.size())
    return false;
  unsigned char diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  // volatile keeps the compiler from turning the loop into an early exit.
  volatile unsigned char sink = diff;
  return sink == 0;
}

std::string_view bearer_token(std::string_view authorization) noexcept {
  constexpr std::string_view scheme = "bearer ";
  if (authorization.size() <= scheme.size())
    return {};
  for (std::size_t i = 0; i < scheme.size(); ++i) {
    char c = authorization[i];
    if (c >= 'A' && c <= 'Z')
      c = static_cast<char>(c - 'A' + 'a');
    if (c != scheme[i])
      return {};
  }
  auto token = trim_space(authorization.substr(scheme.size()));
  return token;
}

} // namespace agentvisor

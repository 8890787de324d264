// GCC 12 with sanitizers reports -Wmaybe-uninitialized inside libstdc++'s
// std::regex compiler (std::function in _State); the pragma covers the lines
// of the headers only, our code below is checked as usual.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <functional>
#include <regex>
#pragma GCC diagnostic pop

#include "tools.hpp"

#include "agentvisor/json.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cerrno>
#include <cstring>
#include <optional>
#include <vector>

namespace agentvisor::guest {

// --- arguments ------------------------------------------------------------------

tool_error tool_args::invalid(std::string_view name, std::string_view what) {
  std::string m;
  m.reserve(name.size() + what.size() + 16);
  m += "argument \"";
  m += name;
  m += "\": ";
  m += what;
  return tool_error{tool_errc::invalid_args, std::move(m)};
}

bool tool_args::find(std::string_view name, simdjson::dom::element& out) const {
  return obj_.at_key(name).get(out) == simdjson::SUCCESS;
}

bool tool_args::has(std::string_view name) const {
  simdjson::dom::element e;
  return find(name, e);
}

status tool_args::get(std::string_view name, std::string_view& out, bool required) const {
  simdjson::dom::element e;
  if (!find(name, e)) return required ? status{invalid(name, "missing")} : std::nullopt;
  if (e.get_string().get(out)) return invalid(name, "expected a string");
  return std::nullopt;
}

status tool_args::get(std::string_view name, uint64_t& out, bool required) const {
  simdjson::dom::element e;
  if (!find(name, e)) return required ? status{invalid(name, "missing")} : std::nullopt;
  if (e.get_uint64().get(out)) return invalid(name, "expected an unsigned integer");
  return std::nullopt;
}

status tool_args::get(std::string_view name, bool& out, bool required) const {
  simdjson::dom::element e;
  if (!find(name, e)) return required ? status{invalid(name, "missing")} : std::nullopt;
  if (e.get_bool().get(out)) return invalid(name, "expected a boolean");
  return std::nullopt;
}

#define AV_TRY(expr)                                                           \
  if (auto av_st_ = (expr)) return av_st_

// --- base64 ---------------------------------------------------------------------

bool base64_decode(std::string_view in, std::string& out) {
  static constexpr std::array<int8_t, 256> table = [] {
    std::array<int8_t, 256> t{};
    t.fill(-1);
    constexpr char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 64; ++i) t[static_cast<unsigned char>(alphabet[i])] = static_cast<int8_t>(i);
    return t;
  }();
  while (!in.empty() && in.back() == '=') in.remove_suffix(1);
  if (in.size() % 4 == 1) return false;
  out.clear();
  out.reserve(in.size() / 4 * 3 + 3);
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : in) {
    int8_t v = table[c];
    if (v < 0) return false;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFF);
    }
  }
  return true;
}

// --- helpers --------------------------------------------------------------------

namespace {

/// pread until `want` bytes or end of file; returns the count or -errno.
ssize_t read_fully(int fd, char* buf, std::size_t want, uint64_t offset) {
  std::size_t got = 0;
  while (got < want) {
    ssize_t n = ::pread(fd, buf + got, want - got, static_cast<off_t>(offset + got));
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  return static_cast<ssize_t>(got);
}

/// How many trailing bytes of `s` form an incomplete UTF-8 sequence (0..3).
std::size_t incomplete_utf8_tail(std::string_view s) noexcept {
  std::size_t n = s.size();
  for (std::size_t back = 1; back <= 3 && back <= n; ++back) {
    auto c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue; // continuation: look further back
    std::size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return len > back ? back : 0;
  }
  return 0;
}

const char* type_name(mode_t m) noexcept {
  if (S_ISREG(m)) return "file";
  if (S_ISDIR(m)) return "dir";
  if (S_ISLNK(m)) return "symlink";
  return "other";
}

} // namespace

// --- read_file ------------------------------------------------------------------

status read_file(const workspace& ws, const tool_args& args, std::string& out, tool_buffers& buf) {
  std::string_view path;
  uint64_t offset = 0;
  uint64_t max_bytes = read_default_bytes;
  AV_TRY(args.get("path", path, true));
  AV_TRY(args.get("offset", offset, false));
  AV_TRY(args.get("max_bytes", max_bytes, false));
  max_bytes = std::min(max_bytes, read_max_bytes);

  auto fd = ws.open_path(path, O_RDONLY | O_NONBLOCK | O_NOCTTY);
  if (!fd) return std::move(fd.err());
  struct stat st {};
  if (::fstat(fd->get(), &st) != 0) return errno_error(quoted_path(path), errno);
  if (S_ISDIR(st.st_mode))
    return tool_error{tool_errc::invalid_args, quoted_path(path) + " is a directory (use list_directory)"};
  if (!S_ISREG(st.st_mode))
    return tool_error{tool_errc::invalid_args, quoted_path(path) + " is not a regular file"};

  auto size = static_cast<uint64_t>(st.st_size);
  uint64_t want = offset < size ? std::min(max_bytes, size - offset) : 0;
  buf.data.resize(want);
  ssize_t got = read_fully(fd->get(), buf.data.data(), want, offset);
  if (got < 0) return errno_error(quoted_path(path), static_cast<int>(-got));
  std::string_view bytes(buf.data.data(), static_cast<std::size_t>(got));
  bool truncated = offset + bytes.size() < size;

  // Prefer text. A cut through a multi-byte character is moved back to the
  // character's start; the agent continues at offset + bytes.
  bool utf8 = simdjson::validate_utf8(bytes.data(), bytes.size());
  if (!utf8 && truncated) {
    std::size_t tail = incomplete_utf8_tail(bytes);
    if (tail != 0 && tail < bytes.size() &&
        simdjson::validate_utf8(bytes.data(), bytes.size() - tail)) {
      bytes.remove_suffix(tail);
      utf8 = true;
    }
  }
  // Text dense in control characters escapes to more than base64 would.
  if (utf8 && json::escaped_size(bytes) > (bytes.size() + 2) / 3 * 4 + 2) utf8 = false;

  json::writer w(out);
  w.begin_object().key("content");
  if (utf8)
    w.value(bytes);
  else
    w.value_base64(bytes);
  w.field("encoding", utf8 ? "utf8" : "base64")
    .field("size", size)
    .field("bytes", static_cast<uint64_t>(bytes.size()))
    .field("truncated", truncated)
    .end_object();
  return std::nullopt;
}

// --- write_file -----------------------------------------------------------------

status write_file(const workspace& ws, const tool_args& args, std::string& out, tool_buffers& buf) {
  std::string_view path;
  std::string_view content;
  std::string_view encoding = "utf8";
  bool append = false;
  AV_TRY(args.get("path", path, true));
  AV_TRY(args.get("content", content, true));
  AV_TRY(args.get("encoding", encoding, false));
  AV_TRY(args.get("append", append, false));
  if (encoding == "base64") {
    if (!base64_decode(content, buf.data))
      return tool_args::invalid("content", "not valid base64");
    content = buf.data;
  } else if (encoding != "utf8") {
    return tool_args::invalid("encoding", "expected \"utf8\" or \"base64\"");
  }

  auto rel = ws.relative(path);
  if (!rel) return std::move(rel.err());
  int flags = O_WRONLY | O_CREAT | O_NOCTTY | O_NONBLOCK | (append ? O_APPEND : O_TRUNC);
  auto fd = ws.open_relative(*rel, path, flags, 0644);
  if (!fd && fd.err().code == tool_errc::not_found) {
    AV_TRY(ws.make_parents(*rel, path));
    fd = ws.open_relative(*rel, path, flags, 0644);
  }
  if (!fd) return std::move(fd.err());
  struct stat st {};
  if (::fstat(fd->get(), &st) != 0) return errno_error(quoted_path(path), errno);
  if (!S_ISREG(st.st_mode))
    return tool_error{tool_errc::invalid_args, quoted_path(path) + " is not a regular file"};

  std::size_t done = 0;
  while (done < content.size()) {
    ssize_t n = ::write(fd->get(), content.data() + done, content.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error(quoted_path(path) + ": write", errno);
    }
    done += static_cast<std::size_t>(n);
  }
  json::writer(out).begin_object().field("bytes_written", static_cast<uint64_t>(done)).end_object();
  return std::nullopt;
}

// --- list_directory -------------------------------------------------------------

namespace {

/// A DIR* that closes itself.
struct dir_handle {
  DIR* d = nullptr;
  explicit dir_handle(DIR* x) noexcept : d(x) {}
  dir_handle(const dir_handle&) = delete;
  dir_handle& operator=(const dir_handle&) = delete;
  ~dir_handle() {
    if (d) ::closedir(d);
  }
};

/// Opens `fd` (a directory, consumed) for reading.
outcome<DIR*> open_dir(unique_fd fd, std::string_view shown) {
  DIR* d = ::fdopendir(fd.get());
  if (d == nullptr) return errno_error(quoted_path(shown), errno);
  fd.release();
  return d;
}

struct dir_entry {
  std::string name;
  unsigned char type; // DT_*
};

/// Reads every entry except "." and "..", sorted by name.
status read_entries(DIR* d, std::vector<dir_entry>& entries, std::string_view shown) {
  entries.clear();
  while (true) {
    errno = 0;
    dirent* e = ::readdir(d);
    if (e == nullptr) {
      if (errno != 0) return errno_error(quoted_path(shown), errno);
      break;
    }
    std::string_view name(e->d_name);
    if (name == "." || name == "..") continue;
    entries.push_back(dir_entry{std::string(name), e->d_type});
  }
  std::sort(entries.begin(), entries.end(),
            [](const dir_entry& a, const dir_entry& b) { return a.name < b.name; });
  return std::nullopt;
}

} // namespace

status list_directory(const workspace& ws, const tool_args& args, std::string& out, tool_buffers&) {
  std::string_view path = ".";
  AV_TRY(args.get("path", path, false));
  auto fd = ws.open_path(path, O_RDONLY | O_DIRECTORY);
  if (!fd) return std::move(fd.err());
  auto d = open_dir(std::move(*fd), path);
  if (!d) return std::move(d.err());
  dir_handle dir(*d);
  std::vector<dir_entry> entries;
  AV_TRY(read_entries(dir.d, entries, path));

  int dfd = ::dirfd(dir.d);
  const std::size_t start = out.size();
  json::writer w(out);
  w.begin_object().key("entries").begin_array();
  std::size_t n = 0;
  bool full = false;
  for (const auto& e : entries) {
    if (n == list_max_entries) break;
    struct stat st {};
    if (::fstatat(dfd, e.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue; // gone
    const std::size_t mark = out.size();
    w.begin_object()
      .field("name", e.name)
      .field("type", type_name(st.st_mode))
      .field("size", static_cast<uint64_t>(st.st_size))
      .end_object();
    if (out.size() - start > list_max_result_bytes) { // would not fit the line
      out.resize(mark);
      full = true;
      break;
    }
    ++n;
  }
  w.end_array().field("truncated", full || entries.size() > n).end_object();
  return std::nullopt;
}

// --- search ---------------------------------------------------------------------

namespace {

class searcher {
public:
  /// `result_start`: where the result object begins in w's string (the
  /// matches stop before it grows past search_max_result_bytes).
  searcher(std::string_view pattern, const std::regex* re, uint64_t max_results,
           json::writer& w, std::size_t result_start, tool_buffers& buf)
    : pattern_(pattern), re_(re), max_(max_results), w_(w), start_(result_start), buf_(buf),
      deadline_(std::chrono::steady_clock::now() + std::chrono::milliseconds(search_max_ms)) {}

  bool truncated() const noexcept { return truncated_; }

  /// Searches the directory `fd` (consumed), whose path is `path_`.
  status dir(unique_fd fd, std::size_t depth) {
    auto d = open_dir(std::move(fd), path_.empty() ? "." : path_);
    if (!d) return std::move(d.err());
    dir_handle handle(*d);
    std::vector<dir_entry> entries;
    if (read_entries(handle.d, entries, path_)) return std::nullopt; // unreadable: skip
    int dfd = ::dirfd(handle.d);
    for (auto& e : entries) {
      if (done()) break;
      unsigned char type = e.type;
      if (type == DT_UNKNOWN) {
        struct stat st {};
        if (::fstatat(dfd, e.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
        type = S_ISDIR(st.st_mode) ? DT_DIR : S_ISREG(st.st_mode) ? DT_REG : DT_LNK;
      }
      if (type != DT_DIR && type != DT_REG) continue; // symlinks are never followed
      std::size_t saved = path_.size();
      if (!path_.empty()) path_ += '/';
      path_ += e.name;
      // O_NOFOLLOW: an entry swapped for a symlink since readdir fails here.
      if (type == DT_DIR) {
        if (depth < search_max_depth) {
          int cfd = ::openat(dfd, e.name.c_str(),
                             O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
          if (cfd >= 0) AV_TRY(dir(unique_fd(cfd), depth + 1));
        }
      } else {
        int cfd = ::openat(dfd, e.name.c_str(),
                           O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        if (cfd >= 0) AV_TRY(file(unique_fd(cfd)));
      }
      path_.resize(saved);
    }
    return std::nullopt;
  }

  /// Searches the open file `fd` whose path is `path_`.
  status file(unique_fd fd) {
    if (std::chrono::steady_clock::now() > deadline_) {
      truncated_ = true; // out of time: what was found so far
      return std::nullopt;
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
    if (static_cast<uint64_t>(st.st_size) > search_max_file_bytes) return std::nullopt;
    buf_.data.resize(static_cast<std::size_t>(st.st_size));
    ssize_t got = read_fully(fd.get(), buf_.data.data(), buf_.data.size(), 0);
    if (got <= 0) return std::nullopt;
    std::string_view text(buf_.data.data(), static_cast<std::size_t>(got));
    // Binary files (a NUL byte early on, as grep decides) are skipped.
    if (std::memchr(text.data(), '\0', std::min<std::size_t>(text.size(), 8192)) != nullptr)
      return std::nullopt;
    return re_ ? regex_lines(text) : substring(text);
  }

  void set_path(std::string_view p) { path_.assign(p); }

private:
  bool done() const noexcept { return truncated_; }

  /// Records a match on `line` (1-based number `no`); once max_results or
  /// the result's size budget is reached, sets truncated instead.
  void emit(uint64_t no, std::string_view line) {
    if (count_ == max_) {
      truncated_ = true;
      return;
    }
    if (line.size() > search_max_line_text) {
      line = line.substr(0, search_max_line_text);
      line.remove_suffix(incomplete_utf8_tail(line));
    }
    std::string& out = w_.str();
    const std::size_t mark = out.size();
    w_.begin_object().field("path", path_).field("line", no).field("text", line).end_object();
    if (out.size() - start_ > search_max_result_bytes) { // would not fit the line
      out.resize(mark);
      truncated_ = true;
      return;
    }
    ++count_;
  }

  static std::string_view chomp(std::string_view line) noexcept {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    return line;
  }

  status substring(std::string_view text) {
    const char* p = text.data();
    const char* end = p + text.size();
    const char* line_start = p;
    uint64_t line_no = 1;
    while (p < end && !done()) {
      auto* hit = static_cast<const char*>(
        ::memmem(p, static_cast<std::size_t>(end - p), pattern_.data(), pattern_.size()));
      if (hit == nullptr) break;
      // Count the lines between p and the hit.
      for (const char* q = p;;) {
        auto* nl = static_cast<const char*>(std::memchr(q, '\n', static_cast<std::size_t>(hit - q)));
        if (nl == nullptr) break;
        ++line_no;
        line_start = nl + 1;
        q = nl + 1;
      }
      auto* nl = static_cast<const char*>(std::memchr(hit, '\n', static_cast<std::size_t>(end - hit)));
      const char* line_end = nl ? nl : end;
      emit(line_no, chomp(std::string_view(line_start, static_cast<std::size_t>(line_end - line_start))));
      if (nl == nullptr) break;
      p = line_start = nl + 1;
      ++line_no;
    }
    return std::nullopt;
  }

  status regex_lines(std::string_view text) {
    const char* p = text.data();
    const char* end = p + text.size();
    uint64_t line_no = 1;
    try {
      while (p < end && !done()) {
        auto* nl = static_cast<const char*>(std::memchr(p, '\n', static_cast<std::size_t>(end - p)));
        auto line = chomp(std::string_view(p, static_cast<std::size_t>((nl ? nl : end) - p)));
        // libstdc++'s regex recurses per character: very long lines could
        // exhaust the stack, so they are not searched.
        if (line.size() <= search_max_regex_line &&
            std::regex_search(line.begin(), line.end(), *re_))
          emit(line_no, line);
        const char* line_end = nl ? nl : end;
        p = line_end + 1;
        ++line_no;
      }
    } catch (const std::exception& e) {
      return tool_error{tool_errc::invalid_args,
                        "argument \"pattern\": regex failed on " + quoted_path(path_) + ": " + e.what()};
    }
    return std::nullopt;
  }

  std::string_view pattern_;
  const std::regex* re_;
  uint64_t max_;
  json::writer& w_;
  std::size_t start_;
  tool_buffers& buf_;
  std::chrono::steady_clock::time_point deadline_;
  std::string path_;
  uint64_t count_ = 0;
  bool truncated_ = false;
};

} // namespace

status search(const workspace& ws, const tool_args& args, std::string& out, tool_buffers& buf) {
  std::string_view pattern;
  std::string_view path = ".";
  bool use_regex = false;
  uint64_t max_results = search_default_results;
  AV_TRY(args.get("pattern", pattern, true));
  AV_TRY(args.get("path", path, false));
  AV_TRY(args.get("regex", use_regex, false));
  AV_TRY(args.get("max_results", max_results, false));
  if (pattern.empty()) return tool_args::invalid("pattern", "must not be empty");
  if (max_results == 0 || max_results > search_max_results)
    return tool_args::invalid("max_results", "must be between 1 and 10000");
  std::optional<std::regex> re;
  if (use_regex) {
    try {
      re.emplace(pattern.begin(), pattern.end(), std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      return tool_args::invalid("pattern", std::string("not a valid regex: ") + e.what());
    }
  } else if (pattern.find('\n') != std::string_view::npos) {
    return tool_args::invalid("pattern", "must not contain a newline (matches are per line)");
  }

  auto rel = ws.relative(path);
  if (!rel) return std::move(rel.err());
  auto fd = ws.open_relative(*rel, path, O_RDONLY | O_NONBLOCK | O_NOCTTY);
  if (!fd) return std::move(fd.err());
  struct stat st {};
  if (::fstat(fd->get(), &st) != 0) return errno_error(quoted_path(path), errno);
  if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
    return tool_error{tool_errc::invalid_args, quoted_path(path) + " is not a file or directory"};

  // Reported paths are relative to the workspace root.
  std::string_view start = *rel;
  while (start.starts_with("./")) start.remove_prefix(2);
  while (start.size() > 1 && start.back() == '/') start.remove_suffix(1);
  if (start == ".") start = {};

  const std::size_t result_start = out.size();
  json::writer w(out);
  w.begin_object().key("matches").begin_array();
  searcher s(pattern, re ? &*re : nullptr, max_results, w, result_start, buf);
  s.set_path(start);
  status st_search = S_ISDIR(st.st_mode) ? s.dir(std::move(*fd), 0) : s.file(std::move(*fd));
  if (st_search) return st_search;
  w.end_array().field("truncated", s.truncated()).end_object();
  return std::nullopt;
}

#undef AV_TRY

} // namespace agentvisor::guest

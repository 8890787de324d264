#pragma once
// Internal to src/protocol: reads the members of a decoded JSON object with
// errors that name the field. Shared by the guest protocol and the VM
// control channel codecs.

#include "agentvisor/error.hpp"

#include <simdjson.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

namespace agentvisor::protocol_detail {

using simdjson::dom::element;
using simdjson::dom::object;

/// Reads the members of one message object; every error names
/// `<context>.<field>`.
class reader {
public:
  reader(object obj, std::string_view context) : obj_(obj), context_(context) {}

  error fail(std::string_view field, std::string_view what) const {
    std::string m;
    m.reserve(context_.size() + field.size() + what.size() + 3);
    m += context_;
    m += '.';
    m += field;
    m += ": ";
    m += what;
    return error{std::move(m)};
  }

  /// The member `field`, or nothing when absent.
  std::optional<element> find(std::string_view field) const {
    element e;
    if (obj_.at_key(field).get(e)) return std::nullopt;
    return e;
  }

  std::optional<error> u64(std::string_view field, uint64_t& out, bool required) const {
    auto e = find(field);
    if (!e) return missing(field, required);
    if (e->get_uint64().get(out)) return fail(field, "expected an unsigned integer");
    return std::nullopt;
  }

  std::optional<error> u32(std::string_view field, uint32_t& out, bool required) const {
    uint64_t v = out;
    if (auto err = u64(field, v, required)) return err;
    if (v > std::numeric_limits<uint32_t>::max()) return fail(field, "out of range (at most 4294967295)");
    out = static_cast<uint32_t>(v);
    return std::nullopt;
  }

  std::optional<error> i64(std::string_view field, int64_t& out, bool required) const {
    auto e = find(field);
    if (!e) return missing(field, required);
    if (e->get_int64().get(out)) return fail(field, "expected an integer");
    return std::nullopt;
  }

  std::optional<error> i32(std::string_view field, int32_t& out, bool required) const {
    int64_t v = out;
    if (auto err = i64(field, v, required)) return err;
    if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max())
      return fail(field, "out of range for a 32-bit integer");
    out = static_cast<int32_t>(v);
    return std::nullopt;
  }

  std::optional<error> boolean(std::string_view field, bool& out, bool required) const {
    auto e = find(field);
    if (!e) return missing(field, required);
    if (e->get_bool().get(out)) return fail(field, "expected a boolean");
    return std::nullopt;
  }

  std::optional<error> str(std::string_view field, std::string& out, bool required) const {
    auto e = find(field);
    if (!e) return missing(field, required);
    std::string_view v;
    if (e->get_string().get(v)) return fail(field, "expected a string");
    out.assign(v);
    return std::nullopt;
  }

  /// An object member as minified JSON text; "{}" when absent and optional.
  std::optional<error> obj_text(std::string_view field, std::string& out, bool required) const {
    auto e = find(field);
    if (!e) {
      out = "{}";
      return missing(field, required);
    }
    if (!e->is_object()) return fail(field, "expected an object");
    out = simdjson::minify(*e);
    return std::nullopt;
  }

  object obj() const { return obj_; }
  std::string_view context() const { return context_; }

private:
  std::optional<error> missing(std::string_view field, bool required) const {
    if (required) return fail(field, "missing");
    return std::nullopt;
  }

  object obj_;
  std::string_view context_;
};


#define AV_TRY(expr)                                                           \
  if (auto av_err_ = (expr)) return std::move(*av_err_)

} // namespace agentvisor::protocol_detail

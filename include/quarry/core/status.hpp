// quarry::status and quarry::result<T>: errors at I/O and configuration boundaries.
//
// Hot loops never throw or allocate; functions that parse files, allocate big buffers or
// validate user configuration return a `status` or a `result<T>`. Programming errors that a
// caller can check beforehand (a shape mismatch, an index out of range) throw `quarry::error`,
// whose message names the values involved.
#pragma once

#include <cstdint>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

namespace quarry {

/// What went wrong, coarsely; the message says exactly what.
enum class errc : std::uint8_t {
  ok = 0,
  invalid_argument,  ///< a parameter is outside its documented domain
  shape_mismatch,    ///< shapes or strides do not agree
  out_of_range,      ///< an index or size is beyond a bound
  unsupported,       ///< valid, but not supported by this build, backend or machine
  io_error,          ///< the operating system refused a read, write, open or rename
  corrupt_data,      ///< a file or buffer fails a check (magic, bounds, checksum)
  out_of_memory,     ///< an allocation failed
  device_error,      ///< the CUDA runtime reported an error
  not_found,         ///< a named thing (file, tensor, key) does not exist
  internal,          ///< a bug in quarry: please report it
};

/// A short, stable name for an error code ("shape_mismatch").
constexpr std::string_view errc_name(errc code) noexcept {
  switch (code) {
    case errc::ok: return "ok";
    case errc::invalid_argument: return "invalid_argument";
    case errc::shape_mismatch: return "shape_mismatch";
    case errc::out_of_range: return "out_of_range";
    case errc::unsupported: return "unsupported";
    case errc::io_error: return "io_error";
    case errc::corrupt_data: return "corrupt_data";
    case errc::out_of_memory: return "out_of_memory";
    case errc::device_error: return "device_error";
    case errc::not_found: return "not_found";
    case errc::internal: return "internal";
  }
  return "unknown";
}

/// The outcome of an operation that can fail: `ok` or an error code with a message.
/// An ok status holds no string and costs nothing to create or copy.
class [[nodiscard]] status {
 public:
  /// The ok status.
  status() noexcept = default;
  /// An error; `code` must not be `errc::ok`.
  status(errc code, std::string message) : code_(code), message_(std::move(message)) {}

  /// The ok status, spelled out.
  static status success() noexcept { return {}; }

  /// True when nothing went wrong.
  ///@{
  bool ok() const noexcept { return code_ == errc::ok; }
  explicit operator bool() const noexcept { return ok(); }
  ///@}
  /// The error code (errc::ok when ok).
  errc code() const noexcept { return code_; }
  /// What went wrong, naming the values involved; empty when ok.
  const std::string& message() const noexcept { return message_; }
  /// "shape_mismatch: reshape of [2, 3] to [4, 2]" or "ok".
  std::string to_string() const {
    if (ok()) return "ok";
    return std::string(errc_name(code_)) + ": " + message_;
  }

  /// Throws `quarry::error` when not ok.
  inline void throw_if_error() const;

 private:
  errc code_ = errc::ok;
  std::string message_;
};

/// The exception quarry throws for precondition violations and for `result<T>::value()` on an
/// error. It carries the same code and message as the status it came from.
class error : public std::runtime_error {
 public:
  /// An exception whose what() is "<code name>: <message>".
  error(errc code, const std::string& message)
      : std::runtime_error(std::string(errc_name(code)) + ": " + message), code_(code) {}
  /// The exception of an error status.
  explicit error(const status& st) : error(st.code(), st.message()) {}
  /// The error code.
  errc code() const noexcept { return code_; }

 private:
  errc code_;
};

inline void status::throw_if_error() const {
  if (!ok()) throw error(*this);
}

/// Throws `quarry::error(code, message)`; keeps the throwing code out of inlined callers.
[[noreturn]] inline void throw_error(errc code, const std::string& message) {
  throw error(code, message);
}

/// A value of type T, or the status saying why there is none.
template <class T>
class [[nodiscard]] result {
  static_assert(!std::is_same_v<std::remove_cv_t<T>, quarry::status>, "result<status> is meaningless");
  static_assert(!std::is_reference_v<T>, "result<T&> is not supported; return a pointer");

 public:
  /// A result holding a value.
  result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  /// A result holding an error; `st` must not be ok.
  result(quarry::status st) : v_(std::in_place_index<1>, std::move(st)) {  // NOLINT: implicit by design
    if (std::get<1>(v_).ok())
      v_.template emplace<1>(errc::internal, "result constructed from an ok status without a value");
  }

  /// True when a value is held.
  ///@{
  bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }
  ///@}

  /// The error (or ok when a value is held).
  quarry::status status() const { return ok() ? quarry::status{} : std::get<1>(v_); }

  /// The value; throws `quarry::error` if this holds an error.
  ///@{
  T& value() & {
    if (!ok()) throw error(std::get<1>(v_));
    return std::get<0>(v_);
  }
  const T& value() const& {
    if (!ok()) throw error(std::get<1>(v_));
    return std::get<0>(v_);
  }
  T&& value() && {
    if (!ok()) throw error(std::get<1>(v_));
    return std::get<0>(std::move(v_));
  }
  ///@}

  /// Unchecked access; the caller has tested `ok()`.
  ///@{
  T& operator*() & noexcept { return *std::get_if<0>(&v_); }
  const T& operator*() const& noexcept { return *std::get_if<0>(&v_); }
  T&& operator*() && noexcept { return std::move(*std::get_if<0>(&v_)); }
  T* operator->() noexcept { return std::get_if<0>(&v_); }
  const T* operator->() const noexcept { return std::get_if<0>(&v_); }
  ///@}

 private:
  std::variant<T, quarry::status> v_;
};

}  // namespace quarry

/// Returns from the enclosing function when `expr` (a status) is an error.
#define QUARRY_RETURN_IF_ERROR(expr)                         \
  do {                                                       \
    ::quarry::status quarry_status_tmp_ = (expr);            \
    if (!quarry_status_tmp_.ok()) return quarry_status_tmp_; \
  } while (0)

#define QUARRY_DETAIL_CONCAT_INNER(a, b) a##b
#define QUARRY_DETAIL_CONCAT(a, b) QUARRY_DETAIL_CONCAT_INNER(a, b)
/// `QUARRY_ASSIGN_OR_RETURN(auto x, f());` declares x from a result, or returns its error.
#define QUARRY_ASSIGN_OR_RETURN(decl, expr)                                          \
  auto QUARRY_DETAIL_CONCAT(quarry_result_tmp_, __LINE__) = (expr);                  \
  if (!QUARRY_DETAIL_CONCAT(quarry_result_tmp_, __LINE__).ok())                      \
    return QUARRY_DETAIL_CONCAT(quarry_result_tmp_, __LINE__).status();              \
  decl = std::move(*QUARRY_DETAIL_CONCAT(quarry_result_tmp_, __LINE__))

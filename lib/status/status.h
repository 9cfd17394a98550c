// Expected failures as values (CONVENTIONS.md rule 8). HTTP errors, CRIU
// failures, full disks and bad input are returned as a Status with a code a
// caller can branch on and a message a human can act on; Result<T> carries
// either a value or such a Status. Invariants are asserted, not returned.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace ferry {

enum class Code {
  kOk,
  kInvalidArgument,     // bad input from a user: never retried
  kNotFound,            // the thing does not exist
  kAlreadyExists,       // create of something that exists
  kConflict,            // optimistic concurrency lost (HTTP 409): re-read and retry
  kGone,                // a watch's resourceVersion is too old (HTTP 410): re-list
  kPermissionDenied,    // authn/authz refused
  kFailedPrecondition,  // the world is not in a state where this can work
  kUnsupported,         // this node/kernel/runtime cannot do it
  kResourceExhausted,   // disk full, quota, rate limited
  kUnavailable,         // transient: retry with backoff
  kDeadlineExceeded,    // timed out
  kDataLoss,            // corrupted data (checksum mismatch)
  kCancelled,           // stopped on request
  kInternal,            // a bug or an unexpected failure of a dependency
};

std::string_view code_name(Code code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}
  // `reason` is a machine-readable CamelCase word (the Kubernetes API
  // Status reason, or a Ferry condition reason such as "PodNotFound").
  Status(Code code, std::string message, std::string reason)
      : code_(code), message_(std::move(message)), reason_(std::move(reason)) {}

  static Status ok_status() { return {}; }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  // The reason given at construction, else the code's name.
  std::string reason() const { return reason_.empty() ? std::string(code_name(code_)) : reason_; }

  // Prefixes the message with what was being done: "restore pod x: <message>".
  Status with_context(std::string_view context) const;
  // "<CodeName>: <message>", for logs.
  std::string to_string() const;

 private:
  Code code_ = Code::kOk;
  std::string message_;
  std::string reason_;
};

inline Status invalid_argument(std::string m) {
  return {Code::kInvalidArgument, std::move(m)};
}
inline Status not_found(std::string m) {
  return {Code::kNotFound, std::move(m)};
}
inline Status failed_precondition(std::string m) {
  return {Code::kFailedPrecondition, std::move(m)};
}
inline Status unavailable(std::string m) {
  return {Code::kUnavailable, std::move(m)};
}
inline Status internal_error(std::string m) {
  return {Code::kInternal, std::move(m)};
}

// A value or the Status explaining why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    assert(!std::get<Status>(v_).ok() && "a Result built from a Status must carry an error");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & {
    assert(ok());
    return std::get<T>(v_);
  }
  const T& value() const& {
    assert(ok());
    return std::get<T>(v_);
  }
  T&& value() && {
    assert(ok());
    return std::get<T>(std::move(v_));
  }
  // The value, or `fallback` when this holds an error.
  T value_or(T fallback) const& { return ok() ? std::get<T>(v_) : std::move(fallback); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace ferry

// Returns the Status of `expr` from the enclosing function when it is an error.
#define FERRY_RETURN_IF_ERROR(expr)                \
  do {                                             \
    ::ferry::Status ferry_status_ = (expr);        \
    if (!ferry_status_.ok()) return ferry_status_; \
  } while (false)

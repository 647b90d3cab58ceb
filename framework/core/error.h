// Errors of the runtime. Inside the tensor runtime, a bad argument (shape, dtype, device) throws
// fam::Error carrying an absl::StatusCode and one line naming the culprit; module boundaries (io,
// config, CLI) turn it into absl::Status with ToStatus() and the CLI into an exit code.
#pragma once

#include <stdexcept>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace fam {

class Error : public std::runtime_error {
 public:
  Error(absl::StatusCode code, const std::string& message)
      : std::runtime_error(message), code_(code) {}
  absl::StatusCode code() const { return code_; }
  absl::Status ToStatus() const { return absl::Status(code_, what()); }

 private:
  absl::StatusCode code_;
};

// Throws fam::Error(kInvalidArgument) built from the StrCat of the arguments.
template <typename... Args>
[[noreturn]] void ThrowInvalid(const Args&... args) {
  throw Error(absl::StatusCode::kInvalidArgument, absl::StrCat(args...));
}

template <typename... Args>
[[noreturn]] void ThrowError(absl::StatusCode code, const Args&... args) {
  throw Error(code, absl::StrCat(args...));
}

// Throws a Status that is not OK as fam::Error (for code that calls Status-returning functions).
inline void ThrowIfError(const absl::Status& status) {
  if (!status.ok()) throw Error(status.code(), std::string(status.message()));
}

// Runs fn and converts a thrown fam::Error (or std::exception) to a Status.
template <typename Fn>
absl::Status CatchToStatus(Fn&& fn) {
  try {
    fn();
    return absl::OkStatus();
  } catch (const Error& e) {
    return e.ToStatus();
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("out of host memory");
  } catch (const std::exception& e) {
    return absl::InternalError(e.what());
  }
}

// The process exit code of a status: 0 for OK, 2 for bad input (InvalidArgument, NotFound,
// OutOfRange, FailedPrecondition, DataLoss, AlreadyExists), 1 for any other failure.
inline int ExitCode(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return 0;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kAlreadyExists:
      return 2;
    default:
      return 1;
  }
}

}  // namespace fam

// FAM_CHECK(cond, parts...): throws InvalidArgument with the joined parts when cond is false.
#define FAM_CHECK(cond, ...)                       \
  do {                                             \
    if (!(cond)) ::fam::ThrowInvalid(__VA_ARGS__); \
  } while (0)

// FAM_ASSERT(cond): an internal invariant; failure is a bug (kInternal), not bad input.
#define FAM_ASSERT(cond)                                                                          \
  do {                                                                                            \
    if (!(cond))                                                                                  \
      ::fam::ThrowError(absl::StatusCode::kInternal, "internal error: ", #cond, " at ", __FILE__, \
                        ":", __LINE__);                                                           \
  } while (0)

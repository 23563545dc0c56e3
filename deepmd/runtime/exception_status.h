// Exceptions (std::bad_alloc, c10::Error, any std::exception, anything else) as error statuses, so that
// callers report them like every other failure (and on several ranks agree on them) instead of letting
// them escape into an MD engine that would die without a message or leave its peers waiting.
#ifndef DEEPMD_RUNTIME_EXCEPTION_STATUS_H_
#define DEEPMD_RUNTIME_EXCEPTION_STATUS_H_

#include <exception>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace deepmd::runtime {

// The error `exception` stands for, its message prefixed by `context` ("loading X", ...): out of memory
// is RESOURCE_EXHAUSTED and says how to need less; LibTorch's errors lose their C++ backtrace.
absl::Status StatusFromException(std::exception_ptr exception, absl::string_view context);

}  // namespace deepmd::runtime

#endif  // DEEPMD_RUNTIME_EXCEPTION_STATUS_H_

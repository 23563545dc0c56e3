#include "deepmd/runtime/exception_status.h"

#include <c10/util/Exception.h>

#include <new>
#include <string>

#include "absl/strings/str_cat.h"

namespace deepmd::runtime {

absl::Status StatusFromException(std::exception_ptr exception, absl::string_view context) {
  const std::string prefix = context.empty() ? std::string() : absl::StrCat(context, ": ");
  try {
    std::rethrow_exception(exception);
  } catch (const std::bad_alloc& e) {
    return absl::ResourceExhaustedError(
        absl::StrCat(prefix, "out of memory (", e.what(),
                     "): use more ranks (fewer atoms per rank), fewer threads, or a machine with more memory"));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(prefix, e.what_without_backtrace()));
  } catch (const std::exception& e) {  // TorchScript's own exceptions (JITException) are not c10::Errors
    return absl::InternalError(absl::StrCat(prefix, e.what()));
  } catch (...) {
    return absl::InternalError(absl::StrCat(prefix, "an exception that is not a std::exception"));
  }
  return absl::InternalError(absl::StrCat(prefix, "no exception"));
}

}  // namespace deepmd::runtime

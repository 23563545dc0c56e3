#include "third_party/lammps/fmt_compat.h"

#include <cstdio>
#include <string>

#include "error.h"
#include "lammps.h"
#include "lmptype.h"

// The overload our code calls (never run: it would need a LAMMPS instance); it must link against
// liblammps, whose formatted overloads use its bundled fmt and do not.
[[maybe_unused]] void ReportError(LAMMPS_NS::Error* error, const std::string& message) { error->all(FLERR, message); }

int main() {
  static_assert(sizeof(LAMMPS_NS::bigint) == 8, "Debian's liblammps is LAMMPS_SMALLBIG");
  static_assert(sizeof(LAMMPS_NS::tagint) == 4, "Debian's liblammps is LAMMPS_SMALLBIG");
  std::string text = fmt::vformat("{} {}", fmt::make_args_checked<int, const char*>("{} {}", 3, "ok"));
  if (text != "3 ok") {
    std::printf("fmt compat produced '%s'\n", text.c_str());
    return 1;
  }
  return 0;
}

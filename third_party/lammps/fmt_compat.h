// Debian's LAMMPS 20220106 headers call fmt::make_args_checked, which fmt 9 (Debian's libfmt) removed.
// This header restores it on top of fmt 9 so that the headers compile. Include it before any LAMMPS
// header. Call only the std::string overloads of Error::all/one and utils::logmesg: liblammps was
// built with its bundled fmt (fmt::v7_lmp), so the formatted overloads, instantiated against fmt 9,
// do not link. Format messages with absl::StrFormat instead.
// A LAMMPS installed by its own cmake (@lammps_current) installs its bundled fmt with its headers and
// needs none of this: the header is empty unless DEEPMD_LAMMPS_FMT_COMPAT is defined (by
// //third_party/lammps:lammps, Debian's).
#ifndef DEEPMD_THIRD_PARTY_LAMMPS_FMT_COMPAT_H_
#define DEEPMD_THIRD_PARTY_LAMMPS_FMT_COMPAT_H_

#ifdef LMP_ERROR_H
#error "third_party/lammps/fmt_compat.h must be included before LAMMPS's error.h"
#endif

#ifdef DEEPMD_LAMMPS_FMT_COMPAT

#include <type_traits>

#include <fmt/format.h>

#if FMT_VERSION >= 90000
namespace fmt {
// Same contract as fmt 8's: the explicit Args are the caller's argument types.
template <typename... Args, typename S>
inline auto make_args_checked(const S& /*format*/, const std::remove_reference_t<Args>&... args) {
  return make_format_args(args...);
}
}  // namespace fmt
#endif

#endif  // DEEPMD_LAMMPS_FMT_COMPAT

#endif  // DEEPMD_THIRD_PARTY_LAMMPS_FMT_COMPAT_H_

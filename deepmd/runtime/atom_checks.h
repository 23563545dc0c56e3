// Checks that a system and a model's results make physical sense, with errors that name the atoms
// (in the caller's numbering) and say what to fix. Used by DeepPot at every rebuild and every call.
#ifndef DEEPMD_RUNTIME_ATOM_CHECKS_H_
#define DEEPMD_RUNTIME_ATOM_CHECKS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace deepmd::runtime {

// Atoms closer than this (Å) are an error. The shortest bond there is (H2, 0.74 Å) is 7x longer and
// no training set holds pairs this close, so such atoms are duplicated or the run has blown up; the
// model's value there is meaningless (on top of each other: 0/0, PotEng -nan).
inline constexpr double kMinPairDistance = 0.1;

// "atom 12": `ids[row]` when ids are given (the caller's atom ids), else the row itself.
std::string AtomName(absl::Span<const int64_t> ids, int64_t row);

// OK unless `distance` < kMinPairDistance; the error names both atoms (or an atom and its own periodic
// image, when both rows carry the same id), the lower id first, and their distance.
absl::Status CheckPairDistance(double distance, int64_t row_i, int64_t row_j, absl::Span<const int64_t> ids);

// OK unless a value is NaN or infinite; the error names `quantity` and, for per-atom quantities
// (`width` values per atom; 0 for a global one), the first atom concerned.
absl::Status CheckFinite(absl::string_view quantity, absl::Span<const double> values, int width,
                         absl::Span<const int64_t> ids);

}  // namespace deepmd::runtime

#endif  // DEEPMD_RUNTIME_ATOM_CHECKS_H_

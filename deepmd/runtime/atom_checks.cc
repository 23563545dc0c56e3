#include "deepmd/runtime/atom_checks.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace deepmd::runtime {

std::string AtomName(absl::Span<const int64_t> ids, int64_t row) {
  const bool named = row >= 0 && row < static_cast<int64_t>(ids.size());
  return absl::StrCat("atom ", named ? ids[row] : row);
}

absl::Status CheckPairDistance(double distance, int64_t row_i, int64_t row_j, absl::Span<const int64_t> ids) {
  if (distance >= kMinPairDistance) return absl::OkStatus();
  // The lower id first, whichever rank or row found the pair.
  const auto id = [&](int64_t row) { return row < static_cast<int64_t>(ids.size()) ? ids[row] : row; };
  if (id(row_j) < id(row_i)) std::swap(row_i, row_j);
  const std::string i = AtomName(ids, row_i), j = AtomName(ids, row_j);
  const std::string pair =
      i == j ? absl::StrCat(i, " and its own periodic image are") : absl::StrCat(i, " and ", j, " are");
  return absl::InvalidArgumentError(absl::StrFormat(
      "%s %.6g A apart, closer than %g A: atoms on top of each other (a duplicated atom in the input, a cell "
      "too small for its atoms, or a simulation that has blown up: check the structure, its units and the time "
      "step); the model's energy there is meaningless",
      pair, distance, kMinPairDistance));
}

absl::Status CheckFinite(absl::string_view quantity, absl::Span<const double> values, int width,
                         absl::Span<const int64_t> ids) {
  for (size_t k = 0; k < values.size(); ++k) {
    if (std::isfinite(values[k])) continue;
    std::string where;
    if (width > 0) {
      const size_t first = k - k % width;
      absl::StrAppend(&where, " on ", AtomName(ids, static_cast<int64_t>(k / width)), " (",
                      absl::StrJoin(values.subspan(first, width), ", "), ")");
    } else {
      absl::StrAppend(&where, " (", values[k], ")");
    }
    return absl::InternalError(absl::StrCat(
        "the model returned a non-finite ", quantity, where,
        ": its inputs are outside anything it can evaluate (check the structure, fparam / aparam and spins) or "
        "the archive is broken (dp_archive verify checks it)"));
  }
  return absl::OkStatus();
}

}  // namespace deepmd::runtime

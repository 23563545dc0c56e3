#include "deepmd/runtime/neighbor_list.h"

#include <algorithm>
#include <array>
#include <cmath>

namespace deepmd::runtime {

int64_t NeighborList::max_row() const {
  int64_t longest = 0;
  for (size_t i = 0; i + 1 < offsets.size(); ++i) longest = std::max(longest, offsets[i + 1] - offsets[i]);
  return longest;
}

void NeighborList::ToPadded(int64_t width, int64_t* out) const {
  const int64_t nloc = static_cast<int64_t>(offsets.size()) - 1;
  std::fill(out, out + nloc * width, -1);
  for (int64_t i = 0; i < nloc; ++i) std::copy(&neighbors[offsets[i]], &neighbors[0] + offsets[i + 1], out + i * width);
}

void BuildNeighborList(absl::Span<const double> coord, int64_t nloc, double cutoff, NeighborList& list) {
  const int64_t n = static_cast<int64_t>(coord.size() / 3);
  list.offsets.assign(1, 0);
  list.neighbors.clear();
  if (n == 0 || nloc == 0) {
    list.offsets.assign(nloc + 1, 0);
    return;
  }
  // Bin every extended atom into cubic cells of side >= cutoff over the atoms' bounding box.
  std::array<double, 3> lo, hi;
  for (int d = 0; d < 3; ++d) {
    lo[d] = hi[d] = coord[d];
    for (int64_t i = 0; i < n; ++i) {
      lo[d] = std::min(lo[d], coord[3 * i + d]);
      hi[d] = std::max(hi[d], coord[3 * i + d]);
    }
  }
  std::array<int64_t, 3> ncell;
  for (int d = 0; d < 3; ++d) ncell[d] = std::max<int64_t>(1, static_cast<int64_t>((hi[d] - lo[d]) / cutoff));
  auto cell_of = [&](int64_t i, int d) {
    const double at = (coord[3 * i + d] - lo[d]) / (hi[d] - lo[d] + 1e-300) * ncell[d];
    return at >= 0 ? std::min(ncell[d] - 1, static_cast<int64_t>(at)) : int64_t{0};  // NaN-safe
  };
  const int64_t total = ncell[0] * ncell[1] * ncell[2];
  std::vector<int64_t> head(total + 1, 0), order(n), cell(n);
  for (int64_t i = 0; i < n; ++i) {
    cell[i] = (cell_of(i, 0) * ncell[1] + cell_of(i, 1)) * ncell[2] + cell_of(i, 2);
    ++head[cell[i] + 1];
  }
  for (int64_t c = 0; c < total; ++c) head[c + 1] += head[c];
  std::vector<int64_t> fill(head.begin(), head.end() - 1);
  for (int64_t i = 0; i < n; ++i) order[fill[cell[i]]++] = i;

  const double rc2 = cutoff * cutoff;
  list.offsets.reserve(nloc + 1);
  for (int64_t i = 0; i < nloc; ++i) {
    const std::array<int64_t, 3> c = {cell_of(i, 0), cell_of(i, 1), cell_of(i, 2)};
    for (int64_t x = std::max<int64_t>(0, c[0] - 1); x <= std::min(ncell[0] - 1, c[0] + 1); ++x) {
      for (int64_t y = std::max<int64_t>(0, c[1] - 1); y <= std::min(ncell[1] - 1, c[1] + 1); ++y) {
        for (int64_t z = std::max<int64_t>(0, c[2] - 1); z <= std::min(ncell[2] - 1, c[2] + 1); ++z) {
          const int64_t k = (x * ncell[1] + y) * ncell[2] + z;
          for (int64_t p = head[k]; p < head[k + 1]; ++p) {
            const int64_t j = order[p];
            if (j == i) continue;
            double r2 = 0;
            for (int d = 0; d < 3; ++d) r2 += (coord[3 * j + d] - coord[3 * i + d]) * (coord[3 * j + d] - coord[3 * i + d]);
            if (r2 < rc2) list.neighbors.push_back(j);
          }
        }
      }
    }
    list.offsets.push_back(static_cast<int64_t>(list.neighbors.size()));
  }
}

}  // namespace deepmd::runtime

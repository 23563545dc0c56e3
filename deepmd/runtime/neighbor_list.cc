#include "deepmd/runtime/neighbor_list.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

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
  list.closest_i = list.closest_j = -1;
  list.closest_r2 = std::numeric_limits<double>::infinity();
  if (n == 0 || nloc == 0) {
    list.offsets.assign(nloc + 1, 0);
    return;
  }
  // Bin every extended atom into cells of side >= cutoff over the atoms' bounding box. Only occupied
  // cells are stored (sorted by key), so memory is O(n) whatever the box: one atom far away must not
  // cost a grid the size of the empty space in between.
  std::array<double, 3> lo, hi;
  for (int d = 0; d < 3; ++d) {
    lo[d] = hi[d] = coord[d];
    for (int64_t i = 0; i < n; ++i) {
      lo[d] = std::min(lo[d], coord[3 * i + d]);
      hi[d] = std::max(hi[d], coord[3 * i + d]);
    }
  }
  // Cells per dimension, at most 2^20 so that a key of three indices fits 63 bits (a cap only makes
  // cells larger than the cutoff, which stays correct).
  constexpr int64_t kMaxCells = int64_t{1} << 20;
  std::array<int64_t, 3> ncell;
  for (int d = 0; d < 3; ++d) {
    const double cells = (hi[d] - lo[d]) / cutoff;
    ncell[d] = cells >= 1 ? std::min<int64_t>(kMaxCells, static_cast<int64_t>(std::min(cells, 1e18))) : 1;
  }
  auto cell_of = [&](int64_t i, int d) {
    const double at = (coord[3 * i + d] - lo[d]) / (hi[d] - lo[d] + 1e-300) * static_cast<double>(ncell[d]);
    return at >= 0 ? std::min(ncell[d] - 1, static_cast<int64_t>(std::min(at, 1e18))) : int64_t{0};  // NaN-safe
  };
  auto key = [&](int64_t x, int64_t y, int64_t z) { return (x * ncell[1] + y) * ncell[2] + z; };
  std::vector<std::pair<int64_t, int64_t>> binned(n);  // (cell key, atom), sorted by key
  for (int64_t i = 0; i < n; ++i) binned[i] = {key(cell_of(i, 0), cell_of(i, 1), cell_of(i, 2)), i};
  std::sort(binned.begin(), binned.end());

  const double rc2 = cutoff * cutoff;
  list.offsets.reserve(nloc + 1);
  for (int64_t i = 0; i < nloc; ++i) {
    const std::array<int64_t, 3> c = {cell_of(i, 0), cell_of(i, 1), cell_of(i, 2)};
    for (int64_t x = std::max<int64_t>(0, c[0] - 1); x <= std::min(ncell[0] - 1, c[0] + 1); ++x) {
      for (int64_t y = std::max<int64_t>(0, c[1] - 1); y <= std::min(ncell[1] - 1, c[1] + 1); ++y) {
        for (int64_t z = std::max<int64_t>(0, c[2] - 1); z <= std::min(ncell[2] - 1, c[2] + 1); ++z) {
          const int64_t k = key(x, y, z);
          auto p = std::lower_bound(binned.begin(), binned.end(), std::make_pair(k, int64_t{-1}));
          for (; p != binned.end() && p->first == k; ++p) {
            const int64_t j = p->second;
            if (j == i) continue;
            double r2 = 0;
            for (int d = 0; d < 3; ++d)
              r2 += (coord[3 * j + d] - coord[3 * i + d]) * (coord[3 * j + d] - coord[3 * i + d]);
            if (!(r2 < rc2)) continue;
            list.neighbors.push_back(j);
            if (r2 < list.closest_r2) list.closest_r2 = r2, list.closest_i = i, list.closest_j = j;
          }
        }
      }
    }
    list.offsets.push_back(static_cast<int64_t>(list.neighbors.size()));
  }
}

}  // namespace deepmd::runtime

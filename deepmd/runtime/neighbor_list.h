// Full neighbour lists of local atoms over extended atoms, with a cell list: O(N).
#ifndef DEEPMD_RUNTIME_NEIGHBOR_LIST_H_
#define DEEPMD_RUNTIME_NEIGHBOR_LIST_H_

#include <cstdint>
#include <limits>
#include <vector>

#include "absl/types/span.h"

namespace deepmd::runtime {

// Rows in CSR form: neighbours of local atom i are neighbors[offsets[i] .. offsets[i+1]).
struct NeighborList {
  std::vector<int64_t> offsets;
  std::vector<int64_t> neighbors;
  // The closest pair listed (local atom, neighbour) and its squared distance; -1 / infinity when the
  // list is empty. Tracked while the list is built, so that callers can reject overlapping atoms for free.
  int64_t closest_i = -1, closest_j = -1;
  double closest_r2 = std::numeric_limits<double>::infinity();
  int64_t max_row() const;
  // Row-major [nloc, width] with -1 padding (width >= max_row()).
  void ToPadded(int64_t width, int64_t* out) const;
};

// coord: [n, 3] extended coordinates (the first nloc are local), finite (non-finite ones land in an
// arbitrary cell); pairs closer than cutoff, i != j.
// Reuses `list`'s storage (call it once per rebuild).
void BuildNeighborList(absl::Span<const double> coord, int64_t nloc, double cutoff, NeighborList& list);

}  // namespace deepmd::runtime

#endif  // DEEPMD_RUNTIME_NEIGHBOR_LIST_H_

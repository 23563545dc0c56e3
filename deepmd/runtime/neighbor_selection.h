// A model's neighbour selection (`sel`): its graph keeps, per atom, the nearest `sel` neighbours
// within rcut and ignores the rest, as deepmd-kit does. That truncation is the model's definition, but
// a user must know when it happens: this counts, at a neighbour-list rebuild, the atoms that have more.
#ifndef DEEPMD_RUNTIME_NEIGHBOR_SELECTION_H_
#define DEEPMD_RUNTIME_NEIGHBOR_SELECTION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "deepmd/runtime/metadata.h"
#include "deepmd/runtime/neighbor_list.h"

namespace deepmd::runtime {

struct SelOverflow {
  int64_t atoms = 0;  // local atoms with more neighbours within rcut than selected
  int64_t most = 0;   // the largest such count (of one type, for per-type selections)
};

class NeighborSelection {
 public:
  // Per type when the descriptor selects per neighbour type (se_e2_a: `sel` of the model
  // configuration, one entry per type), else one limit for all neighbours (metadata `nnei`). Spin
  // models: real neighbours only (the virtual atoms the graph adds are not counted).
  static NeighborSelection Of(const ArchiveMetadata& metadata);

  // Over the local rows of `list` (built on `coord`, compacted rows of types `types`): the atoms with
  // more neighbours closer than `rcut` than the selection keeps.
  SelOverflow Count(const NeighborList& list, absl::Span<const double> coord, absl::Span<const int64_t> types,
                    double rcut) const;

  // "100 neighbours per atom" or "[46 92] neighbours of each type per atom".
  std::string Describe() const;

 private:
  std::vector<int64_t> per_type_;  // empty: `total_` for all neighbours
  int64_t total_ = 0;
};

}  // namespace deepmd::runtime

#endif  // DEEPMD_RUNTIME_NEIGHBOR_SELECTION_H_

// Periodic images of a set of local atoms, made the way LAMMPS makes ghosts on one rank: dimension by
// dimension, images as self messages, images of images in later hops when the cutoff exceeds the
// box. Gives extended coordinates, the ghost -> owner mapping and the matching exchange plan.
#ifndef DEEPMD_RUNTIME_PERIODIC_IMAGES_H_
#define DEEPMD_RUNTIME_PERIODIC_IMAGES_H_

#include <array>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace deepmd::runtime {

struct PeriodicImages {
  std::vector<double> coord;   // [nall, 3]: the local atoms (wrapped into the box), then their images
  std::vector<int64_t> owner;  // [nall]: local atom each row is an image of
  int64_t nloc = 0;
  std::vector<int32_t> plan;  // self-exchange plan (docs/exchange_plan.md) that fills the image rows
};

// `cell` holds the three lattice vectors as rows (any triclinic cell; the origin is a corner);
// `periodic` says which of them wrap. Atoms are wrapped into the cell along periodic directions, and
// every image within `cutoff` of the cell (measured across each pair of faces) is made.
// Errors: non-finite or absurdly long lattice vectors, a tiny or flat cell (thinner than 0.1 A across a
// pair of faces), an atom more than 1e3 cell lengths outside a periodic direction, and a cell so thin
// for the cutoff that the images would exceed 2^25 rows.
absl::StatusOr<PeriodicImages> MakePeriodicImages(absl::Span<const double> coord, const std::array<double, 9>& cell,
                                                  const std::array<bool, 3>& periodic, double cutoff);

// An orthorhombic box given by its three lengths.
absl::StatusOr<PeriodicImages> MakePeriodicImages(absl::Span<const double> coord, const std::array<double, 3>& box,
                                                  const std::array<bool, 3>& periodic, double cutoff);

}  // namespace deepmd::runtime

#endif  // DEEPMD_RUNTIME_PERIODIC_IMAGES_H_

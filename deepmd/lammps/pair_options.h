// The arguments of `pair_style deepmd` / `deepmd/spin` and of `pair_coeff`, parsed without LAMMPS.
//   pair_style deepmd MODEL.pt2 [MODEL2.pt2 ...] [out_freq N] [out_file FILE] [atomic]
//                     [relative X] [relative_v X] [fparam V ...] [aparam V ...]
//   pair_coeff * * ELEMENT|NULL ...   (one name per LAMMPS type)
#ifndef DEEPMD_LAMMPS_PAIR_OPTIONS_H_
#define DEEPMD_LAMMPS_PAIR_OPTIONS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace deepmd::lammps {

struct PairStyleOptions {
  std::vector<std::string> models;  // the first one drives the dynamics
  int out_freq = 100;               // model deviation every N steps (several models)
  std::string out_file = "model_devi.out";
  bool atomic = false;         // also each atom's force deviation in out_file
  double relative = -1;        // force deviation relative to |F| + X (X >= 0)
  double relative_v = -1;      // virial deviation relative to |W| + X (X >= 0)
  std::vector<double> fparam;  // frame parameters
  std::vector<double> aparam;  // atomic parameters, the same for every atom
};

absl::StatusOr<PairStyleOptions> ParsePairStyle(absl::Span<const std::string> args);
// The keywords, space-separated (for messages).
std::string PairStyleKeywords();

// LAMMPS type t (1-based) -> the model's type index, or -1 for NULL. `names` holds one name per LAMMPS
// type (pair_coeff's arguments after "* *"); every name must be NULL or an element of `type_map`.
absl::StatusOr<std::vector<int>> MapTypes(absl::Span<const std::string> names, absl::Span<const std::string> type_map,
                                          int ntypes);

}  // namespace deepmd::lammps

#endif  // DEEPMD_LAMMPS_PAIR_OPTIONS_H_

// The arguments of `pair_style deepmd` / `deepmd/spin` and of `pair_coeff`, parsed without LAMMPS.
//   pair_style deepmd MODEL.pt2 [MODEL2.pt2 ...] [out_freq N] [out_file FILE] [atomic]
//                     [relative X] [relative_v X] [fparam V ...] [fparam_from_compute ID]
//                     [fparam_from_fix ID [INDEX]] [aparam V ...] [aparam_from_compute ID]
//                     [virtual_len V ...] [spin_norm V ...]
//   pair_coeff * * [ELEMENT|NULL ...]   (one name per LAMMPS type, or none: type t is model type t-1)
// Every keyword of deepmd-kit's `pair_style deepmd` / `deepspin` is recognised: accepted with
// deepmd-kit's meaning, or (ttm, charge_spin) refused with the reason (README.md has the table).
#ifndef DEEPMD_LAMMPS_PAIR_OPTIONS_H_
#define DEEPMD_LAMMPS_PAIR_OPTIONS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace deepmd::lammps {

struct PairStyleOptions {
  std::vector<std::string> models;  // the first one drives the dynamics
  int out_freq = 100;               // model deviation every N steps (several models); 0: never
  std::string out_file = "model_devi.out";
  bool atomic = false;         // also each atom's force deviation in out_file
  double relative = -1;        // force deviation relative to |F| + X (X >= 0)
  double relative_v = -1;      // virial deviation relative to |W| + X (X >= 0)
  std::vector<double> fparam;  // frame parameters
  // Frame parameters read every step from a compute's global scalar (one parameter) or vector
  // (several), or from a fix's global scalar (every parameter) or vector from fparam_fix_index on.
  std::string fparam_compute, fparam_fix;
  int fparam_fix_index = -1;   // 0-based; -1: the fix's scalar
  std::vector<double> aparam;  // atomic parameters, the same for every atom
  std::string aparam_compute;  // atomic parameters read every step from a per-atom compute
  // Accepted, but with no effect here (deepmd-kit ignores them too): one message each, for a warning.
  std::vector<std::string> warnings;

  bool fparam_per_step() const { return !fparam_compute.empty() || !fparam_fix.empty(); }
  bool deviation_output() const { return models.size() > 1 && out_freq > 0; }
};

absl::StatusOr<PairStyleOptions> ParsePairStyle(absl::Span<const std::string> args);
// The keywords this style accepts, space-separated (for messages).
std::string PairStyleKeywords();

// pair_coeff's first two arguments must cover every atom type (LAMMPS's bounds syntax: *, N, *N, N*,
// M*N), as one pair_coeff command sets the whole many-body model.
absl::Status CheckCoversAllTypes(const std::string& first, const std::string& second, int ntypes);

struct TypeMapping {
  std::vector<int> model_type;  // indexed by LAMMPS type (1-based): model type, or -1 for NULL
  std::string warning;          // non-empty: what the user should know about the mapping (log it)
};

// LAMMPS types -> the model's types from pair_coeff's names after "* *": one per type, NULL or an
// element of `type_map`. No names: type t is the model's type t-1 (deepmd-kit's default; an error when
// the model has fewer elements than there are types, a warning when it has more). Fewer or more names
// than types are an error (deepmd-kit pads with NULL or drops names: a forgotten name is a mistake).
absl::StatusOr<TypeMapping> MapTypes(absl::Span<const std::string> names, absl::Span<const std::string> type_map,
                                     int ntypes);

}  // namespace deepmd::lammps

#endif  // DEEPMD_LAMMPS_PAIR_OPTIONS_H_

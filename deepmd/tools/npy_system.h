// deepmd-kit's data system folder (the format `dp train` and `dp test` read): type.raw, type_map.raw,
// and set.*/ with coord.npy [nframes, 3n], box.npy [nframes, 9] (absent or a `nopbc` file: not periodic),
// energy.npy [nframes], force.npy [nframes, 3n], optional fparam.npy / aparam.npy.
#ifndef DEEPMD_TOOLS_NPY_SYSTEM_H_
#define DEEPMD_TOOLS_NPY_SYSTEM_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace deepmd::tools {

struct LabelledFrame {
  std::string set;            // folder name, e.g. set.000
  int index = 0;              // frame within the set
  std::vector<double> coord;  // [natoms, 3]
  std::vector<double> box;    // [9] rows a, b, c; empty when not periodic
  bool has_energy = false, has_force = false;
  double energy = 0;
  std::vector<double> force;   // [natoms, 3]
  std::vector<double> fparam;  // [dim_fparam] or empty
  std::vector<double> aparam;  // [natoms, dim_aparam] or empty
};

struct LabelledSystem {
  std::vector<int> type;              // type.raw: index into type_map
  std::vector<std::string> type_map;  // type_map.raw (empty when the file is absent)
  std::vector<LabelledFrame> frames;  // every set, in name order
};

// Errors name the file and what is wrong.
absl::StatusOr<LabelledSystem> ReadLabelledSystem(const std::string& directory);

}  // namespace deepmd::tools

#endif  // DEEPMD_TOOLS_NPY_SYSTEM_H_

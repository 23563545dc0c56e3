// Reads NumPy .npy files (format versions 1-3, little-endian float32/float64/int32/int64, C order):
// what deepmd-kit's data systems are made of.
#ifndef DEEPMD_TOOLS_NPY_H_
#define DEEPMD_TOOLS_NPY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace deepmd::tools {

struct NpyArray {
  std::vector<int64_t> shape;
  std::vector<double> values;  // widened to double, C order
};

// Errors name the file and what is wrong with it.
absl::StatusOr<NpyArray> ReadNpy(const std::string& path);

}  // namespace deepmd::tools

#endif  // DEEPMD_TOOLS_NPY_H_

// Reads the one frame of an extended XYZ file: species, positions, optional per-atom spins, lattice, pbc.
#ifndef DEEPMD_TOOLS_EXTXYZ_H_
#define DEEPMD_TOOLS_EXTXYZ_H_

#include <array>
#include <istream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace deepmd::tools {

struct Frame {
  std::vector<std::string> species;
  std::vector<double> coord;  // [natoms, 3]
  std::vector<double> spin;   // [natoms, 3] when the file has a "spin:R:3" column
  bool has_lattice = false;
  std::array<double, 9> lattice{};  // rows a, b, c
  std::array<bool, 3> pbc = {false, false, false};
};

// Errors name the line, what is wrong and the fix: fewer atom lines than line 1 announces, and anything
// after the frame (a second frame: one frame per file) are errors, never a truncated or dropped frame.
absl::StatusOr<Frame> ReadExtXyz(std::istream& in);

}  // namespace deepmd::tools

#endif  // DEEPMD_TOOLS_EXTXYZ_H_

// The model deviation file of deepmd-kit's pair style, which DP-GEN and users' scripts read: a header
// line, then per output step the step, the virial and force deviations and the energy deviation, and
// with `atomic` every atom's force deviation (ordered by atom id).
#ifndef DEEPMD_LAMMPS_DEVIATION_FILE_H_
#define DEEPMD_LAMMPS_DEVIATION_FILE_H_

#include <cstdint>
#include <string>

#include "deepmd/runtime/model_deviation.h"

namespace deepmd::lammps {

std::string DeviationFileHeader();
// `stats.atom_devi_f` is written only when `atomic`.
std::string DeviationFileLine(int64_t step, const runtime::DeviationStats& stats, bool atomic);

}  // namespace deepmd::lammps

#endif  // DEEPMD_LAMMPS_DEVIATION_FILE_H_

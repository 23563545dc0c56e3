#include "deepmd/lammps/deviation_file.h"

#include "absl/strings/str_format.h"

namespace deepmd::lammps {

std::string DeviationFileHeader() {
  return absl::StrFormat("#%11s %18s %18s %18s %18s %18s %18s %18s\n", "step", "max_devi_v", "min_devi_v", "avg_devi_v",
                         "max_devi_f", "min_devi_f", "avg_devi_f", "devi_e");
}

std::string DeviationFileLine(int64_t step, const runtime::DeviationStats& s, bool atomic) {
  std::string line = absl::StrFormat("%12d %18.10e %18.10e %18.10e %18.10e %18.10e %18.10e %18.10e", step, s.max_devi_v,
                                     s.min_devi_v, s.avg_devi_v, s.max_devi_f, s.min_devi_f, s.avg_devi_f, s.devi_e);
  if (atomic) {
    for (double d : s.atom_devi_f) absl::StrAppendFormat(&line, " %18.10e", d);
  }
  line += '\n';
  return line;
}

}  // namespace deepmd::lammps

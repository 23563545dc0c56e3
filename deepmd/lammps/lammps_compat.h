// What differs between the LAMMPS releases the styles compile against: Debian's 29 Sep 2021 headers
// (the launcher) and current ones such as 4 Feb 2025 (the plugin). DEEPMD_LAMMPS_VERSION is the release
// of the headers in use as yyyymmdd (LAMMPS's num_ver), set by //third_party/lammps.
#ifndef DEEPMD_LAMMPS_LAMMPS_COMPAT_H_
#define DEEPMD_LAMMPS_LAMMPS_COMPAT_H_

#include "third_party/lammps/fmt_compat.h"  // before any LAMMPS header

#include "comm.h"
#include "pair.h"

#ifndef DEEPMD_LAMMPS_VERSION
#error "DEEPMD_LAMMPS_VERSION is not set: depend on //third_party/lammps or //third_party/lammps:lammps_current"
#endif

namespace deepmd::lammps {

// LAMMPS 24 Mar 2022 renamed Comm::forward_comm_pair(Pair*) / reverse_comm_pair to forward_comm(Pair*) /
// reverse_comm (lammps/lammps#3148), with no alias for the old names.
inline void ForwardComm(LAMMPS_NS::Comm* comm, LAMMPS_NS::Pair* pair) {
#if DEEPMD_LAMMPS_VERSION >= 20220324
  comm->forward_comm(pair);
#else
  comm->forward_comm_pair(pair);
#endif
}

inline void ReverseComm(LAMMPS_NS::Comm* comm, LAMMPS_NS::Pair* pair) {
#if DEEPMD_LAMMPS_VERSION >= 20220324
  comm->reverse_comm(pair);
#else
  comm->reverse_comm_pair(pair);
#endif
}

}  // namespace deepmd::lammps

#endif  // DEEPMD_LAMMPS_LAMMPS_COMPAT_H_

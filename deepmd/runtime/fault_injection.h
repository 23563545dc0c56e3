// A test hook: DEEPMD_TEST_FAULT=SITE@RANK makes rank RANK throw std::bad_alloc at SITE, so that tests
// can show that an exception on one rank stops every rank with its message instead of hanging its
// peers (tests/lammps/bad_physics_test.py). Sites: "rebuild" (the runtime, at a topology rebuild),
// "settings" and "compute" (the LAMMPS pair style, outside the runtime). Unset: nothing happens.
#ifndef DEEPMD_RUNTIME_FAULT_INJECTION_H_
#define DEEPMD_RUNTIME_FAULT_INJECTION_H_

namespace deepmd::runtime {

// Throws std::bad_alloc when DEEPMD_TEST_FAULT names `site` and `rank`.
void MaybeInjectFault(const char* site, int rank);

}  // namespace deepmd::runtime

#endif  // DEEPMD_RUNTIME_FAULT_INJECTION_H_

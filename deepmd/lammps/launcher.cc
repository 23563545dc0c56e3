// lmp with pair_style deepmd and deepmd/spin built in, for LAMMPS builds without the PLUGIN package
// (such as Debian's): the same command line as lmp. It registers the styles through the plugin's own
// lammpsplugin_init, so both ways of loading run the same code.
#include "third_party/lammps/fmt_compat.h"  // before any LAMMPS header

#include <mpi.h>

#include <cstdio>
#include <exception>
#include <string>
#include <typeinfo>

#include "deepmd/lammps/lammps_plugin_abi.h"
#include "force.h"
#include "input.h"
#include "lammps.h"

namespace {

// What LAMMPS's `plugin load` does for pair styles: the creator goes into the pair style map.
void RegisterIntoForce(lammpsplugin_t* plugin, void* lmp) {
  auto* lammps = static_cast<LAMMPS_NS::LAMMPS*>(lmp);
  (*lammps->force->pair_map)[plugin->name] = reinterpret_cast<LAMMPS_NS::Force::PairCreator>(plugin->creator.v1);
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  LAMMPS_NS::LAMMPS* lammps = nullptr;
  try {
    lammps = new LAMMPS_NS::LAMMPS(argc, argv, MPI_COMM_WORLD);
    lammpsplugin_init(lammps, nullptr, reinterpret_cast<void*>(&RegisterIntoForce));
    lammps->input->file();
    delete lammps;
  } catch (const std::exception& e) {
    // Debian's LAMMPS is built with exceptions: error->all throws on every rank (they all stop
    // together and may finalize), error->one on one rank only (its peers must be aborted).
    if (std::string(typeid(e).name()).find("LAMMPSAbortException") != std::string::npos) {
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_Finalize();
    return 1;
  }
  MPI_Finalize();
  return 0;
}

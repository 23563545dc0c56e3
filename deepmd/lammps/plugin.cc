// lammpsplugin_init: registers pair_style deepmd and deepmd/spin (alias deepspin) with LAMMPS (`plugin load` in builds
// with the PLUGIN package; the launcher calls it directly for builds without).
#include "third_party/lammps/fmt_compat.h"  // before any LAMMPS header

#include "deepmd/lammps/lammps_plugin_abi.h"
#include "deepmd/lammps/pair_deepmd.h"
#include "deepmd/lammps/pair_deepspin.h"
#include "lammps.h"

namespace {

// The LAMMPS release whose headers this plugin is compiled against (Debian's liblammps-dev 20220106
// packages LAMMPS 29 Sep 2021, update 2); LAMMPS warns when it loads a plugin built for another.
constexpr const char* kLammpsVersion = "29 Sep 2021";

void* CreatePairDeepMD(void* lmp) { return new LAMMPS_NS::PairDeepMD(static_cast<LAMMPS_NS::LAMMPS*>(lmp)); }
void* CreatePairDeepSpin(void* lmp) { return new LAMMPS_NS::PairDeepSpin(static_cast<LAMMPS_NS::LAMMPS*>(lmp)); }

}  // namespace

extern "C" void lammpsplugin_init(void* lmp, void* handle, void* regfunc) {
  auto register_style = reinterpret_cast<lammpsplugin_regfunc>(regfunc);
  lammpsplugin_t plugin;
  plugin.version = kLammpsVersion;
  plugin.style = "pair";
  plugin.author = "deepmd-gnn";
  plugin.handle = handle;

  plugin.name = "deepmd";
  plugin.info = "deepmd model archives (message-passing GNNs on any number of ranks)";
  plugin.creator.v1 = &CreatePairDeepMD;
  register_style(&plugin, lmp);

  plugin.name = "deepmd/spin";
  plugin.info = "deepmd spin model archives (virtual atoms, magnetic forces)";
  plugin.creator.v1 = &CreatePairDeepSpin;
  register_style(&plugin, lmp);

  // deepmd-kit's name for the same style, so that its spin inputs run unchanged.
  plugin.name = "deepspin";
  register_style(&plugin, lmp);
}

// lammpsplugin_init: registers pair_style deepmd and deepmd/spin (alias deepspin) with LAMMPS (`plugin load` in builds
// with the PLUGIN package; the launcher calls it directly for builds without).
#include "third_party/lammps/fmt_compat.h"  // before any LAMMPS header

#include <string>

#include "absl/strings/str_format.h"
#include "comm.h"
#include "deepmd/lammps/lammps_compat.h"
#include "deepmd/lammps/lammps_plugin_abi.h"
#include "deepmd/lammps/pair_deepmd.h"
#include "deepmd/lammps/pair_deepspin.h"
#include "error.h"
#include "lammps.h"

namespace {

// The LAMMPS release whose headers this plugin is compiled against, written as LAMMPS writes its
// version ("4 Feb 2025"): LAMMPS prints both when they differ and it loads the plugin verbosely.
const std::string& CompiledVersion() {
  static const std::string version = [] {
    constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    constexpr int kDate = DEEPMD_LAMMPS_VERSION;
    static_assert(kDate / 100 % 100 >= 1 && kDate / 100 % 100 <= 12, "DEEPMD_LAMMPS_VERSION is not yyyymmdd");
    return absl::StrFormat("%d %s %d", kDate % 100, kMonths[kDate / 100 % 100 - 1], kDate / 10000);
  }();
  return version;
}

// The styles use LAMMPS's classes directly (Pair, Atom, Comm, ...), whose layout changes between
// releases: a plugin compiled against other headers may crash or compute wrong numbers.
void WarnIfAnotherRelease(LAMMPS_NS::LAMMPS* lmp) {
  if (lmp == nullptr || lmp->num_ver == DEEPMD_LAMMPS_VERSION || lmp->comm->me != 0) return;
  lmp->error->warning(
      FLERR, absl::StrFormat("deepmd plugin: compiled against the headers of LAMMPS %s (%d) but loaded into LAMMPS "
                             "%s (%d); the pair styles use LAMMPS's classes directly, so this may crash or compute "
                             "wrong results: rebuild the plugin against this LAMMPS (bazel build "
                             "//deepmd/lammps:plugin --repo_env=DEEPMD_LAMMPS_PREFIX=<its install prefix>)",
                             CompiledVersion(), DEEPMD_LAMMPS_VERSION, lmp->version, lmp->num_ver));
}

void* CreatePairDeepMD(void* lmp) { return new LAMMPS_NS::PairDeepMD(static_cast<LAMMPS_NS::LAMMPS*>(lmp)); }
void* CreatePairDeepSpin(void* lmp) { return new LAMMPS_NS::PairDeepSpin(static_cast<LAMMPS_NS::LAMMPS*>(lmp)); }

}  // namespace

extern "C" void lammpsplugin_init(void* lmp, void* handle, void* regfunc) {
  WarnIfAnotherRelease(static_cast<LAMMPS_NS::LAMMPS*>(lmp));
  auto register_style = reinterpret_cast<lammpsplugin_regfunc>(regfunc);
  lammpsplugin_t plugin;
  plugin.version = CompiledVersion().c_str();  // static storage: LAMMPS keeps the pointer
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

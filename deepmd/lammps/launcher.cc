// lmp with pair_style deepmd and deepmd/spin built in, for LAMMPS builds without the PLUGIN package
// (such as Debian's): the same command line as lmp. It registers the styles through the plugin's own
// lammpsplugin_init, so both ways of loading run the same code. It chooses the process policy (malloc,
// threads of LibTorch and OpenBLAS) once LAMMPS has started and logs it, and no exception leaves it
// without its message: LAMMPS's own have printed theirs, any other is printed and ends the job.
#include "third_party/lammps/fmt_compat.h"  // before any LAMMPS header

#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <typeinfo>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "deepmd/lammps/lammps_plugin_abi.h"
#include "deepmd/runtime/exception_status.h"
#include "deepmd/runtime/process_policy.h"
#include "deepmd/runtime/rank_agreement.h"
#include "force.h"
#include "input.h"
#include "lammps.h"
#include "utils.h"

namespace {

// What LAMMPS's `plugin load` does for pair styles: the creator goes into the pair style map.
void RegisterIntoForce(lammpsplugin_t* plugin, void* lmp) {
  auto* lammps = static_cast<LAMMPS_NS::LAMMPS*>(lmp);
  (*lammps->force->pair_map)[plugin->name] = reinterpret_cast<LAMMPS_NS::Force::PairCreator>(plugin->creator.v1);
}

int Rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

// On this rank's screen (stderr where LAMMPS gave it none) and, on rank 0, in log.lammps.
void Report(LAMMPS_NS::LAMMPS* lammps, const std::string& message) {
  FILE* screen = lammps != nullptr && lammps->screen != nullptr ? lammps->screen : stderr;
  std::fputs(message.c_str(), screen);
  std::fflush(screen);
  if (lammps != nullptr && lammps->logfile != nullptr) {
    std::fputs(message.c_str(), lammps->logfile);
    std::fflush(lammps->logfile);
  }
}

// For the exit hook: LAMMPS while it runs the input, this rank, and where its log goes.
LAMMPS_NS::LAMMPS* g_lammps = nullptr;
int g_rank = 0;  // MPI may be finalized when the hook runs
std::string g_log_path = "log.lammps";

// `clear` makes a new Force whose pair style map holds LAMMPS's built-in styles only: the ones this
// launcher registered at start-up are gone, and LAMMPS says only that it does not know them (then exits,
// in Debian's build, which is why this runs at exit too). Said on rank 0, on stderr and in the log.
void ExplainStyleLostByClear() {
  static bool explained = false;
  if (explained || g_lammps == nullptr || g_rank != 0) return;
  // The failing command's first argument (its own name is not public) is one of our styles, unknown now.
  const LAMMPS_NS::Input* input = g_lammps->input;
  if (input == nullptr || input->narg < 1 || !absl::StartsWith(input->arg[0], "deepmd")) return;
  if (g_lammps->force == nullptr || g_lammps->force->pair_map->count("deepmd") > 0) return;
  explained = true;
  const char* message =
      "ERROR: pair_style deepmd and deepmd/spin are registered once, when lmp starts; a 'clear' command "
      "discards them with the rest of LAMMPS's state. Remove 'clear' from the input (run each system in its "
      "own lmp invocation), or use a LAMMPS with the PLUGIN package and 'plugin load libdeepmd_lammps.so' "
      "after 'clear'.\n";
  std::fputs(message, stderr);
  if (g_log_path == "none") return;
  if (FILE* log = std::fopen(g_log_path.c_str(), "a")) {  // LAMMPS may have closed its own handle
    std::fputs(message, log);
    std::fclose(log);
  }
}

// LAMMPS's -log / -l argument (default log.lammps).
std::string LogPath(int argc, char** argv) {
  std::string path = "log.lammps";
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::string(argv[i]) == "-log" || std::string(argv[i]) == "-l") path = argv[i + 1];
  }
  return path;
}

// The process policy from the environment, the same on every rank (a bad DEEPMD_NUM_THREADS stops all).
bool ChooseProcessPolicy(LAMMPS_NS::LAMMPS* lammps) {
  int nranks = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &nranks);
  std::string warning;
  absl::StatusOr<deepmd::runtime::ProcessPolicy> policy = deepmd::runtime::PolicyFromEnvironment(nranks > 1, &warning);
  const absl::Status agreed = deepmd::runtime::AgreeAcrossRanks(policy.status(), MPI_COMM_WORLD);
  if (!agreed.ok()) {
    if (Rank() == 0) Report(lammps, absl::StrCat("ERROR: ", agreed.message(), "\n"));
    return false;
  }
  deepmd::runtime::ApplyProcessPolicy(*policy);
  if (Rank() == 0) {
    if (!warning.empty()) Report(lammps, absl::StrCat("WARNING: ", warning, "\n"));
    LAMMPS_NS::utils::logmesg(lammps, absl::StrCat("deepmd lmp: ", deepmd::runtime::DescribeProcessPolicy(), "\n"));
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  g_rank = Rank();
  g_log_path = LogPath(argc, argv);
  std::atexit(&ExplainStyleLostByClear);
  LAMMPS_NS::LAMMPS* lammps = nullptr;
  try {
    lammps = new LAMMPS_NS::LAMMPS(argc, argv, MPI_COMM_WORLD);
    g_lammps = lammps;
    if (!ChooseProcessPolicy(lammps)) {
      MPI_Finalize();
      return 1;
    }
    lammpsplugin_init(lammps, nullptr, reinterpret_cast<void*>(&RegisterIntoForce));
    lammps->input->file();
    g_lammps = nullptr;
    delete lammps;
  } catch (const std::exception& e) {
    // Debian's LAMMPS is built with exceptions: error->all throws on every rank (they all stop
    // together and may finalize), error->one on one rank only (its peers must be aborted). Both have
    // printed their message.
    const std::string type = typeid(e).name();
    if (absl::StrContains(type, "LAMMPSAbortException")) MPI_Abort(MPI_COMM_WORLD, 1);
    if (!absl::StrContains(type, "LAMMPS_NS")) {
      // Anything else was thrown on this rank alone, wherever its peers are: say what, then end the job.
      const absl::Status status = deepmd::runtime::StatusFromException(std::current_exception(), "");
      Report(lammps, absl::StrCat("ERROR on proc ", Rank(), ": ", status.message(), "\n"));
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    ExplainStyleLostByClear();
    MPI_Finalize();
    return 1;
  } catch (...) {
    Report(lammps, absl::StrCat("ERROR on proc ", Rank(), ": an exception that is not a std::exception\n"));
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Finalize();
  return 0;
}

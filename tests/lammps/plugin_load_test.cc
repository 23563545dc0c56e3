// The plugin `bazel build //deepmd/lammps:plugin` makes, in the current LAMMPS it is built for
// (@lammps_current), as a user loads it: `plugin load` resolves every symbol and registers pair styles
// deepmd, deepmd/spin and deepspin (deepmd-kit's name for it); our declarations of LAMMPS's plugin interface
// (lammps_plugin_abi.h) have the layout of LAMMPS's own lammpsplugin.h; a LAMMPS of another release gets a warning
// naming both.
#include <dlfcn.h>
#include <mpi.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <vector>

#include "deepmd/lammps/lammps_plugin_abi.h"
#include "force.h"
#include "input.h"
#include "lammps.h"

namespace lammps_header {
#include "lammpsplugin.h"  // NOLINT: LAMMPS's declarations, in a namespace to compare with ours
}  // namespace lammps_header

namespace {

using Theirs = lammps_header::lammpsplugin_t;
static_assert(sizeof(lammpsplugin_t) == sizeof(Theirs), "lammpsplugin_t size");
static_assert(offsetof(lammpsplugin_t, version) == offsetof(Theirs, version), "version");
static_assert(offsetof(lammpsplugin_t, style) == offsetof(Theirs, style), "style");
static_assert(offsetof(lammpsplugin_t, name) == offsetof(Theirs, name), "name");
static_assert(offsetof(lammpsplugin_t, info) == offsetof(Theirs, info), "info");
static_assert(offsetof(lammpsplugin_t, author) == offsetof(Theirs, author), "author");
static_assert(offsetof(lammpsplugin_t, creator) == offsetof(Theirs, creator), "creator");
static_assert(offsetof(lammpsplugin_t, handle) == offsetof(Theirs, handle), "handle");
static_assert(std::is_same_v<decltype(lammpsplugin_t::creator.v1), decltype(Theirs::creator.v1)>, "factory1");
static_assert(std::is_same_v<decltype(lammpsplugin_t::creator.v2), decltype(Theirs::creator.v2)>, "factory2");
// The struct types differ by name only: compare the callback's signature with each its own struct.
static_assert(std::is_same_v<lammpsplugin_regfunc, void (*)(lammpsplugin_t*, void*)>, "regfunc");
static_assert(std::is_same_v<lammps_header::lammpsplugin_regfunc, void (*)(Theirs*, void*)>, "regfunc");
static_assert(std::is_same_v<decltype(&lammpsplugin_init), lammps_header::lammpsplugin_initfunc>, "init");

std::vector<std::string> registered;
void Record(lammpsplugin_t* plugin, void* /*lmp*/) { registered.push_back(plugin->name); }

// What `body` writes to LAMMPS's screen.
template <typename Body>
std::string Screen(LAMMPS_NS::LAMMPS* lmp, Body body) {
  char* text = nullptr;
  size_t size = 0;
  FILE* memory = open_memstream(&text, &size);
  FILE* screen = lmp->screen;
  lmp->screen = memory;
  body();
  lmp->screen = screen;
  std::fclose(memory);
  std::string result(text, size);
  std::free(text);
  return result;
}

int Fail(const std::string& what) {
  std::fprintf(stderr, "FAIL: %s\n", what.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return Fail("usage: plugin_load_test PLUGIN.so");
  MPI_Init(&argc, &argv);
  const char* args[] = {"plugin_load_test", "-log", "none", "-nocite"};
  auto* lmp = new LAMMPS_NS::LAMMPS(4, const_cast<char**>(args), MPI_COMM_WORLD);

  const std::string loaded = Screen(lmp, [&] { lmp->input->one(std::string("plugin load ") + argv[1]); });
  std::printf("plugin load in LAMMPS %s:\n%s", lmp->version, loaded.c_str());
  for (const char* style : {"deepmd", "deepmd/spin"}) {
    if (lmp->force->pair_map->count(style) == 0) return Fail(std::string("plugin load did not register ") + style);
  }
  if (loaded.find("WARNING") != std::string::npos) return Fail("a warning from the release the plugin is built for");

  // The same entry point in a LAMMPS that says it is another release (Debian's 29 Sep 2021).
  void* handle = dlopen(argv[1], RTLD_NOW | RTLD_NOLOAD);
  auto init = reinterpret_cast<decltype(&lammpsplugin_init)>(handle ? dlsym(handle, "lammpsplugin_init") : nullptr);
  if (init == nullptr) return Fail("lammpsplugin_init not found in the loaded plugin");
  const char* version = lmp->version;
  const int num_ver = lmp->num_ver;
  lmp->version = "29 Sep 2021";
  lmp->num_ver = 20210929;
  const std::string other = Screen(lmp, [&] { init(lmp, handle, reinterpret_cast<void*>(&Record)); });
  lmp->version = version;
  lmp->num_ver = num_ver;
  std::printf("lammpsplugin_init in a LAMMPS saying 29 Sep 2021:\n%s", other.c_str());
  const std::string expected = std::string("compiled against the headers of LAMMPS ") + version + " (" +
                               std::to_string(num_ver) + ") but loaded into LAMMPS 29 Sep 2021 (20210929)";
  if (other.find("WARNING: deepmd plugin: " + expected) == std::string::npos) return Fail("no warning: " + expected);
  if (registered != std::vector<std::string>{"deepmd", "deepmd/spin", "deepspin"})
    return Fail("styles registered on the second call");

  delete lmp;
  MPI_Finalize();
  std::printf("PASS\n");
  return 0;
}

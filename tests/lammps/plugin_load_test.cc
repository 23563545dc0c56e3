// The shared object `bazel build //deepmd/lammps:plugin` makes loads with every symbol resolved
// (RTLD_NOW), exports lammpsplugin_init, and registers pair styles deepmd, deepmd/spin and deepspin (deepmd-kit's
// name for it) through the regfunc, as LAMMPS's `plugin load` would call it.
#include <dlfcn.h>

#include <cstdio>
#include <string>
#include <vector>

#include "deepmd/lammps/lammps_plugin_abi.h"

namespace {

std::vector<std::string> registered;

void Register(lammpsplugin_t* plugin, void* /*lmp*/) {
  if (std::string(plugin->style) == "pair" && plugin->creator.v1 != nullptr && plugin->version != nullptr) {
    registered.push_back(plugin->name);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: plugin_load_test PLUGIN.so\n");
    return 2;
  }
  void* handle = dlopen(argv[1], RTLD_NOW | RTLD_GLOBAL);
  if (handle == nullptr) {
    std::fprintf(stderr, "dlopen failed: %s\n", dlerror());
    return 1;
  }
  auto init = reinterpret_cast<void (*)(void*, void*, void*)>(dlsym(handle, "lammpsplugin_init"));
  if (init == nullptr) {
    std::fprintf(stderr, "no lammpsplugin_init: %s\n", dlerror());
    return 1;
  }
  init(nullptr, handle, reinterpret_cast<void*>(&Register));
  if (registered != std::vector<std::string>{"deepmd", "deepmd/spin", "deepspin"}) {
    std::fprintf(stderr, "registered %zu styles, expected deepmd, deepmd/spin, deepspin\n", registered.size());
    return 1;
  }
  std::printf("plugin loads and registers pair styles deepmd, deepmd/spin, deepspin\n");
  return 0;
}

// The plugin interface of LAMMPS's PLUGIN package (lammpsplugin.h, which Debian does not ship),
// declared here with the same layout: LAMMPS's `plugin load` calls lammpsplugin_init(lmp, handle,
// regfunc) and the plugin hands each style to regfunc.
#ifndef DEEPMD_LAMMPS_LAMMPS_PLUGIN_ABI_H_
#define DEEPMD_LAMMPS_LAMMPS_PLUGIN_ABI_H_

extern "C" {

typedef void*(lammpsplugin_factory1)(void* lmp);
typedef void*(lammpsplugin_factory2)(void* lmp, int argc, char** argv);

typedef struct {
  const char* version;  // the LAMMPS version the plugin was built for
  const char* style;    // "pair", "fix", ...
  const char* name;     // the style's name in input scripts
  const char* info;
  const char* author;
  union {
    lammpsplugin_factory1* v1;  // pair styles use v1
    lammpsplugin_factory2* v2;
  } creator;
  void* handle;  // from dlopen, for unloading
} lammpsplugin_t;

typedef void (*lammpsplugin_regfunc)(lammpsplugin_t* plugin, void* lmp);

// The entry point LAMMPS looks up with dlsym.
void lammpsplugin_init(void* lmp, void* handle, void* regfunc);

}  // extern "C"

#endif  // DEEPMD_LAMMPS_LAMMPS_PLUGIN_ABI_H_

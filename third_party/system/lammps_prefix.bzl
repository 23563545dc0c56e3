"""A LAMMPS install prefix (cmake -DBUILD_SHARED_LIBS=on -DPKG_PLUGIN=on ... && cmake --install) as a repository.

The plugin (//deepmd/lammps:plugin) compiles against its headers; the tests run its bin/lmp. The prefix is
$DEEPMD_LAMMPS_PREFIX, else the install scripts/build_lammps.sh makes ($DEEPMD_LAMMPS_CACHE or
~/.cache/deepmd-gnn/lammps-20250204, then /install). Its integer sizes (LAMMPS_SMALLBIG, ...) and release
(DEEPMD_LAMMPS_VERSION, yyyymmdd) come from its lib/pkgconfig/liblammps.pc, which LAMMPS's cmake writes.
"""

_DEFAULT_CACHE = ".cache/deepmd-gnn/lammps-20250204"

# What the plugin needs from the prefix (lammpsplugin.h and version.h are not in cmake's install set;
# scripts/build_lammps.sh copies them from src/).
_REQUIRED = [
    "bin/lmp",
    "lib/liblammps.so",
    "lib/pkgconfig/liblammps.pc",
    "include/lammps/lammps.h",
    "include/lammps/pair.h",
    "include/lammps/lammpsplugin.h",
]

def _prefix(ctx):
    env = ctx.os.environ
    if env.get("DEEPMD_LAMMPS_PREFIX"):
        return env["DEEPMD_LAMMPS_PREFIX"], "DEEPMD_LAMMPS_PREFIX"
    cache = env.get("DEEPMD_LAMMPS_CACHE") or "%s/%s" % (env.get("HOME", ""), _DEFAULT_CACHE)
    return cache + "/install", "the default of scripts/build_lammps.sh"

def _pc_field(pc, key):
    for line in pc.splitlines():
        if line.startswith(key + ":"):
            return line[len(key) + 1:].strip()
    return ""

def _lammps_prefix_impl(ctx):
    prefix, origin = _prefix(ctx)
    missing = [f for f in _REQUIRED if not ctx.path(prefix + "/" + f).exists]
    if missing:
        fail(("No LAMMPS for the plugin at %s (%s): missing %s.\n" +
              "Run scripts/build_lammps.sh (builds LAMMPS 4 Feb 2025 with PLUGIN and SPIN into its cache, the default prefix, " +
              "~6 min on 2 cores, once), or point --repo_env=DEEPMD_LAMMPS_PREFIX=/your/prefix at a LAMMPS installed " +
              "with cmake -DBUILD_SHARED_LIBS=on -DPKG_PLUGIN=on, with src/lammpsplugin.h copied into " +
              "PREFIX/include/lammps.") % (prefix, origin, ", ".join(missing)))
    pc = ctx.read(prefix + "/lib/pkgconfig/liblammps.pc")
    version = _pc_field(pc, "Version")
    if len(version) != 8 or not version.isdigit():
        fail("%s/lib/pkgconfig/liblammps.pc: Version '%s' is not a LAMMPS release date (yyyymmdd)" % (prefix, version))

    # The API defines of the build (-DLAMMPS_SMALLBIG, ...): the plugin must use the same integer sizes.
    defines = [w[2:] for w in _pc_field(pc, "Cflags").split(" ") if w.startswith("-D")]
    if not [d for d in defines if d in ("LAMMPS_SMALLBIG", "LAMMPS_BIGBIG", "LAMMPS_SMALLSMALL")]:
        defines.append("LAMMPS_SMALLBIG")  # LAMMPS's default when none is given
    for d in ("bin", "lib", "include"):
        ctx.symlink(prefix + "/" + d, d)
    ctx.file("WORKSPACE", 'workspace(name = "%s")\n' % ctx.name)
    ctx.file("BUILD.bazel", """# LAMMPS %s at %s (third_party/system/lammps_prefix.bzl).
package(default_visibility = ["//visibility:public"])

# Headers only: the plugin's LAMMPS symbols resolve in the lmp that loads it (plugin load).
cc_library(
    name = "headers",
    hdrs = glob(["include/lammps/**/*.h"]),
    defines = %r,
    includes = ["include/lammps"],
)

# liblammps for programs that run LAMMPS in-process (tests); the plugin must not link it.
cc_library(
    name = "liblammps",
    linkopts = ["-L{prefix}/lib", "-Wl,-rpath,{prefix}/lib", "-llammps"],
    deps = [":headers"],
)

# lmp and the library it runs with (RUNPATH $ORIGIN/../lib).
filegroup(
    name = "lmp",
    srcs = ["bin/lmp"],
    data = glob(["lib/liblammps.so*"]),
)

exports_files(["lib/liblammps.so"])
""".replace("{prefix}", prefix) % (version, prefix, defines + ["DEEPMD_LAMMPS_VERSION=" + version]))

lammps_prefix_repository = repository_rule(
    implementation = _lammps_prefix_impl,
    environ = ["DEEPMD_LAMMPS_PREFIX", "DEEPMD_LAMMPS_CACHE", "HOME"],
    local = True,
)

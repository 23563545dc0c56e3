"""lammps_test: one LAMMPS test, declared for both LAMMPS the project runs in.

    NAME              Debian's LAMMPS through our launcher (//deepmd/lammps:lmp), as before;
    NAME_plugin_test  (NAME without its _test) the current LAMMPS (@lammps_current, scripts/build_lammps.sh)
                      with `plugin load` of //deepmd/lammps:plugin: the same script, args and data, with the
                      launcher replaced by that lmp and $DEEPMD_LAMMPS_PLUGIN set (tests/lammps/harness.py
                      then starts every input with `plugin load`).

`plugin_args` replaces `args` in the plugin variant (e.g. fewer grids, or the SPIN package); `plugin =
False` declares the launcher test only, `launcher = False` the plugin test only.
"""

load("//tests:python_test.bzl", "python_test")

LAUNCHER = "//deepmd/lammps:lmp"
CURRENT_LMP = "@lammps_current//:lmp"
PLUGIN = "//deepmd/lammps:plugin"

def plugin_test_name(name):
    return (name[:-len("_test")] if name.endswith("_test") else name) + "_plugin_test"

def _in_current_lammps(values):
    return [v.replace(LAUNCHER, CURRENT_LMP) for v in values]

def lammps_test(name, script, args, data, plugin = True, launcher = True, plugin_args = None, **kwargs):
    if launcher:
        python_test(name = name, script = script, args = args, data = data, **kwargs)
    if plugin:
        python_test(
            name = plugin_test_name(name),
            script = script,
            args = _in_current_lammps(args if plugin_args == None else plugin_args),
            data = _in_current_lammps(data) + [PLUGIN],
            env = {"DEEPMD_LAMMPS_PLUGIN": "$(location %s)" % PLUGIN},
            **kwargs
        )

"""deepmd_kit_fixtures: the folder of deepmd-kit's fixture models, water data and reference outputs as a
repository (`@deepmd_kit_fixtures//:all`). It is `$DEEPMD_KIT_FIXTURES`, else `../shared/deepmd-kit`
beside this workspace; where neither exists, loading the repository fails with a message naming both,
so the tests that need it stop with it (everything else builds without it)."""

def _deepmd_kit_fixtures_impl(ctx):
    root = ctx.path(Label("//:WORKSPACE")).dirname
    path = ctx.os.environ.get("DEEPMD_KIT_FIXTURES", "")
    if not path:
        path = "%s/../shared/deepmd-kit" % root
    found = ctx.path(path).exists and ctx.path(path + "/models").exists
    if found:
        for name in ["models", "references", "data", "README.md"]:
            if ctx.path(path + "/" + name).exists:
                ctx.symlink(path + "/" + name, name)
    ctx.file("WORKSPACE", 'workspace(name = "%s")\n' % ctx.name)
    if not found:
        # Loading this package fails, so every target that reads a fixture stops with the cause and the fix
        # (not with "no such target" for the first file it names).
        ctx.file("BUILD.bazel", 'fail("%s")\n' % (
            "deepmd-kit's fixture models, water data and reference outputs are not at %s: place them " % path +
            "there (../shared/deepmd-kit beside this workspace) or set DEEPMD_KIT_FIXTURES to their folder; " +
            "targets that do not use them (bazel build //deepmd/lammps:plugin) build without them"
        ))
        return
    ctx.file("BUILD.bazel", """# deepmd-kit fixtures from %s
package(default_visibility = ["//visibility:public"])
filegroup(name = "all", srcs = glob(["models/**", "references/**", "data/**"]))
filegroup(name = "models", srcs = glob(["models/**"]))
filegroup(name = "references", srcs = glob(["references/**"]))
filegroup(name = "water", srcs = glob(["data/water/**"]))
""" % path)

deepmd_kit_fixtures = repository_rule(
    implementation = _deepmd_kit_fixtures_impl,
    environ = ["DEEPMD_KIT_FIXTURES"],
    local = True,
)

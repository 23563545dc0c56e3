"""deepmd_kit_fixtures: the folder of deepmd-kit's fixture models, water data and reference outputs as a
repository (`@deepmd_kit_fixtures//:all`). It is `$DEEPMD_KIT_FIXTURES`, else `../shared/deepmd-kit`
beside this workspace; where neither exists the repository is empty and the tests that need it fail
with a message saying so."""

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
    ctx.file("BUILD.bazel", """# deepmd-kit fixtures from %s (%s)
package(default_visibility = ["//visibility:public"])
filegroup(name = "all", srcs = glob(["models/**", "references/**", "data/**"]))
filegroup(name = "models", srcs = glob(["models/**"]))
filegroup(name = "references", srcs = glob(["references/**"]))
filegroup(name = "water", srcs = glob(["data/water/**"]))
""" % (path, "found" if found else "MISSING: set DEEPMD_KIT_FIXTURES"))

deepmd_kit_fixtures = repository_rule(
    implementation = _deepmd_kit_fixtures_impl,
    environ = ["DEEPMD_KIT_FIXTURES"],
    local = True,
)

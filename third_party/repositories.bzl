"""External repositories of deepmd-gnn-mpi: offline shims and Debian system libraries.

Call `deepmd_gnn_dependencies()` from the WORKSPACE of this repository, or from any outer WORKSPACE that
vendors it (see docs/vendoring.md). Every label below is written relative to this repository, so the
macro works whatever name the outer workspace gives it. Existing definitions win (maybe()), so an outer
monorepo can supply its own LibTorch, MPI, ...
"""

load("@bazel_tools//tools/build_defs/repo:utils.bzl", "maybe")
load("//third_party/system:absl.bzl", "system_absl")
load("//third_party/system:lammps_prefix.bzl", "lammps_prefix_repository")

def _files_repository_impl(ctx):
    """A repository made of files of this one, each placed at a chosen path."""
    for src, dst in ctx.attr.files.items():
        ctx.symlink(src, dst)
    if ctx.attr.workspace_name:
        ctx.file("WORKSPACE", 'workspace(name = "%s")\n' % ctx.attr.workspace_name)
    for path, content in ctx.attr.contents.items():
        ctx.file(path, content)

_files_repository = repository_rule(
    implementation = _files_repository_impl,
    attrs = {
        "files": attr.label_keyed_string_dict(allow_files = True),
        "contents": attr.string_dict(),
        "workspace_name": attr.string(),
    },
)

def _debian_python_impl(ctx):
    """Debian's /usr/bin/python3, which has python3-torch (the first python3 on PATH may not)."""
    python = ctx.attr.interpreter
    result = ctx.execute([python, "-c", "import torch, sys; sys.stdout.write(torch.__version__)"])
    if result.return_code != 0:
        fail("%s cannot import torch: run scripts/bootstrap.sh (installs python3-torch).\n%s" %
             (python, result.stderr))
    ctx.symlink(python, "python3")
    ctx.file("torch_version.txt", result.stdout + "\n")
    ctx.file("WORKSPACE", 'workspace(name = "%s")\n' % ctx.name)
    ctx.file("BUILD.bazel", """# Debian's Python interpreter with torch %s (python3-torch).
package(default_visibility = ["//visibility:public"])
exports_files(["python3", "torch_version.txt"])
""" % result.stdout)

_debian_python = repository_rule(
    implementation = _debian_python_impl,
    attrs = {"interpreter": attr.string(default = "/usr/bin/python3")},
    local = True,
)

def deepmd_gnn_dependencies():
    """Defines every external repository this project needs, all offline."""

    # --- Shims: Bazel 4 would otherwise download these at the first build or test.
    maybe(
        _files_repository,
        name = "rules_cc",
        workspace_name = "rules_cc",
        files = {Label("//third_party/shims:rules_cc_defs.bzl"): "cc/defs.bzl"},
        contents = {"BUILD": "", "cc/BUILD": ""},
    )
    maybe(
        _files_repository,
        name = "rules_java",
        workspace_name = "rules_java",
        files = {Label("//third_party/shims:rules_java_defs.bzl"): "java/defs.bzl"},
        contents = {"BUILD": "", "java/BUILD": ""},
    )
    maybe(
        _files_repository,
        name = "remote_coverage_tools",
        workspace_name = "remote_coverage_tools",
        files = {
            Label("//third_party/shims:coverage_output_generator.sh"): "coverage_output_generator.sh",
            Label("//third_party/shims:remote_coverage_tools.BUILD"): "BUILD",
        },
    )

    # --- Debian system libraries (scripts/bootstrap.sh installs them).
    maybe(
        native.new_local_repository,
        name = "libtorch",  # libtorch-dev 1.13.1, CPU only
        path = "/usr",
        build_file = str(Label("//third_party/system:libtorch.BUILD")),
    )
    maybe(
        native.new_local_repository,
        name = "openmpi",  # libopenmpi-dev 4.1.4
        path = "/usr/lib/x86_64-linux-gnu/openmpi",
        build_file = str(Label("//third_party/system:openmpi.BUILD")),
    )
    maybe(
        system_absl,
        name = "com_google_absl",  # libabsl-dev 20220623
    )
    maybe(
        native.new_local_repository,
        name = "com_google_googletest",  # libgtest-dev, libgmock-dev 1.12.1
        path = "/usr",
        build_file = str(Label("//third_party/system:googletest.BUILD")),
    )
    maybe(
        native.new_local_repository,
        name = "zlib",  # zlib1g-dev
        path = "/usr",
        build_file = str(Label("//third_party/system:zlib.BUILD")),
    )
    maybe(
        native.new_local_repository,
        name = "com_github_nlohmann_json",  # nlohmann-json3-dev 3.11 (header only)
        path = "/usr",
        build_file = str(Label("//third_party/system:nlohmann_json.BUILD")),
    )
    maybe(
        native.new_local_repository,
        name = "lammps",  # liblammps-dev 20220106 (headers subset + liblammps.so)
        path = "/usr",
        build_file = str(Label("//third_party/system:lammps.BUILD")),
    )
    maybe(
        lammps_prefix_repository,
        name = "lammps_current",  # a current LAMMPS with PLUGIN (scripts/build_lammps.sh, or yours)
    )
    maybe(
        _debian_python,
        name = "debian_python",  # python3-torch under /usr/bin/python3
    )

"""asan_binary: a cc_binary rebuilt, with all its C++ dependencies, under AddressSanitizer (and its
leak checker), whatever configuration the build runs in. The memcheck test uses it where valgrind
cannot run LibTorch's start-up code on the CPU at hand."""

def _asan_transition_impl(settings, attr):
    return {
        "//command_line_option:compilation_mode": "dbg",
        "//command_line_option:copt": settings["//command_line_option:copt"] + [
            "-O1",
            "-fsanitize=address",
            "-fno-omit-frame-pointer",
        ],
        "//command_line_option:linkopt": settings["//command_line_option:linkopt"] + ["-fsanitize=address"],
    }

_asan_transition = transition(
    implementation = _asan_transition_impl,
    inputs = ["//command_line_option:copt", "//command_line_option:linkopt"],
    outputs = [
        "//command_line_option:compilation_mode",
        "//command_line_option:copt",
        "//command_line_option:linkopt",
    ],
)

def _asan_binary_impl(ctx):
    binary = ctx.attr.binary[0][DefaultInfo].files_to_run.executable
    out = ctx.actions.declare_file(ctx.label.name)
    ctx.actions.symlink(output = out, target_file = binary, is_executable = True)
    runfiles = ctx.runfiles(files = [binary]).merge(ctx.attr.binary[0][DefaultInfo].default_runfiles)
    return [DefaultInfo(executable = out, files = depset([out]), runfiles = runfiles)]

asan_binary = rule(
    implementation = _asan_binary_impl,
    attrs = {
        "binary": attr.label(cfg = _asan_transition, executable = True, mandatory = True),
        "_allowlist_function_transition": attr.label(
            default = "@bazel_tools//tools/allowlists/function_transition_allowlist",
        ),
    },
    executable = True,
)

"""Debian's libabsl-dev as a repository whose target labels match upstream Abseil's.

Headers come from /usr/include (a system include directory); each target links the shared
libraries it needs. Code says `@com_google_absl//absl/status:statusor` exactly as with upstream Abseil,
so an outer monorepo that builds Abseil from source can substitute its own.
"""

_LIBS = {
    "absl/base": {"base": ["base", "raw_logging_internal", "spinlock_wait", "throw_delegate", "log_severity"]},
    "absl/strings": {
        "strings": ["strings", "strings_internal", "int128"],
        "str_format": ["str_format_internal"],
        "cord": ["cord", "cord_internal", "cordz_functions", "cordz_handle", "cordz_info"],
    },
    "absl/status": {
        "status": ["status", "cord", "cord_internal", "cordz_functions", "cordz_handle", "cordz_info",
                   "cordz_sample_token", "exponential_biased", "synchronization", "graphcycles_internal",
                   "malloc_internal", "stacktrace", "symbolize", "debugging_internal", "demangle_internal",
                   "time", "time_zone", "civil_time", "str_format_internal", "strerror"],
        "statusor": ["statusor", "bad_variant_access"],
    },
    "absl/flags": {
        "flag": ["flags_internal", "flags_marshalling", "flags_commandlineflag", "flags_commandlineflag_internal",
                 "flags_config", "flags_program_name", "flags_private_handle_accessor", "flags_reflection",
                 "hash", "city", "low_level_hash", "raw_hash_set", "hashtablez_sampler", "bad_optional_access"],
        "parse": ["flags_parse", "flags_usage", "flags_usage_internal"],
        "usage": ["flags_usage", "flags_usage_internal"],
    },
    "absl/container": {"flat_hash_map": ["raw_hash_set", "hash", "city", "low_level_hash", "hashtablez_sampler"]},
    "absl/types": {"optional": ["bad_optional_access"], "span": [], "variant": ["bad_variant_access"]},
    "absl/time": {"time": ["time", "time_zone", "civil_time"]},
    "absl/synchronization": {"synchronization": ["synchronization", "graphcycles_internal", "malloc_internal"]},
}

def _absl_impl(ctx):
    ctx.file("WORKSPACE", 'workspace(name = "%s")\n' % ctx.name)
    ctx.file("BUILD.bazel", "")
    for package, targets in _LIBS.items():
        lines = ['# Debian libabsl-dev (headers in /usr/include).', 'package(default_visibility = ["//visibility:public"])', ""]
        for target, libs in targets.items():
            opts = ['"-L/usr/lib/x86_64-linux-gnu"'] + ['"-labsl_%s"' % lib for lib in libs]
            deps = [] if package == "absl/base" else ['"//absl/base"']
            lines.append("cc_library(\n    name = \"%s\",\n    linkopts = [%s],\n    deps = [%s],\n)\n" %
                         (target, ", ".join(opts), ", ".join(deps)))
        ctx.file(package + "/BUILD.bazel", "\n".join(lines))

system_absl = repository_rule(implementation = _absl_impl, local = True)

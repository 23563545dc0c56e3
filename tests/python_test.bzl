"""python_test: a test script run in Debian's Python (with torch) and the deepmd_comm ops loaded."""

def python_test(name, script, data = [], args = [], **kwargs):
    native.sh_test(
        name = name,
        srcs = ["//tests:run_python_test.sh"],
        args = [
            "$(location @debian_python//:python3)",
            "$(location //deepmd/ops:libdeepmd_comm_ops.so)",
            native.package_name() + "/" + script,
        ] + args,
        data = [
            script,
            "//tests:python_support",
            "//deepmd/models:sources",
            "//deepmd/ops:libdeepmd_comm_ops.so",
            "@debian_python//:python3",
        ] + data,
        **kwargs
    )

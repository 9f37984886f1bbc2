"""shared_data: ../shared beside the repository as the repository @shared.

The tests read the golden data (../shared/golden) and the test media
(../shared/media). This rule links both into @shared, whose BUILD file
(//tools/bazel:shared.BUILD) has the filegroups @shared//:golden and
@shared//:media. Tests carry them as data, so Bazel tracks every file and
they appear in the runfiles tree at <runfiles>/shared/..., next to the
main repository at <runfiles>/musetalk/: internal/goldendir's default,
../shared/golden beside go.mod, finds them there as in the source tree.

Where ../shared does not exist the filegroups are empty: the tests that
need them skip, or fail under CI (internal/testenv.Missing).
"""

def _shared_data_impl(ctx):
    root = ctx.path(Label("//:WORKSPACE")).dirname
    src = ctx.path(str(root) + "/" + ctx.attr.path)
    for d in ctx.attr.dirs:
        p = ctx.path(str(src) + "/" + d)
        if p.exists:
            ctx.symlink(p, d)
        else:
            ctx.file(d + "/MISSING", "%s was not found when Bazel set up @%s\n" % (p, ctx.name))
    ctx.template("BUILD.bazel", ctx.attr.build_file)
    ctx.file("WORKSPACE", 'workspace(name = "%s")\n' % ctx.name)

shared_data = repository_rule(
    implementation = _shared_data_impl,
    attrs = {
        "path": attr.string(mandatory = True, doc = "relative to the workspace root"),
        "dirs": attr.string_list(mandatory = True),
        "build_file": attr.label(mandatory = True, allow_single_file = True),
    },
    local = True,
)

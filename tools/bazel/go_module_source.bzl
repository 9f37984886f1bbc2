"""go_module_source: a Bazel repository from a Go module, fetched with `go mod download`.

Bazel rule sets (rules_go, gazelle) are published as Go modules, so the Go
module proxy serves them. This rule runs the host's `go mod download -json
MODULE@VERSION`, copies the module's directory into the external
repository, applies patches and patch commands, and adds a WORKSPACE file
when the module has none. It names no host: `go` uses whatever `go env
GOPROXY` says (the environment, `go env -w`, or $GOROOT/go.env), and its
checksum database verifies the download.
"""

def _go(ctx):
    go = ctx.which("go")
    if go == None:
        for candidate in [ctx.os.environ.get("GOROOT", "") + "/bin/go", "/usr/local/go/bin/go"]:
            if ctx.path(candidate).exists:
                return ctx.path(candidate)
        fail("go_module_source: no `go` on PATH (nor /usr/local/go/bin/go)")
    return go

def _run(ctx, args, what, environment = {}):
    res = ctx.execute(args, environment = environment, quiet = True)
    if res.return_code != 0:
        fail("go_module_source %s: %s failed (exit %d):\n%s%s" % (
            ctx.name,
            what,
            res.return_code,
            res.stdout,
            res.stderr,
        ))
    return res.stdout

def _go_module_source_impl(ctx):
    go = _go(ctx)
    mod = "%s@%s" % (ctx.attr.module, ctx.attr.version)
    ctx.report_progress("go mod download " + mod)

    # Outside any module: the external repository's directory has no go.mod.
    out = _run(ctx, [go, "mod", "download", "-json", mod], "go mod download " + mod, {"GOFLAGS": "-mod=mod"})
    info = json.decode(out)
    if info.get("Error"):
        fail("go_module_source %s: %s" % (ctx.name, info["Error"]))
    if ctx.attr.sum and info.get("Sum") != ctx.attr.sum:
        fail("go_module_source %s: %s has sum %s, want %s" % (ctx.name, mod, info.get("Sum"), ctx.attr.sum))

    # The module cache is read-only; the copy must be writable for patches.
    _run(ctx, ["cp", "-R", info["Dir"] + "/.", "."], "copying " + info["Dir"])
    _run(ctx, ["chmod", "-R", "u+w", "."], "chmod")

    for patch in ctx.attr.patches:
        _run(ctx, ["patch", "-p1", "--no-backup-if-mismatch", "-i", str(ctx.path(patch))], "patch " + str(patch))
    for cmd in ctx.attr.patch_cmds:
        _run(ctx, ["bash", "-c", cmd], cmd, {"GOFLAGS": "-mod=mod"})

    if not ctx.path("WORKSPACE").exists and not ctx.path("WORKSPACE.bazel").exists:
        ctx.file("WORKSPACE", 'workspace(name = "%s")\n' % ctx.name)

go_module_source = repository_rule(
    implementation = _go_module_source_impl,
    attrs = {
        "module": attr.string(mandatory = True, doc = "module path, e.g. github.com/bazelbuild/rules_go"),
        "version": attr.string(mandatory = True, doc = "exact module version, e.g. v0.34.0"),
        "sum": attr.string(doc = "the module's go.sum hash (h1:...); checked when given"),
        "patches": attr.label_list(allow_files = True, doc = "patches applied with patch -p1"),
        "patch_cmds": attr.string_list(doc = "bash commands run in the repository after the patches"),
    },
    environ = ["GOPROXY", "GOFLAGS", "GONOSUMDB", "GOPRIVATE", "GOSUMDB"],
)

"""Go repositories for the rule sets' own tools, through the Go module proxy.

go_rules_dependencies() would download golang.org/x/tools, x/sys and
x/xerrors as http_archives from their hosts; only gazelle under Bazel (and
nogo, unused here) needs them. They are declared here as go_repository
rules instead, which fetch through `go env GOPROXY`.

Call this after go_dependencies() (deps.bzl, generated from go.mod) and
before go_rules_dependencies():

- golang.org/x/tools is pinned to v0.1.11, the version rules_go v0.34.0
  and gazelle v0.26.0 were released with: gazelle imports
  golang.org/x/tools/go/vcs, which later x/tools versions deleted. This
  definition, coming last, overrides the one go.mod puts in deps.bzl.
  Nothing of this module imports x/tools; if it ever does, it gets this
  version under Bazel (run gazelle outside Bazel and drop this pin then).
- golang.org/x/sys and x/xerrors keep go.mod's versions when deps.bzl
  declares them; these are fallbacks only.

This file is not gazelle's repository_macro, so `update-repos -prune`
leaves it alone.
"""

load("@bazel_gazelle//:deps.bzl", "go_repository")

def _maybe(name, **kwargs):
    if name not in native.existing_rules():
        go_repository(name = name, **kwargs)

def offline_go_rules_dependencies():
    go_repository(
        name = "org_golang_x_tools",
        build_directives = [
            "gazelle:resolve go golang.org/x/sys/execabs @org_golang_x_sys//execabs",
        ],
        build_file_proto_mode = "disable",
        importpath = "golang.org/x/tools",
        sum = "h1:loJ25fNOEhSXfHrpoGj91eCUThwdNX6u24rO1xnNteY=",
        version = "v0.1.11",
    )
    _maybe(
        name = "org_golang_x_sys",
        importpath = "golang.org/x/sys",
        sum = "h1:XbzkgYJHdqh/8m2Uu0W/dQv8nktxx4BFHp1M0gROTXA=",
        version = "v0.49.0",
    )
    _maybe(
        name = "org_golang_x_xerrors",
        importpath = "golang.org/x/xerrors",
        sum = "h1:go1bK/D/BFZV2I8cIQd1NKEZ+0owSTG1fDTci4IqFcE=",
        version = "v0.0.0-20200804184101-5ec99f83aff1",
    )

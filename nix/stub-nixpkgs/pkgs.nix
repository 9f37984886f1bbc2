# The package set of the stub nixpkgs (nixos-26.05): just enough of
# nixpkgs' interface for musetalk's flake.nix to evaluate, offline.
#
# Nothing here is a real package. Every derivation's builder prints that
# it is a stub and fails, so `nix flake check --no-build` works (names,
# types, .drv files) and any attempt to build with the stub fails loudly
# instead of passing.
#
# The attribute names follow nixpkgs (checked against the nixpkgs sources
# by hand, not by evaluating nixpkgs): a name that is wrong here is wrong
# in the flake too. What the release no longer has is modelled by the
# `throw`s nixpkgs itself puts in its place.
{
  system ? builtins.currentSystem,
  config ? {},
  overlays ? [],
  ...
}: let
  channel = "nixos-26.05";

  # A stub derivation named after the attribute it stands in for;
  # stubAttr ("<channel>:<attribute>") lets the tests see which release
  # each package of the dev shell comes from.
  drv = attr: env:
    builtins.derivation ({
        name = "stub-${channel}-${builtins.replaceStrings ["."] ["-"] attr}";
        inherit system;
        builder = "/bin/sh";
        args = ["-c" "echo 'stub nixpkgs (${channel}): ${attr} is not a real package; use the real nixpkgs input' >&2; exit 1"];
      }
      // env)
    // {
      pname = attr;
      version = "stub";
      stubAttr = "${channel}:${attr}";
      meta = {};
    };

  # nixpkgs refuses to evaluate unfree packages unless config allows them.
  unfree = attr: value:
    if config.allowUnfree or false
    then value
    else throw "Package ‘${attr}’ in stub nixpkgs (${channel}) has an unfree license (‘CUDA EULA’), refusing to evaluate: set config.allowUnfree.";

  removed = msg: throw "stub nixpkgs (${channel}): ${msg}";

  # The builders, reduced to the arguments the flake passes: each checks
  # what nixpkgs requires and forces the inputs and scripts, so a missing
  # attribute or a bad interpolation fails evaluation here too.
  mkDerivation = args:
    drv (args.name or "${args.pname}-${args.version}") {
      src = args.src or "";
      nativeBuildInputs = args.nativeBuildInputs or [];
      buildInputs = args.buildInputs or [];
      buildPhase = args.buildPhase or "";
      installPhase = args.installPhase or "";
    };

  mkShell = {
    packages ? [],
    nativeBuildInputs ? [],
    buildInputs ? [],
    shellHook ? "",
    ...
  }:
    drv "mkShell" {
      nativeBuildInputs = packages ++ nativeBuildInputs;
      inherit buildInputs shellHook;
    }
    // {
      nativeBuildInputs = packages ++ nativeBuildInputs;
      inherit buildInputs shellHook;
    };

  runCommand = name: env: script:
    drv name {
      nativeBuildInputs = env.nativeBuildInputs or [];
      buildCommand = script;
    };

  # buildGoModule: pname, version, src and vendorHash are required; the Go
  # modules are a fixed-output derivation whose hash is vendorHash, so a
  # malformed hash fails here as it does in nixpkgs.
  buildGoModule = go: args: let
    vendorHash =
      if args ? vendorHash
      then args.vendorHash
      else throw "buildGoModule: vendorHash is required (null when the module has no dependencies)";
    goModules =
      if vendorHash == null
      then null
      else
        builtins.derivation {
          name = "${args.pname}-${args.version}-go-modules";
          inherit system;
          builder = "/bin/sh";
          args = ["-c" "echo 'stub nixpkgs: the Go modules are not fetched' >&2; exit 1"];
          outputHash = vendorHash;
          outputHashMode = "recursive";
        };
  in
    drv "${args.pname}-${args.version}" {
      inherit (args) src;
      inherit go;
      subPackages = args.subPackages or [];
      ldflags = args.ldflags or [];
      goModules =
        if goModules == null
        then ""
        else goModules;
    }
    // {
      inherit goModules go;
      inherit (args) pname version;
    };

  # The version go.mod asks for: an assumption about the pinned release,
  # which the flake reports (builtins.trace) when it is false.
  go_1_26 = drv "go_1_26" {} // {version = "1.26.8";};
in
  assert overlays == [] || throw "stub nixpkgs: overlays are not supported"; {
    inherit go_1_26 mkShell runCommand;
    stdenv = {inherit mkDerivation system;};
    buildGo126Module = buildGoModule go_1_26;
    buildGoModule = buildGoModule go_1_26;
    ffmpeg = drv "ffmpeg" {};
    espeak-ng = drv "espeak-ng" {};
    postgresql = drv "postgresql" {};
    gcc = drv "gcc" {};
    git = drv "git" {};
    alejandra = drv "alejandra" {};
    nixpkgs-fmt = drv "nixpkgs-fmt" {};
    bazel_7 = drv "bazel_7" {};
    cudaPackages.cuda_nvcc = unfree "cuda_nvcc" (drv "cudaPackages.cuda_nvcc" {});

    # Gone from nixos-26.05 (pkgs/top-level/aliases.nix): the flake takes
    # them from nixpkgs-2505 (../stub-nixpkgs-2505).
    bazel_5 = removed "bazel_5 has been removed as it is EOL";
    bazel_6 = removed "bazel_6 has been removed as it will be EOL by the release of Nixpkgs 25.11";
    cudaPackages_11_8 = removed "CUDA 11.8 has been removed from Nixpkgs, as it is unmaintained upstream and depends on unsupported compilers";
  }

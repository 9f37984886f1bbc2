# musetalk's Nix flake: `nix develop` for contributors, `nix flake check`
# for gofmt, go vet and the unit tests, `nix fmt` for the Nix files.
#
# Nothing here has been built against the real nixpkgs yet: the machines
# this project is developed and tested on cannot reach GitHub or
# cache.nixos.org. CI checks what can be checked offline (nix/flake_test.go:
# parse, evaluation against the stub nixpkgs in nix/stub-nixpkgs,
# `nix flake check --no-build`, and that nix/vendor-hash matches go.sum).
# README.md ("Nix") says what a contributor with network does first.
{
  description = "musetalk: MuseTalk lip-sync as a service, in Go";

  inputs = {
    # Go 1.26 (go_1_26, buildGo126Module), ffmpeg, espeak-ng, PostgreSQL,
    # git, gcc, alejandra.
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
    # The last release that still has the two tools this repository pins to
    # old versions: bazel_5 (rules_go v0.34.0 supports Bazel 4.2.1 to 5.x,
    # and the Bazel workspace is written for Debian's Bazel 4.2.3; bazel_5
    # and bazel_6 left nixpkgs in August 2025, bazel_7 is outside rules_go
    # v0.34.0's range) and cudaPackages_11_8 (the committed PTX is CUDA
    # 11.8's, ISA 7.8, and kernels/cuda/ptx's test regenerates it
    # byte-for-byte; CUDA 11 left nixpkgs in August 2025).
    nixpkgs-2505.url = "github:NixOS/nixpkgs/nixos-25.05";
  };

  outputs = {
    self,
    nixpkgs,
    nixpkgs-2505,
  }: let
    systems = ["x86_64-linux" "aarch64-linux"];
    forAllSystems = f:
      builtins.listToAttrs (map (system: {
          name = system;
          value = f system;
        })
        systems);

    # The Go version go.mod asks for (its `go` line).
    goModVersion = builtins.head (builtins.match ".*\ngo ([0-9.]+)\n.*" (builtins.readFile ./go.mod));

    # The vendorHash of buildGoModule: the NAR hash of `go mod vendor`'s
    # output. nix/flake_test.go recomputes it from go.sum (offline, with the
    # Go module cache and `nix hash path`) and fails when this file is stale;
    # `go test ./nix -run VendorHash -update` rewrites it.
    vendorHash = builtins.replaceStrings ["\n"] [""] (builtins.readFile ./nix/vendor-hash);

    # The Go sources: the repository without the Nix files, so editing
    # those does not rebuild the checks.
    root = toString ./.;
    source = builtins.path {
      name = "musetalk-source";
      path = ./.;
      filter = path: type: let
        p = toString path;
        rel = builtins.substring (builtins.stringLength root) (builtins.stringLength p) p;
      in
        !(builtins.elem rel ["/flake.nix" "/flake.lock" "/nix"]);
    };

    perSystem = system: let
      pkgs = import nixpkgs {inherit system;};
      # CUDA is unfree (the CUDA EULA): allowed in this import only.
      pkgs2505 = import nixpkgs-2505 {
        inherit system;
        config.allowUnfree = true;
      };
      cuda = pkgs2505.cudaPackages_11_8;

      go = let
        g = pkgs.go_1_26;
      in
        if builtins.compareVersions g.version goModVersion < 0
        then
          builtins.trace ''
            musetalk: nixpkgs' go_1_26 is ${g.version}, go.mod asks for ${goModVersion}.
            In `nix develop` the go command fetches go${goModVersion} itself (GOTOOLCHAIN=auto);
            the checks run with GOTOOLCHAIN=local and fail until `nix flake update nixpkgs`
            brings a new enough go_1_26.''
          g
        else g;

      version = "0-${self.shortRev or "dirty"}";

      musetalk = pkgs.buildGo126Module {
        pname = "musetalk";
        inherit version vendorHash;
        src = source;
        subPackages = ["cmd/musetalk"];
        ldflags = ["-s" "-w"];
        # The tests are checks.unit, with the tools they use.
        doCheck = false;
        meta = {
          description = "MuseTalk lip-sync service: control plane, worker and pipeline (pure-Go build)";
          mainProgram = "musetalk";
        };
      };

      # goCheck runs a script in a copy of the sources with the vendored
      # modules of the package above (no network in the build sandbox).
      goCheck = name: inputs: script:
        pkgs.stdenv.mkDerivation {
          name = "musetalk-${name}";
          src = source;
          nativeBuildInputs = [go] ++ inputs;
          dontConfigure = true;
          buildPhase = ''
            runHook preBuild
            export HOME=$TMPDIR GOCACHE=$TMPDIR/go-cache GOPATH=$TMPDIR/go
            export GOFLAGS=-mod=vendor GOPROXY=off GOTOOLCHAIN=local CGO_ENABLED=1
            cp -r --no-preserve=mode ${musetalk.goModules} vendor
            ${script}
            runHook postBuild
          '';
          installPhase = "touch $out";
        };
    in {
      packages = {
        inherit musetalk;
        default = musetalk;
      };

      checks = {
        inherit musetalk;
        gofmt = pkgs.runCommand "musetalk-gofmt" {nativeBuildInputs = [go];} ''
          cd ${source}
          unformatted=$(gofmt -l .)
          if [ -n "$unformatted" ]; then
            echo "gofmt -l lists files that are not formatted (run gofmt -w):" >&2
            echo "$unformatted" >&2
            exit 1
          fi
          touch $out
        '';
        vet = goCheck "vet" [] "go vet ./...";
        # `go test ./...` outside CI: what needs PostgreSQL, ../shared (the
        # golden data and media) or nvcc skips here; scripts/test runs all
        # of it (and the race pass).
        unit = goCheck "unit" [pkgs.ffmpeg pkgs.espeak-ng] "go test ./...";
      };

      devShells.default = pkgs.mkShell {
        packages = [
          go
          pkgs2505.bazel_5
          pkgs.ffmpeg
          pkgs.espeak-ng
          pkgs.postgresql
          cuda.cuda_nvcc
          pkgs.gcc
          pkgs.git
        ];
        # cuda.h for the `cuda` build tag (gorgonia.org/cu).
        buildInputs = [cuda.cuda_cudart];
        # nvcc picks CUDA 11.8's own host compiler (nixpkgs patches
        # nvcc.profile). The `cuda`-tagged build (gorgonia.org/cu) links
        # -lcuda: point cgo at the CUDA stub library; at run time the
        # driver's libcuda.so.1 comes from the host (NixOS:
        # /run/opengl-driver/lib; elsewhere put its directory on
        # LD_LIBRARY_PATH).
        shellHook = ''
          export CUDA_PATH=${cuda.cuda_nvcc}
          for d in ${builtins.concatStringsSep " " (map (o: "${cuda.cuda_cudart.${o}}") cuda.cuda_cudart.outputs)}; do
            if [ -e "$d/lib/stubs/libcuda.so" ]; then
              export CGO_LDFLAGS="-L$d/lib/stubs ''${CGO_LDFLAGS:-}"
            fi
          done
          echo "musetalk dev shell: $(go version), $(bazel --version 2>/dev/null), nvcc $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')"
        '';
      };

      formatter = pkgs.alejandra;
    };

    outputs = forAllSystems perSystem;
  in {
    packages = forAllSystems (s: outputs.${s}.packages);
    checks = forAllSystems (s: outputs.${s}.checks);
    devShells = forAllSystems (s: outputs.${s}.devShells);
    formatter = forAllSystems (s: outputs.${s}.formatter);
  };
}

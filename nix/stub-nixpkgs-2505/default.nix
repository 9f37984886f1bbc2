# The stub nixpkgs for the flake's nixpkgs-2505 input (nixos-25.05): only
# the two packages the flake takes from that release, bazel_5 and
# cudaPackages_11_8's nvcc and cudart, so anything else taken from it fails
# evaluation. Stubs, as in ../stub-nixpkgs/pkgs.nix: nothing builds.
{
  system ? builtins.currentSystem,
  config ? {},
  ...
}: let
  channel = "nixos-25.05";

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

  unfree = attr: value:
    if config.allowUnfree or false
    then value
    else throw "Package ‘${attr}’ in stub nixpkgs (${channel}) has an unfree license (‘CUDA EULA’), refusing to evaluate: set config.allowUnfree.";

  # Split packages: one attribute per output, as in nixpkgs. The output
  # names of CUDA 11.8's cudart in nixpkgs are not known here; the flake
  # reads them from .outputs.
  split = attr: outputs: drv attr {inherit outputs;} // {inherit outputs;};
in {
  bazel_5 = drv "bazel_5" {};
  cudaPackages_11_8 = {
    cuda_nvcc = unfree "cuda_nvcc" (drv "cudaPackages_11_8.cuda_nvcc" {});
    cuda_cudart = unfree "cuda_cudart" (split "cudaPackages_11_8.cuda_cudart" ["out" "dev" "lib" "stubs"]);
  };
}

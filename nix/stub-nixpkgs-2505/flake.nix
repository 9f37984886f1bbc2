# Stub nixpkgs (nixos-25.05) for the flake's nixpkgs-2505 input, offline
# (see ../stub-nixpkgs/flake.nix for the command).
{
  description = "stub nixpkgs (nixos-25.05): bazel_5 and CUDA 11.8 only, evaluation only";
  outputs = {self}: {
    legacyPackages = builtins.listToAttrs (map (system: {
        name = system;
        value = import ./default.nix {inherit system;};
      })
      ["x86_64-linux" "aarch64-linux"]);
  };
}

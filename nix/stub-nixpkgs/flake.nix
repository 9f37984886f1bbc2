# Stub nixpkgs (nixos-26.05) for checking musetalk's flake.nix offline:
#   nix flake check --no-build --no-write-lock-file \
#     --override-input nixpkgs path:./nix/stub-nixpkgs \
#     --override-input nixpkgs-2505 path:./nix/stub-nixpkgs-2505
# It evaluates; it builds nothing (see pkgs.nix). nix/flake_test.go runs it.
{
  description = "stub nixpkgs (nixos-26.05): evaluation only, no real packages";
  outputs = {self}: {
    legacyPackages = builtins.listToAttrs (map (system: {
        name = system;
        value = import ./default.nix {inherit system;};
      })
      ["x86_64-linux" "aarch64-linux"]);
  };
}

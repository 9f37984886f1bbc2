# `import nixpkgs { system; config; }` for the stub nixos-26.05 (see pkgs.nix).
import ./pkgs.nix

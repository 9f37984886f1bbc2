# Shared by scripts/up and scripts/test: Go on PATH and the Debian packages
# a command needs. Sourced, not run.

export PATH=/usr/local/go/bin:$PATH

# sudo_or_root runs a command as root: directly when we are root, else
# through sudo.
sudo_or_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    echo "this step needs root: run as root, or install sudo ($*)" >&2
    exit 1
  fi
}

# need_go stops with a clear message when the Go toolchain is missing.
need_go() {
  if ! command -v go >/dev/null; then
    echo "Go is not installed: put Go 1.26 at /usr/local/go (see https://go.dev/doc/install), then run this again." >&2
    exit 1
  fi
}

# need_packages PKG:COMMAND... installs each Debian package whose command is
# missing, with apt-get; elsewhere it names what to install and stops.
need_packages() {
  local missing=() p
  for p in "$@"; do
    command -v "${p#*:}" >/dev/null || missing+=("${p%%:*}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null; then
    echo "missing: ${missing[*]}; install them with your system's package manager, then run this again." >&2
    exit 1
  fi
  echo "installing ${missing[*]} (apt-get)..." >&2
  sudo_or_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  sudo_or_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# need_cuda_toolkit installs Debian's CUDA 11.8 toolkit (nvcc, ptxas;
# about 1.6 GB from the non-free component, which it enables) when nvcc is
# missing. No GPU is needed: the tests use it to regenerate and check the
# committed PTX.
need_cuda_toolkit() {
  command -v nvcc >/dev/null && return 0
  if ! command -v apt-get >/dev/null; then
    echo "missing: nvcc (the CUDA toolkit); install it, then run this again." >&2
    exit 1
  fi
  local src=/etc/apt/sources.list.d/debian.sources
  if [ -f "$src" ] && ! grep -q "non-free" "$src"; then
    echo "enabling Debian's contrib and non-free components for nvidia-cuda-toolkit..." >&2
    sudo_or_root sed -i 's/^Components: main$/Components: main contrib non-free non-free-firmware/' "$src"
  fi
  echo "installing nvidia-cuda-toolkit (apt-get, about 1.6 GB)..." >&2
  sudo_or_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  sudo_or_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nvidia-cuda-toolkit
}

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

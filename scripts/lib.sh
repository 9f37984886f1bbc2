# Shared by scripts/up, scripts/test and scripts/bazel-test: Go on PATH,
# the Debian packages a command needs, the tests' PostgreSQL server.
# Sourced, not run.

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

# need_postgres makes sure a PostgreSQL server for the tests runs and
# exports MUSETALK_TEST_POSTGRES_URL: the one named there already, else
# Debian's server on this machine (installed, its cluster made and started)
# with a test role and database.
need_postgres() {
  [ -n "${MUSETALK_TEST_POSTGRES_URL:-}" ] && return 0
  need_packages postgresql:pg_ctlcluster
  # Debian's wrapper scripts run as root or through sudo; psql as postgres.
  local ver _
  ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
  sudo_or_root pg_lsclusters -h | grep -q "^$ver main" || sudo_or_root pg_createcluster "$ver" main
  sudo_or_root pg_ctlcluster "$ver" main start 2>/dev/null || true
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 && break; sleep 1; done
  as_postgres() { sudo_or_root su postgres -c "$1"; }
  as_postgres "psql -q -tc \"SELECT 1 FROM pg_roles WHERE rolname='musetalk'\" | grep -q 1 || psql -q -c \"CREATE ROLE musetalk LOGIN SUPERUSER PASSWORD 'musetalk'\""
  as_postgres "psql -q -tc \"SELECT 1 FROM pg_database WHERE datname='musetalk'\" | grep -q 1 || createdb -O musetalk musetalk"
  export MUSETALK_TEST_POSTGRES_URL='postgres://musetalk:musetalk@127.0.0.1:5432/musetalk?sslmode=disable'
}

# prepare_tests installs and starts what the test command needs (scripts/test
# and .ci/run call it, then run the command): Go, ffmpeg, espeak-ng,
# nix-bin, chromium, under CI (or MUSETALK_TEST_CUDA=1) the CUDA toolkit,
# PostgreSQL, and Jaeger's build.
prepare_tests() {
  same_test_command
  need_go
  # nix-bin: the offline checks of flake.nix (nix/flake_test.go); chromium:
  # the dashboard's browser tests (control/dashboard), headless.
  need_packages ffmpeg:ffmpeg ffmpeg:ffprobe espeak-ng:espeak-ng nix-bin:nix-instantiate chromium:chromium
  # The CUDA toolkit regenerates and checks the committed PTX. CI installs it
  # (and those tests fail there without it); elsewhere they skip unless
  # MUSETALK_TEST_CUDA=1 asks for the install.
  if [ -n "${CI:-}" ] || [ -n "${MUSETALK_TEST_CUDA:-}" ]; then
    need_cuda_toolkit
  fi

  need_postgres

  go version
  # e2e/jaeger_test.go runs Jaeger, a Go tool of its own module (tools/jaeger):
  # build it first (the go command caches it), so that its first build,
  # hundreds of modules, does not count against the e2e package's timeout.
  # Without the module proxy that test says so itself (and fails under CI).
  (cd tools/jaeger && go tool -n jaeger >/dev/null) || echo "could not build Jaeger (tools/jaeger)" >&2
}

# same_test_command fails unless README.md's test command is the last line
# of both scripts/test and .ci/run, so the three cannot drift apart.
same_test_command() {
  local want f
  want=$(tail -n 1 scripts/test)
  for f in .ci/run README.md; do
    if ! grep -qxF -- "$want" "$f"; then
      echo "the test command differs: scripts/test ends with" >&2
      echo "  $want" >&2
      echo "and $f does not hold that line; make README.md's test command, scripts/test and .ci/run say the same." >&2
      exit 1
    fi
  done
  if [ "$(tail -n 1 .ci/run)" != "$want" ]; then
    echo "the test command differs: .ci/run's last line is not scripts/test's ($want)" >&2
    exit 1
  fi
}

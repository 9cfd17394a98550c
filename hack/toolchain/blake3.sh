#!/usr/bin/env bash
# Builds the pinned BLAKE3 C library (static, PIC) into a project-owned prefix
# ($FERRY_TOOLS/blake3-<version>) for the snapshot digests. Debian ships the
# official C implementation only inside the Rust crate's package, so we take
# its c/ directory (upstream's own CMake build, which installs libblake3.a and
# the BLAKE3::blake3 package config) from trixie's librust-blake3-dev .deb.
# The prefix is linked as .cache/blake3, where CMakeLists.txt looks for it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$here/../lib.sh"

v="${BLAKE3_DEB_VERSION%-*}" # upstream version: 1.8.1-1 -> 1.8.1
# The c/ sources are the same in every architecture's .deb; the pin is amd64's.
deb="librust-blake3-dev_${BLAKE3_DEB_VERSION}_amd64.deb"
dir="$FERRY_TOOLS/blake3-$v"
# Release, static and position-independent (it ends up in PIE executables);
# TBB, tests and examples off. Part of the stamp: changing a flag rebuilds.
flags=(-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DCMAKE_POSITION_INDEPENDENT_CODE=ON
  -DCMAKE_INSTALL_LIBDIR=lib -DBLAKE3_USE_TBB=OFF -DBUILD_TESTING=OFF -DBLAKE3_EXAMPLES=OFF)
key="$BLAKE3_DEB_VERSION-$BLAKE3_DEB_SHA256-$(printf '%s\n' "${flags[@]}" | sha256sum | cut -c1-16)"

if ! stamp_ok "$dir" "$key"; then
  fetch_verified "http://deb.debian.org/debian/pool/main/r/rust-blake3/$deb" "$deb" "$BLAKE3_DEB_SHA256" ||
    die "blake3: cannot download $deb"
  log "blake3 $v: building (cold: a few seconds)"
  src="$(mktemp -d "$FERRY_CACHE/blake3-src.XXXXXX")"
  trap 'rm -rf "$src"' EXIT
  # Only the C sources: ./usr/share/cargo/registry/blake3-<v>/c/ -> $src/c/.
  dpkg-deb --fsys-tarfile "$FERRY_DOWNLOADS/$deb" |
    tar -x -C "$src" --strip-components=6 "./usr/share/cargo/registry/blake3-$v/c"
  [[ -f "$src/c/CMakeLists.txt" ]] || die "blake3: no c/CMakeLists.txt for $v in $deb"
  rm -rf "$dir"
  {
    cmake -S "$src/c" -B "$src/build" -G Ninja "${flags[@]}" -DCMAKE_INSTALL_PREFIX="$dir" &&
      cmake --build "$src/build" &&
      cmake --install "$src/build"
  } >"$src/build.log" 2>&1 || { tail -40 "$src/build.log" >&2; die "blake3 $v: build failed"; }
  [[ -f "$dir/lib/libblake3.a" && -f "$dir/lib/cmake/blake3/blake3-config.cmake" ]] ||
    die "blake3 $v: install is missing libblake3.a or its CMake config"
  stamp_write "$dir" "$key"
fi
ln -sfn "$dir" "$FERRY_CACHE/blake3"
ln -sfn "$dir" "$FERRY_ROOT/.cache/blake3"
log "blake3: $(sed -n 's/^#define BLAKE3_VERSION_STRING "\(.*\)"/\1/p' "$dir/include/blake3.h") in $dir"

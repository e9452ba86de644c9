# Sourced by dist.sh and deb.sh (run from the repository's root): strict
# mode, $go, SOURCE_DATE_EPOCH (default: the last commit's time) and $tmp,
# removed on exit.
set -eu
umask 022
go=${GO:-go}
: "${SOURCE_DATE_EPOCH:=$(git log -1 --format=%ct)}"
export SOURCE_DATE_EPOCH
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

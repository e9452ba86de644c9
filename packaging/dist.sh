#!/bin/sh
# dist.sh OUT VERSION OS/ARCH...: static release builds in OUT, each a
# closewait_VERSION_OS_ARCH.tar.gz (a bare .exe for Windows), and
# SHA256SUMS. Reproducible: -trimpath, no build id, no cgo, and archive
# times, owners and order fixed (SOURCE_DATE_EPOCH, default the commit's).
. packaging/lib.sh
out=$1 version=$2
shift 2
commit=$(git rev-parse HEAD)
commitvar=github.com/closewait/closewait/internal/cli.commit
mkdir -p "$out"
rm -f "$out"/closewait_* "$out"/SHA256SUMS
for p; do
	os=${p%/*} arch=${p#*/}
	name=closewait_${version}_${os}_${arch}
	exe=closewait
	[ "$os" = windows ] && exe=closewait.exe
	mkdir -p "$tmp/$name"
	CGO_ENABLED=0 GOOS=$os GOARCH=$arch $go build -trimpath \
		-ldflags "-s -w -buildid= -X main.version=$version -X $commitvar=$commit" -o "$tmp/$name/$exe" .
	if [ "$os" = windows ]; then
		cp "$tmp/$name/$exe" "$out/$name.exe"
		continue
	fi
	cp README.md "$tmp/$name/"
	chmod 0755 "$tmp/$name/$exe"
	chmod 0644 "$tmp/$name/README.md"
	tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
		--format=gnu -C "$tmp" -cf - "$name" | gzip -9n >"$out/$name.tar.gz"
done
(cd "$out" && sha256sum closewait_* >SHA256SUMS)

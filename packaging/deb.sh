#!/bin/sh
# deb.sh OUT VERSION ARCH...: closewait_DEBVERSION_ARCH.deb in OUT from
# the linux tarballs dist.sh left there, with the man page and completions
# the binary generates (a host build runs, as the target may be foreign),
# the systemd units and maintainer scripts of packaging/. Adds the .debs to
# OUT/SHA256SUMS.
. packaging/lib.sh
out=$1 version=$2
shift 2
# Debian versions start with a digit and hold no "-" upstream: v1.2.3-4-gabc
# becomes 1.2.3+4.gabc, an untagged abc1234 becomes 0~git.abc1234.
case $version in
v[0-9]*) debversion=$(echo "${version#v}" | tr - .) ;;
*) debversion=0~git.$(echo "$version" | tr - .) ;;
esac
debversion=$(echo "$debversion" | sed 's/\.\([0-9][0-9]*\)\.g/+\1.g/')
$go build -trimpath -ldflags "-X main.version=$version" -o "$tmp/host" .
for arch; do
	root=$tmp/$arch
	install -d "$root/DEBIAN" "$root/usr/bin" "$root/usr/share/man/man1" \
		"$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
		"$root/usr/share/fish/vendor_completions.d" "$root/usr/lib/systemd/system" \
		"$root/etc/default" "$root/usr/share/doc/closewait"
	tar -xzf "$out/closewait_${version}_linux_${arch}.tar.gz" -C "$tmp" \
		"closewait_${version}_linux_${arch}/closewait"
	install -m 0755 "$tmp/closewait_${version}_linux_${arch}/closewait" "$root/usr/bin/closewait"
	"$tmp/host" help --man | gzip -9n >"$root/usr/share/man/man1/closewait.1.gz"
	"$tmp/host" completion bash >"$root/usr/share/bash-completion/completions/closewait"
	"$tmp/host" completion zsh >"$root/usr/share/zsh/vendor-completions/_closewait"
	"$tmp/host" completion fish >"$root/usr/share/fish/vendor_completions.d/closewait.fish"
	install -m 0644 packaging/systemd/* "$root/usr/lib/systemd/system/"
	install -m 0644 packaging/debian/default "$root/etc/default/closewait"
	gzip -9n <README.md >"$root/usr/share/doc/closewait/README.md.gz"
	install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$root/DEBIAN/"
	install -m 0644 packaging/debian/conffiles "$root/DEBIAN/"
	size=$(du -s --apparent-size -k --exclude=DEBIAN "$root" | cut -f1)
	sed -e "s/@VERSION@/$debversion/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
		packaging/debian/control >"$root/DEBIAN/control"
	find "$root/usr/share" -type f -exec chmod 0644 {} +
	find "$root" -type d -exec chmod 0755 {} +
	find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
	dpkg-deb --root-owner-group -Zxz --build "$root" "$out/closewait_${debversion}_${arch}.deb" >/dev/null
done
(cd "$out" && sha256sum closewait_* >SHA256SUMS)

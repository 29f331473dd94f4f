# shellcheck shell=bash
# image-apt.sh: sourced by the image scripts. A private apt configuration and
# state per Debian architecture under $CACHE/apt-ARCH, so that packages of
# any architecture download without touching the host's apt setup (no
# dpkg --add-architecture, no change under /etc/apt or /var/lib/apt): the
# host's configuration is only read, for its Debian mirror.
#
#   apt_init ARCH    sets apt_dir and APT_OPTS (apt-get "${APT_OPTS[@]}" ...)
#   apt_setup        writes the private sources and fetches the lists (once a day)
#
# Expects CACHE, SUITE and KEYRING, and a fail function. MIRROR (and
# SECURITY_MIRROR) override the host's sources.

# apt_sources prints "URI SUITE" for every enabled deb source of the host's
# apt configuration (one-line .list files and deb822 .sources files).
apt_sources() {
	local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
	local existing=() f
	for f in "${files[@]}"; do [[ -f $f ]] && existing+=("$f"); done
	((${#existing[@]})) || return 0
	awk '
		function flush(  i, n, s) {
			if (types ~ /(^| )deb( |$)/ && uris != "" && !off) {
				n = split(suites, s, " ")
				for (i = 1; i <= n; i++) print uris, s[i]
			}
			types = uris = suites = ""; off = 0
		}
		FNR == 1 { flush() }
		FILENAME ~ /\.sources$/ {
			if ($0 ~ /^[[:space:]]*$/) { flush(); next }
			key = tolower($1); $1 = ""; sub(/^ +/, "")
			if (key == "types:") types = $0
			else if (key == "uris:") { uris = $0; sub(/ .*/, "", uris) }
			else if (key == "suites:") suites = $0
			else if (key == "enabled:" && tolower($0) == "no") off = 1
			next
		}
		/^deb[[:space:]]/ { sub(/\[[^]]*\]/, ""); print $2, $3 }
		END { flush() }
	' "${existing[@]}"
}

apt_init() {
	ARCH=$1
	apt_dir=$CACHE/apt-$ARCH
	APT_OPTS=(
		-o "Dir::State=$apt_dir/state" -o "Dir::State::status=$apt_dir/state/status"
		-o "Dir::Cache=$apt_dir/cache" -o "Dir::Etc::SourceList=$apt_dir/sources.list"
		-o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
		-o "Dir::Etc::Preferences=$apt_dir/preferences" -o "Dir::Etc::PreferencesParts=$apt_dir/preferences.d"
		-o "APT::Architecture=$ARCH" -o "APT::Architectures::=$ARCH"
		-o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
		-o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
		-o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false"
		-o "Acquire::IndexTargets::deb::CNF::DefaultEnabled=false"
		-o "Debug::NoLocking=1" -o "APT::Sandbox::User=root" -qq
	)
}

# apt_setup writes the private sources (the host's Debian sources for SUITE,
# its -updates and -security) and fetches the package lists for ARCH, once a
# day at most.
apt_setup() {
	mkdir -p "$apt_dir"/{state/lists/partial,cache/archives/partial,sources.list.d,preferences.d}
	touch "$apt_dir/state/status"
	local sources
	if [[ -n ${MIRROR:-} ]]; then
		sources="$MIRROR $SUITE"$'\n'"$MIRROR $SUITE-updates"
		[[ -n ${SECURITY_MIRROR:-} ]] && sources+=$'\n'"$SECURITY_MIRROR $SUITE-security"
	else
		sources=$(apt_sources | awk -v s="$SUITE" '$2 ~ "^" s "(-updates|-security)?$"')
	fi
	[[ -n $sources ]] || fail "no Debian $SUITE source in /etc/apt/sources.list*; set MIRROR"
	awk -v a="$ARCH" -v k="$KEYRING" '{ print "deb [arch=" a " signed-by=" k "]", $1, $2, "main" }' \
		<<<"$sources" >"$apt_dir/sources.list.new"
	if cmp -s "$apt_dir/sources.list.new" "$apt_dir/sources.list" &&
		[[ -n $(find "$apt_dir/state/lists" -maxdepth 1 -name '*_Packages*' -mmin -1440 -print -quit) ]]; then
		rm "$apt_dir/sources.list.new"
		return
	fi
	mv "$apt_dir/sources.list.new" "$apt_dir/sources.list"
	apt-get "${APT_OPTS[@]}" update || fail "apt-get update for $ARCH (see $apt_dir/sources.list)"
}


# Shared settings for the swtpm-ci scripts. Sourced, never run.
#
# Everything the tests and the demo need lives under one cache directory
# outside the clone, so a second run reuses it and a fresh machine builds it.

# (The variables here never start with KEYLIME_AGENT_: the agent reads
# that prefix as config overrides.)
CI_HOME=${AGENT_CI_HOME:-/var/tmp/keylime-agent-ci}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/keylime-agent-target}

# The Keylime releases the agent is tested against: the newest first, the
# one the full suite and the demo use. PEERS_RELEASE picks another one.
PEER_RELEASES=(7.14.3 7.14.2 7.14.0 7.13.1 7.12.2)
DEFAULT_RELEASE=${PEER_RELEASES[0]}

# peer_release_dir RELEASE: where that release's venv and source live,
# each release apart from the others.
peer_release_dir() { printf '%s/keylime-%s' "$CI_HOME" "$1"; }
# peer_venv RELEASE / peer_templates RELEASE
peer_venv() { printf '%s/venv' "$(peer_release_dir "$1")"; }
peer_templates() { printf '%s/src/keylime-%s/templates' "$(peer_release_dir "$1")" "$1"; }

# peer_api RELEASE: the newest agent and registrar API of that release.
peer_api() {
    case $1 in
    7.12.*) echo 2.3 ;;
    7.13.*) echo 2.4 ;;
    *) echo 2.6 ;;
    esac
}
# peer_host RELEASE: a name the release's generated server certificates
# hold for 127.0.0.1 (before 7.14.1 they name only "server"; reach it with
# curl --resolve server:PORT:127.0.0.1).
peer_host() {
    case $1 in
    7.12.* | 7.13.*) echo server ;;
    *) echo 127.0.0.1 ;;
    esac
}

# is_peer_release RELEASE: whether the scripts know that release.
is_peer_release() {
    local r
    for r in "${PEER_RELEASES[@]}"; do [[ $r == "$1" ]] && return 0; done
    return 1
}

# Pinned peer dependencies (the keylime wheel declares none); the same set
# works for every release above.
PEER_DEPENDENCIES=(
    cryptography==50.0.2 tornado==6.6.1 pyzmq==27.3.0 pyyaml==6.0.3
    requests==2.34.2 sqlalchemy==2.1.9 alembic==1.20.1 packaging==26.3
    psutil==7.2.2 lark==1.3.1 pyasn1==0.6.5 pyasn1-modules==0.4.2
    jinja2==3.1.6 jsonschema==4.26.0
)

APT_PACKAGES=(
    swtpm swtpm-tools tpm2-tools libtss2-dev libtss2-tcti-swtpm0
    python3-venv python3-gpg libssl-dev pkg-config clang libclang-dev
    openssl procps curl python3 util-linux passwd dpkg-dev systemd
    tpm2-abrmd libtss2-tcti-tabrmd0 dbus-daemon dbus-bin libefivar1 strace iproute2
)

log() { printf '[swtpm-ci] %s\n' "$*" >&2; }
die() { printf '[swtpm-ci] error: %s\n' "$*" >&2; exit 1; }

# free_port_pair: print a port P such that P and P+1 are both free on
# 127.0.0.1 (swtpm's TCTI expects its control channel on P+1).
free_port_pair() { "$(dirname "${BASH_SOURCE[0]}")/free-port" --pair; }

# free_port: print a TCP port on 127.0.0.1 that nothing listens on now and
# that nothing else in the run is handed (see free-port).
free_port() { "$(dirname "${BASH_SOURCE[0]}")/free-port"; }

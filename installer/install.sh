#!/bin/sh
# Restora's one-command installer for Linux and macOS: finds a Python 3.10+ that can make
# virtual environments, then runs installer/install.py with it (standard library only).
#
#   sh installer/install.sh [options]        options: sh installer/install.sh --help
#   RESTORA_PYTHON=/path/to/python3 sh installer/install.sh    to choose the Python
set -eu

here=$(cd "$(dirname "$0")" && pwd)
system=$(uname -s)
machine=$(uname -m)

# prints "ok", "old VERSION", "novenv VERSION" or "rosetta VERSION" for the Python in $1
check_python() {
  "$1" - "$system" "$machine" 2>/dev/null <<'EOF' || echo "broken"
import platform, sys
version = "%d.%d" % sys.version_info[:2]
if sys.version_info < (3, 10):
    print("old", version)
elif sys.argv[1] == "Darwin" and sys.argv[2] == "arm64" and platform.machine() != "arm64":
    print("rosetta", version)
else:
    try:
        import ensurepip, venv  # noqa: F401  Debian and Ubuntu ship these separately
    except ImportError:
        print("novenv", version)
    else:
        print("ok", version)
EOF
}

candidates="python3 python3.13 python3.12 python3.11 python3.10 python"
if [ "$system" = "Darwin" ]; then
  candidates="$candidates /opt/homebrew/bin/python3 /usr/local/bin/python3"
  for p in /Library/Frameworks/Python.framework/Versions/3.*/bin/python3; do
    if [ -x "$p" ]; then candidates="$candidates $p"; fi
  done
fi
if [ -n "${RESTORA_PYTHON:-}" ]; then
  candidates="$RESTORA_PYTHON"
fi

python=""
too_old=""
no_venv=""
for candidate in $candidates; do
  command -v "$candidate" >/dev/null 2>&1 || continue
  answer=$(check_python "$candidate")
  version=${answer#* }
  case "$answer" in
    ok\ *) python=$(command -v "$candidate"); break ;;
    old\ *) too_old="$too_old $candidate ($version)" ;;
    novenv\ *) if [ -z "$no_venv" ]; then no_venv="$version"; fi ;;
    rosetta\ *) too_old="$too_old $candidate ($version, an Intel build under Rosetta)" ;;
  esac
done

if [ -z "$python" ]; then
  if [ -n "$too_old" ]; then
    echo "Restora needs Python 3.10 or newer; found only:$too_old." >&2
  else
    echo "Restora needs Python 3.10 or newer, and none was found." >&2
  fi
  distro=""
  if [ -r /etc/os-release ]; then
    # shellcheck disable=SC1091  # a system file, read for its ID only
    distro=$(. /etc/os-release && echo "${ID:-} ${ID_LIKE:-}")
  fi
  if [ "$system" = "Darwin" ]; then
    echo "Install Python 3.12 from https://www.python.org/downloads/macos/ (or with Homebrew:" >&2
    echo "  brew install python@3.12), then run this again." >&2
  elif [ -n "$no_venv" ]; then
    echo "Python $no_venv is there, but without its venv module. Install it with:" >&2
    echo "  sudo apt install python3-venv      (Debian, Ubuntu; or python$no_venv-venv)" >&2
  else
    case " $distro " in
      *" ubuntu "*|*" debian "*)
        echo "Install it with:  sudo apt install python3 python3-venv" >&2
        echo "(Ubuntu 20.04 has 3.8 only: upgrade, or use the deadsnakes PPA's python3.11.)" >&2 ;;
      *" fedora "*|*" rhel "*|*" centos "*|*" rocky "*|*" almalinux "*)
        echo "Install it with:  sudo dnf install python3.12" >&2 ;;
      *" arch "*|*" manjaro "*|*" endeavouros "*)
        echo "Install it with:  sudo pacman -S python" >&2 ;;
      *" opensuse"*|*" suse "*|*" sles "*)
        echo "Install it with:  sudo zypper install python312" >&2 ;;
      *" alpine "*)
        echo "Alpine's musl C library has no PyTorch builds: use a glibc distribution," >&2
        echo "or run the backend in a Debian container." >&2 ;;
      *)
        echo "Install Python 3.10 or newer (with venv) from your distribution's packages" >&2
        echo "or https://www.python.org/downloads/, then run this again." >&2 ;;
    esac
  fi
  echo "A Python elsewhere: RESTORA_PYTHON=/path/to/python3 sh $0" >&2
  exit 1
fi

echo "Using $python ($("$python" -c 'import sys; print(sys.version.split()[0])'))"
exec "$python" "$here/install.py" "$@"

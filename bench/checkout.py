"""Another commit's working tree for ``bench_consumer.py --compare``, runnable with this venv.

    .venv/bin/python bench/checkout.py REV DIR

Checks REV out into DIR (a detached git worktree, reused when it is already there) and
installs into ``DIR/.deps`` the packages REV's ``requirements.lock`` pins that this venv
lacks or holds at another version (``common.consume`` puts ``DIR/.deps`` on that arm's
``PYTHONPATH``). `make bench` uses it for the consumer before the removal of the patches
over kafka-python's internals (issue 27).
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: bench/checkout.py REV DIR", file=sys.stderr)
        return 2
    rev, target = sys.argv[1], Path(sys.argv[2]).resolve()
    commit = git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if commit is None:
        print(f"checkout: {rev} is not a commit of this clone (a shallow clone lacks the history)", file=sys.stderr)
        return 2
    if git("-C", str(target), "rev-parse", "HEAD") != commit:
        git("worktree", "remove", "--force", str(target))
        if git("worktree", "add", "--detach", "--force", str(target), commit) is None:
            print(f"checkout: git worktree add {target} {rev} failed", file=sys.stderr)
            return 1
    wanted = [line.strip() for line in (target / "requirements.lock").read_text().splitlines()
              if "==" in line and not line.startswith("#")]
    missing = [pin for pin in wanted if installed(pin.split("==")[0]) != pin.split("==")[1]]
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--upgrade",
                        "--target", str(target / ".deps"), *missing], check=True)
    print(f"{target}: {rev} ({commit[:9]}); {len(missing)} package(s) of its own: {' '.join(missing) or '-'}")
    return 0


def git(*args: str) -> str | None:
    done = subprocess.run(["git", "-C", str(REPO), *args] if args[0] != "-C" else ["git", *args],
                          capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def installed(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    raise SystemExit(main())

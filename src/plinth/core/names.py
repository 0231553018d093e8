"""Names users choose that the kernel checks: light enough for the SDK to import."""

from __future__ import annotations

import re

from plinth.errors import InvalidInput

PROJECT_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$"
_PROJECT_NAME = re.compile(PROJECT_NAME)


def is_project_name(name: object) -> bool:
    return isinstance(name, str) and _PROJECT_NAME.fullmatch(name) is not None


def check_project_name(name: str) -> str:
    if not is_project_name(name):
        raise InvalidInput(
            "a project name is 1-200 letters, digits, '_', '.', '-', starting with a letter "
            f"or digit; got {name!r}"
        )
    return name


# Environment names a job's env or secrets may not set (a secret is given to a job under
# its own name): Plinth's own, the GPU isolation, the rendezvous, a shell's own.
RESERVED_ENV_PREFIXES = ("PLINTH_",)
RESERVED_ENV = frozenset(
    {
        "CUDA_VISIBLE_DEVICES",  # the executor isolates GPUs with it
        # the PyTorch rendezvous, set per process (a job's own would break the world)
        "MASTER_ADDR",
        "MASTER_PORT",
        "WORLD_SIZE",
        "RANK",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
        "NODE_RANK",
        "GROUP_RANK",
        "TORCHELASTIC_USE_AGENT_STORE",  # compute.rendezvous.AGENT_STORE
        # a POSIX shell's own: the local executor starts a job through one, which would
        # rewrite them (executors/local.py refuses them at the start)
        "IFS",
        "PPID",
        "OPTIND",
    }
)


def reserved_env(name: str) -> bool:
    """Whether a job's env or secrets may not set ``name`` (see ``RESERVED_ENV``)."""
    return name in RESERVED_ENV or name.startswith(RESERVED_ENV_PREFIXES)


def reserved_env_refusal(name: str) -> str:
    """Why ``name`` is refused, listing what is reserved."""
    listed = ", ".join(sorted(RESERVED_ENV))
    return f"{name} is Plinth's to set in a job, not a job's (reserved: PLINTH_*, {listed})"

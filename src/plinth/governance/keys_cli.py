"""``plinth keys``: make a master key, rotate to a new one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from plinth.errors import InvalidInput

keys_app = typer.Typer(help="Master key for artifacts encrypted at rest.", no_args_is_help=True)
console = Console(stderr=True)


@keys_app.command("generate")
def generate(
    output: Annotated[Path, typer.Option(help="File to write the key to (mode 600).")],
) -> None:
    """Write a new random master key to a file; point PLINTH_MASTER_KEY_FILE at it."""
    from plinth.core.crypto import MasterKey  # cryptography: only when a key is made

    if output.exists():
        raise InvalidInput(f"{output} exists; refusing to overwrite a key")
    key = MasterKey.generate()
    output.touch(mode=0o600)
    output.write_text(key.to_text())
    console.print(f"master key {key.key_id} written to {output}")


@keys_app.command("rotate")
def rotate(
    new_key_file: Annotated[Path, typer.Option(help="File holding the new master key.")],
) -> None:
    """Re-wrap every project's data key under a new master key (no artifact is
    rewritten). Run it where the server runs, with the current key configured; then
    restart the server with the new one."""
    from plinth.core.crypto import load_master_key
    from plinth.governance.keys import rotate_master_key
    from plinth.settings import Settings

    new = load_master_key(path=new_key_file)
    if new is None:
        raise InvalidInput(f"{new_key_file} holds no key")
    count = rotate_master_key(Settings(), new)
    console.print(
        f"{count} data keys now wrapped by master key {new.key_id}; set "
        f"PLINTH_MASTER_KEY_FILE={new_key_file} and restart the server"
    )

"""Encryption at rest: master keys, wrapped data keys, and a streaming format for blobs.

Envelope encryption. Each project has a random 256-bit data key that seals its blobs;
a master key (``PLINTH_MASTER_KEY`` or a key file, read by settings and passed in here)
wraps the data keys kept in the database. Rotating the master key re-wraps data keys
and rewrites no blob.

A sealed blob is a header, then segments of AES-256-GCM ciphertext:

    header    b"PLNE" | format 1 | data key version (4 bytes) | salt (16 bytes)
    segment   1 MiB of plaintext sealed, + a 16-byte tag; the last one is shorter
              (empty when the plaintext is a whole number of segments)

Each blob gets a key of its own, HKDF-SHA256(data key, salt): nonces can then never
repeat between the blobs of a project, however many it has (with one key per project,
a random 64-bit nonce prefix would reach a 2^-32 chance of a repeat near 2^16 blobs).
A segment's nonce is its index and a "last segment" flag; its associated data is the
header and the caller's ``aad``. So flipping, dropping, reordering, appending, cutting
or borrowing a segment from another blob fails authentication, and the plaintext size
follows from the ciphertext size (``plaintext_size``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from plinth.errors import CorruptArtifact, InvalidInput, PermissionDenied

KEY_SIZE = 32
SEGMENT = 1 << 20  # plaintext bytes per sealed segment
TAG = 16
MAGIC = b"PLNE"
FORMAT = 1
_HEADER = struct.Struct(">4sBI16s")  # magic, format, data key version, salt
HEADER_SIZE = _HEADER.size
_WRAP = struct.Struct(">B4s12s")  # format, master key id, nonce; then ciphertext + tag
Bytes = bytes | bytearray | memoryview


@dataclass(frozen=True, repr=False)
class MasterKey:
    """32 secret bytes; ``key_id`` names them without revealing them."""

    secret: bytes

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_SIZE:
            raise InvalidInput("a master key is 32 bytes, written as 44 characters of base64")

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(os.urandom(KEY_SIZE))

    @classmethod
    def from_text(cls, text: str) -> MasterKey:
        """From base64, as ``to_text`` or ``openssl rand -base64 32`` writes it."""
        try:
            secret = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput("a master key is 32 bytes in base64: this is not base64") from None
        return cls(secret)

    def to_text(self) -> str:
        return base64.b64encode(self.secret).decode()

    @property
    def key_id(self) -> str:
        return hashlib.sha256(self.secret).hexdigest()[:8]

    def __repr__(self) -> str:  # never the secret, in a log or a traceback
        return f"MasterKey(key_id={self.key_id!r})"


def load_master_key(
    value: str | None = None, path: str | os.PathLike[str] | None = None
) -> MasterKey | None:
    """The master key from its text or from a file holding that text; None when
    neither is given, which means artifacts are not encrypted."""
    if value and path:
        raise InvalidInput("give the master key as a value or as a file, not both")
    if path:
        try:
            value = Path(path).read_text()
        except OSError as exc:
            raise InvalidInput(f"cannot read the master key file {path}: {exc.strerror}") from None
    return MasterKey.from_text(value) if value else None


class DataKey(NamedTuple):
    """A project's data key: its version (named in each blob's header) and secret."""

    version: int
    secret: bytes

    def __repr__(self) -> str:
        return f"DataKey(version={self.version})"


def wrap(master: MasterKey, data_key: bytes, aad: bytes) -> bytes:
    """Seal a data key under the master key; the result names the master key's id."""
    nonce = os.urandom(12)
    head = _WRAP.pack(FORMAT, bytes.fromhex(master.key_id), nonce)
    return head + AESGCM(master.secret).encrypt(nonce, data_key, head + aad)


def unwrap(master: MasterKey, wrapped: bytes, aad: bytes) -> bytes:
    if len(wrapped) < _WRAP.size + TAG or wrapped[0] != FORMAT:
        raise CorruptArtifact("a wrapped data key is malformed")
    _, raw_id, nonce = _WRAP.unpack(wrapped[: _WRAP.size])
    if raw_id.hex() != master.key_id:
        raise PermissionDenied(
            f"the master key does not match: this data key was wrapped by key {raw_id.hex()}, "
            f"the key given is {master.key_id}"
        )
    try:
        return AESGCM(master.secret).decrypt(
            nonce, wrapped[_WRAP.size :], wrapped[: _WRAP.size] + aad
        )
    except InvalidTag:
        raise CorruptArtifact(
            f"a data key wrapped by key {master.key_id} does not authenticate: "
            "it was altered, or moved from another project or version"
        ) from None


class _Pieces:
    """Cuts chunks of any size into pieces of ``size`` bytes without joining them
    all; what is left at the end (shorter, perhaps empty) is the last piece."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.pending = bytearray()

    def feed(self, data: Bytes) -> Iterator[Bytes]:
        view = memoryview(data)
        if self.pending:
            take = self.size - len(self.pending)
            self.pending += view[:take]
            view = view[take:]
            if len(self.pending) < self.size:
                return
            yield self.pending
            self.pending = bytearray()
        while len(view) >= self.size:
            yield view[: self.size]  # no copy of the caller's chunk
            view = view[self.size :]
        self.pending += view

    def rest(self) -> bytes:
        return bytes(self.pending)


class _SegmentCipher:
    def __init__(self, data_key: bytes, header: bytes, aad: bytes) -> None:
        salt = header[-16:]
        blob_key = HKDF(hashes.SHA256(), KEY_SIZE, salt, b"plinth blob segments").derive(data_key)
        self._aead = AESGCM(blob_key)
        self._aad = header + aad
        self.index = 0

    def _nonce(self, last: bool) -> bytes:
        return self.index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")

    def seal(self, plaintext: Bytes, last: bool) -> bytes:
        sealed = self._aead.encrypt(self._nonce(last), plaintext, self._aad)
        self.index += 1
        return sealed

    def open(self, sealed: Bytes, last: bool) -> bytes:
        try:
            plaintext = self._aead.decrypt(self._nonce(last), sealed, self._aad)
        except InvalidTag:
            raise CorruptArtifact(
                f"encrypted blob: segment {self.index} does not authenticate (the bytes were "
                "altered, cut, reordered or moved, or belong to another project)"
            ) from None
        self.index += 1
        return plaintext


class Encryptor:
    """Seals a stream pushed at it: write ``header``, then what ``update`` returns for
    each chunk, then ``final()``. Holds at most one segment of plaintext."""

    def __init__(self, data_key: DataKey, aad: bytes) -> None:
        self.header = _HEADER.pack(MAGIC, FORMAT, data_key.version, os.urandom(16))
        self._cipher = _SegmentCipher(data_key.secret, self.header, aad)
        self._pieces = _Pieces(SEGMENT)

    def update(self, data: Bytes) -> Iterator[bytes]:
        for piece in self._pieces.feed(data):
            yield self._cipher.seal(piece, last=False)

    def final(self) -> bytes:
        return self._cipher.seal(self._pieces.rest(), last=True)


class Decryptor:
    """Opens the segments that follow ``header``; yields only authenticated bytes."""

    def __init__(self, data_key: bytes, header: bytes, aad: bytes) -> None:
        self._cipher = _SegmentCipher(data_key, header, aad)
        self._pieces = _Pieces(SEGMENT + TAG)  # a full segment is never the last one

    def update(self, data: Bytes) -> Iterator[bytes]:
        for piece in self._pieces.feed(data):
            yield self._cipher.open(piece, last=False)

    def final(self) -> bytes:
        rest = self._pieces.rest()
        if len(rest) < TAG:
            raise CorruptArtifact("encrypted blob is truncated: its last segment is missing")
        return self._cipher.open(rest, last=True)


def key_version(header: bytes) -> int:
    """The data key version a sealed blob's header names (checked, not yet trusted:
    the header is authenticated with every segment)."""
    if len(header) < HEADER_SIZE:
        raise CorruptArtifact("encrypted blob is truncated: its header is incomplete")
    magic, fmt, version, _ = _HEADER.unpack(header[:HEADER_SIZE])
    if magic != MAGIC:
        raise CorruptArtifact("not an encrypted blob: the header is missing")
    if fmt != FORMAT:
        raise CorruptArtifact(f"encrypted blob format {fmt} is unknown to this Plinth")
    return int(version)


def plaintext_size(sealed_size: int) -> int:
    body = sealed_size - HEADER_SIZE
    full, last = divmod(body, SEGMENT + TAG)
    if body < TAG or last < TAG:
        raise CorruptArtifact(f"encrypted blob of {sealed_size} bytes is truncated")
    return full * SEGMENT + last - TAG


def encrypt_stream(data_key: DataKey, chunks: Iterable[bytes], aad: bytes) -> Iterator[bytes]:
    encryptor = Encryptor(data_key, aad)
    yield encryptor.header
    for chunk in chunks:
        yield from encryptor.update(chunk)
    yield encryptor.final()


def decrypt_stream(
    key_for: Callable[[int], bytes], chunks: Iterable[bytes], aad: bytes
) -> Iterator[bytes]:
    """The plaintext of a sealed stream; ``key_for`` maps the header's data key
    version to the key. CorruptArtifact as soon as a segment fails, never garbage."""
    it = iter(chunks)
    header, first = b"", memoryview(b"")
    for chunk in it:
        need = HEADER_SIZE - len(header)
        header += chunk[:need]
        if len(header) == HEADER_SIZE:
            first = memoryview(chunk)[need:]
            break
    decryptor = Decryptor(key_for(key_version(header)), header, aad)
    yield from decryptor.update(first)
    for chunk in it:
        yield from decryptor.update(chunk)
    if last := decryptor.final():
        yield last

"""The build backend of the fitact-onnx wheel: maturin's hooks, with the ``fitact-onnx`` binary
added to the wheel maturin builds.

maturin puts one Rust artifact in a wheel, here the extension module ``fitact_onnx._native``,
and cannot ship a binary beside it (PyO3/maturin#368). So ``build_wheel`` (and
``build_editable``) first builds the binary with cargo as maturin will build the module: the
same profile (``--profile`` in MATURIN_PEP517_ARGS or the ``maturin.build-args``
config setting, else ``[tool.maturin] profile``, else release), target, target directory
(``--target-dir``, else cargo's own: CARGO_TARGET_DIR or the workspace's ``target/``) and the
features cargo resolves for the module's crate (it is selected too, though only the binary is
built), so every dependency is compiled once for both and the binary costs its own crate and a
link. Then maturin builds the wheel, and the binary is added to it as
``<name>-<version>.data/scripts/fitact-onnx``, which pip installs into the environment's
``bin/`` (stripped when ``[tool.maturin] strip`` strips the module).

Why add it to the finished wheel rather than stage it in maturin's ``data`` folder: maturin
refuses a configured ``data`` folder that does not exist (so ``maturin develop`` on a fresh
checkout would fail), and its default one, ``fitact_onnx._native.data/`` in the source tree,
would be shared by concurrent builds of one checkout.

The other hooks are maturin's. ``maturin build`` or ``maturin develop`` run by hand build the
module only (``python -m fitact_onnx`` is then the command line).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from typing import Any, List, Mapping, Optional

import maturin
from maturin import (  # noqa: F401 (the hooks this backend keeps as maturin has them)
    build_sdist,
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    get_requires_for_build_wheel,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

BINARY = "fitact-onnx"
# The binary's package, and the module's: selecting both gives the dependencies the features
# maturin's build of the module resolves (the module depends on the binary's package).
PACKAGES = ["fitact-onnx", "fitact-onnx-python"]


def build_wheel(
    wheel_directory: str,
    config_settings: Optional[Mapping[str, Any]] = None,
    metadata_directory: Optional[str] = None,
) -> str:
    binary = _build_binary(config_settings, editable=False)
    name = maturin.build_wheel(wheel_directory, config_settings, metadata_directory)
    _add_script(os.path.join(wheel_directory, name), binary, _strips(config_settings))
    return name


def build_editable(
    wheel_directory: str,
    config_settings: Optional[Mapping[str, Any]] = None,
    metadata_directory: Optional[str] = None,
) -> str:
    binary = _build_binary(config_settings, editable=True)
    name = maturin.build_editable(wheel_directory, config_settings, metadata_directory)
    _add_script(os.path.join(wheel_directory, name), binary, _strips(config_settings))
    return name


def _option(args: List[str], *flags: str) -> Optional[str]:
    """The value of the last of ``flags`` in ``args`` (``--flag value`` or ``--flag=value``)."""
    value = None
    for i, arg in enumerate(args):
        for flag in flags:
            if arg == flag and i + 1 < len(args):
                value = args[i + 1]
            elif arg.startswith(flag + "="):
                value = arg[len(flag) + 1 :]
    return value


def _profile(args: List[str], config: Mapping[str, Any], editable: bool) -> str:
    """The Cargo profile maturin builds with, by its rules."""
    given = _option(args, "--profile")
    if given:
        return given
    if editable and config.get("editable-profile"):
        return str(config["editable-profile"])
    return str(config.get("profile") or "release")


def _build_binary(config_settings: Optional[Mapping[str, Any]], editable: bool) -> str:
    """Builds the binary as maturin will build the module; its path."""
    config = maturin.get_config()
    args = maturin.get_maturin_pep517_args(config_settings)
    manifest = _option(args, "--manifest-path", "-m") or config.get("manifest-path") or "Cargo.toml"
    command = ["cargo", "build", "--manifest-path", manifest, "--bin", BINARY]
    command += ["--profile", _profile(args, config, editable), "--message-format=json-render-diagnostics"]
    for package in PACKAGES:
        command += ["-p", package]
    for flags in (("--target",), ("--target-dir",), ("--jobs", "-j")):
        value = _option(args, *flags)
        if value:
            command += [flags[0], value]
    for flag in ("--locked", "--frozen", "--offline"):
        if flag in args or config.get(flag[2:]):
            command.append(flag)
    # maturin's environment: a Rust toolchain it installed, if cargo was not on PATH.
    env = maturin._get_env() if hasattr(maturin, "_get_env") else None
    print("Running `{}`".format(" ".join(command)), flush=True)
    done = subprocess.run(command, stdout=subprocess.PIPE, env=env, check=False)
    executables = []
    for line in done.stdout.decode(errors="replace").splitlines():
        message = json.loads(line) if line.startswith("{") else {}
        if message.get("reason") == "compiler-artifact" and message["target"]["name"] == BINARY:
            executables.append(message.get("executable"))
    if done.returncode != 0 or not executables or not executables[-1]:
        sys.stderr.write(f"Error: {' '.join(command)} exited with {done.returncode} and built no {BINARY}\n")
        sys.exit(1)
    return executables[-1]


def _strips(config_settings: Optional[Mapping[str, Any]]) -> bool:
    """Whether maturin strips the module (``--strip``, MATURIN_STRIP, ``[tool.maturin] strip``)."""
    args = maturin.get_maturin_pep517_args(config_settings)
    given = _option(args, "--strip")
    if given is not None:
        return given == "true"
    if "--strip" in args:
        return True
    if os.environ.get("MATURIN_STRIP"):
        return os.environ["MATURIN_STRIP"].lower() in ("1", "true")
    return bool(maturin.get_config().get("strip"))


def _add_script(wheel: str, binary: str, strip: bool) -> None:
    """Rewrites ``wheel`` with ``binary`` as its script ``<name>-<version>.data/scripts/BINARY``
    (executable, listed in RECORD with its hash and size)."""
    with tempfile.TemporaryDirectory() as scratch:
        if strip and shutil.which("strip"):
            stripped = os.path.join(scratch, BINARY)
            shutil.copyfile(binary, stripped)
            subprocess.run(["strip", stripped], check=True)
            binary = stripped
        with open(binary, "rb") as f:
            content = f.read()
        rewritten = os.path.join(scratch, os.path.basename(wheel))
        with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(rewritten, "w", zipfile.ZIP_DEFLATED) as target:
            record = next(i for i in source.infolist() if i.filename.endswith(".dist-info/RECORD"))
            script = record.filename.split("/")[0][: -len(".dist-info")] + f".data/scripts/{BINARY}"
            entry = zipfile.ZipInfo(script, date_time=record.date_time)
            entry.external_attr = (stat.S_IFREG | 0o755) << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            target.writestr(entry, content)
            for info in source.infolist():
                if info.filename not in (record.filename, script):
                    target.writestr(info, source.read(info))
            digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
            lines = [line for line in source.read(record).decode().splitlines() if not line.startswith(script + ",")]
            target.writestr(record, "\n".join([f"{script},sha256={digest},{len(content)}", *lines]) + "\n")
        shutil.move(rewritten, wheel)

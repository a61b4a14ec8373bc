"""``key=value`` options for commands that write no run folder (``tables``, ``aggregate``).

They take the same convention as every other command: Hydra's override grammar on their own config
(``conf/<name>.yaml``), composed without a Hydra run (no output folder, no log file), checked by the same
option schema (:func:`sparsecbm.options.check_options`); an unknown key (``data.root=...``) is Hydra's
"not in struct" error, exit code 2. The argparse spelling of earlier releases (positional paths,
``--out F``) is translated once, with a ``FutureWarning``.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Mapping, Sequence

from omegaconf import DictConfig

from sparsecbm.config import CONF_DIR, register_resolvers


def _quote(value: str) -> str:
    """A value for Hydra's grammar: quoted, so paths with spaces or commas stay one value."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def legacy_argv(argv: Sequence[str], positional: str, flags: Mapping[str, str], many: bool) -> list[str]:
    """Translate ``PATH ... --flag VALUE`` (the argparse form) to ``key=value`` overrides; ``key=value`` items
    pass unchanged. ``positional`` names the key of the bare paths (a list when ``many``); ``flags`` maps
    ``--out`` to ``out``."""
    from sparsecbm.errors import ConfigError

    out, paths, i, legacy = [], [], 0, False
    argv = list(argv)
    while i < len(argv):
        item = argv[i]
        if item in ("-h", "--help"):
            out.append(item)
        elif item.startswith("--"):
            name, _, value = item[2:].partition("=")
            if "--" + name not in flags:
                raise ConfigError(f"unknown option --{name}; options are key=value: "
                                  f"{positional}=..., " + ", ".join(f"{k}=..." for k in flags.values()))
            if not value:
                if i + 1 >= len(argv):
                    raise ConfigError(f"--{name} needs a value")
                value, i = argv[i + 1], i + 1
            out.append(f"{flags['--' + name]}={_quote(value)}")
            legacy = True
        elif "=" in item and not item.startswith(("/", ".")):
            out.append(item)
        else:
            paths.append(item)
            legacy = True
        i += 1
    if paths:
        out.append(f"{positional}=[{','.join(_quote(p) for p in paths)}]" if many else f"{positional}={_quote(paths[0])}")
    if legacy:
        warnings.warn("positional paths and --options are deprecated and will be removed in the next release; "
                      f"use key=value like every other command: {' '.join(out)}", FutureWarning, stacklevel=2)
    return out


def compose_options(config_name: str, argv: Sequence[str], usage: str) -> DictConfig:
    """The checked config of ``config_name`` with ``argv``'s overrides; ``--help`` / ``-h`` prints ``usage``."""
    from hydra import compose, initialize_config_dir

    from sparsecbm.options import check_options

    if any(a in ("-h", "--help") for a in argv):
        sys.stdout.write(usage.rstrip() + "\n")
        raise SystemExit(0)
    register_resolvers()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose(config_name, overrides=list(argv))
    check_options(config_name, cfg)
    return cfg

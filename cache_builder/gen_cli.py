"""``casdri-cache generate`` lives in `cache_builder.soundscapes.cli`; this name stays for
``python -m cache_builder.gen_cli``."""
import sys

from .soundscapes.cli import add_generate_parser, main, run_generate  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())

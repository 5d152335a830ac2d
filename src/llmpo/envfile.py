"""``.env`` files: variables such as API keys kept beside a project instead of in the shell.

The command line loads ``./.env`` before any command runs, so ``api_key_env: OPENAI_API_KEY``
finds a key written there as ``OPENAI_API_KEY=sk-...``. A variable already set in the
environment is never replaced, and no value is ever printed.
"""

from __future__ import annotations

import sys
from pathlib import Path


def load_env_file(path: Path) -> bool:
    """Set the variables of a dotenv file that the environment does not set yet.

    Parameters
    ----------
    path : Path
        The file (``KEY=value`` lines, ``#`` comments, ``export`` prefixes and quotes allowed, as
        python-dotenv reads them). A missing file is not an error.

    Returns
    -------
    bool
        Whether the file was read. An unreadable file is reported on standard error by its path
        and reason only, and skipped; lines python-dotenv cannot parse are named by number.
    """
    if not path.is_file():
        return False
    from dotenv import load_dotenv

    try:
        load_dotenv(path, override=False, interpolate=True)
    except (OSError, UnicodeDecodeError) as error:
        reason = "not UTF-8 text" if isinstance(error, UnicodeDecodeError) else error.strerror
        print(
            f"warning: {path}: not loaded ({reason}); its variables are not set. Fix: save it as "
            "UTF-8 text with one KEY=value per line",
            file=sys.stderr,
        )
        return False
    return True

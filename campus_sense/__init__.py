"""campus-sense: campus infrastructure monitoring (edge agents, collector, CLI)."""
__version__ = "0.1.0"


def configs_dir():
    """The ``firmware_configs/`` data folder (profiles, firmware records, policy, rules).

    ``$CAMPUS_SENSE_CONFIGS`` when set (installed images, see docker/Dockerfile), else the
    folder beside the packages in a source checkout, else the copy a pip install puts under
    ``<prefix>/share/campus-sense/firmware_configs`` (pyproject.toml data-files).
    """
    import os
    import sys
    from pathlib import Path
    env = os.environ.get("CAMPUS_SENSE_CONFIGS")
    if env:
        return Path(env)
    src = Path(__file__).resolve().parent.parent / "firmware_configs"
    if src.is_dir():
        return src
    for prefix in (sys.prefix, sys.base_prefix, "/usr/local", "/usr"):
        p = Path(prefix) / "share" / "campus-sense" / "firmware_configs"
        if p.is_dir():
            return p
    return src

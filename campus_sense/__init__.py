"""campus-sense: campus infrastructure monitoring (edge agents, collector, CLI)."""
__version__ = "0.1.0"


def configs_dir():
    """The ``firmware_configs/`` data folder (profiles, firmware records, policy, rules).

    ``$CAMPUS_SENSE_CONFIGS`` when set (installed images, see docker/Dockerfile), else the
    folder beside the packages in a source checkout.
    """
    import os
    from pathlib import Path
    env = os.environ.get("CAMPUS_SENSE_CONFIGS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "firmware_configs"

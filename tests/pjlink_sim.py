"""Moved to campus_sense/sim/pjlink.py (the demo ships it); kept for the tests' imports."""
from campus_sense.sim.pjlink import *  # noqa: F401,F403
from campus_sense.sim.pjlink import PJLinkSim, ProjectorState  # noqa: F401

"""Moved to campus_sense/sim/onvif.py (the demo ships it); kept for the tests' imports."""
from campus_sense.sim.onvif import *  # noqa: F401,F403
from campus_sense.sim.onvif import NS, OnvifSim, password_digest  # noqa: F401

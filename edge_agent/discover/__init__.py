"""`campus-sense discover`: find the devices of a building and propose its configuration.

    campus-sense discover 10.20.0.0/24 10.20.1.0/26 --credentials creds.yaml --output /etc/campus-sense/agent.yaml

* Scope: only the addresses of the CIDRs given (network and broadcast addresses of IPv4 nets
  larger than /31 excluded). Nothing outside them is ever contacted: not an LLDP/CDP neighbour, not an
  ONVIF XAddr, not a multicast responder (their answers are dropped). Multicast WS-Discovery
  is only sent when a CIDR is not loopback (``--no-multicast`` never).
* Rate: at most ``--rate`` probe packets/connection attempts per second (token bucket) and
  ``--concurrency`` hosts at once.
* Protocols per address: SNMP GET of the system group (each v2c community, then each v3 user,
  first answer wins), ONVIF WS-Discovery (directed UDP Probe to port 3702, WS-Discovery 2005/04
  as ONVIF Core specifies), PJLink (TCP 4352 greeting + class 1 queries), Modbus TCP (502, only
  with ``--modbus``: Read Device Identification).
* LLDP/CDP: switches found by SNMP are asked for their LLDP neighbours (lldpRemTable, management
  addresses from lldpRemManAddrTable) and their CDP neighbours (CISCO-CDP-MIB cdpCacheTable,
  cdpCacheAddress); a neighbour both report on the same port counts once. Neighbours inside the
  CIDRs are probed next (``via: lldp`` / ``via: cdp``); those outside are listed, never contacted.
* Classification (switch, router, firewall, Wi-Fi controller, AP, camera, projector, sensor, server):
  ``classify.py``.
* Output (``propose.py``): agent.yaml = the base file's sections (``--base``, default the
  ``--output`` file when it exists, e.g. the one `agent enrol` installed) + the devices already
  there + one device per new find, credentials referenced (never inlined: a community given on
  the command line goes to a 0600 file next to agent.yaml); and a campus-model fragment
  (``--campus-output``, default ``campus.discovered.yaml`` beside the output) with what the agent
  cannot declare: rooms (from sysLocation / ONVIF location scopes, type to be set), switch
  roles, and uplink ports from LLDP/CDP.
"""

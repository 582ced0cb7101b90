"""The resident companion put together: engine, pool, watched folder, OSC server and, when asked, the
live rig, built from settings (``resident``), and the adapter that turns OSC commands into engine
requests and engine events into OSC replies (``osc_bridge``), the OSCQuery HTTP server beside the OSC
port (``oscquery``) and its mDNS advertisement (``mdns``, with the optional ``zeroconf`` package, imported
only when advertising). It may import every other part of
``companion`` but ``cli``, and ``osc_protocol``."""
